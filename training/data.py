"""Input data: tfds array_record splits -> cached uint8 arrays -> train/validation/test.

Reads the prepared data with `tfds` data sources (no TensorFlow). Decoding the PNGs takes seconds,
so the decoded arrays are cached as .npz files, one per dataset split, and later starts load them
in well under a second. Each holds a digest of the files it came from, and is decoded again and
overwritten when their content changes, so re-prepared data never piles up copies.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import tempfile
import zipfile
from typing import Sequence

import numpy as np

from training import runtime
from training.errors import ConfigError, DataCorruptError, DataNotFoundError

DEFAULT_CACHE_DIR = os.path.join("~", ".cache", "mnist_flax", "datasets")

# tfds recommends OpenCV for faster PNG decoding on every uncached load, though the images are
# decoded once and then cached; and it warns of a missing dataset_info.json (in a version folder
# that may not exist) above our own error, which says what is missing and how to get it.
runtime.drop_library_warnings("OpenCV is not installed", "has no dataset_info.json")


@dataclasses.dataclass(frozen=True)
class Split:
  images: np.ndarray  # uint8, (N, H, W, C)
  labels: np.ndarray  # int32, (N,)
  indices: np.ndarray  # int64, (N,): positions in the tfds split they came from

  def __len__(self) -> int:
    return len(self.labels)


@dataclasses.dataclass(frozen=True)
class Dataset:
  name: str
  train: Split
  validation: Split | None
  test: Split
  num_classes: int
  class_names: Sequence[str]

  image_shape: tuple[int, ...]  # (H, W, C), from the tfds dataset info

  def info(self) -> dict[str, object]:
    """What inference needs to know of the data; saved with every checkpoint."""
    return {"name": self.name, "image_shape": list(self.image_shape),
            "num_classes": self.num_classes, "class_names": list(self.class_names)}


def resolve_data_dir(data_dir: str | None) -> str:
  if data_dir:
    return os.path.expanduser(data_dir)
  if os.environ.get("TFDS_DATA_DIR"):
    return os.path.expanduser(os.environ["TFDS_DATA_DIR"])
  return os.path.expanduser(os.path.join("~", "tensorflow_datasets"))


def _missing_data_error(name: str, data_dir: str) -> DataNotFoundError:
  return DataNotFoundError(
      f"Dataset {name!r} is not prepared in {data_dir!r} (looked for "
      f"{os.path.join(data_dir, name)}/<version>/ with array_record files).\nTo fix it, either:\n"
      f"  * point to prepared data: --config.data_dir=/path/to/tensorflow_datasets or "
      f"export TFDS_DATA_DIR=/path/to/tensorflow_datasets (the folder that holds {name}/), or\n"
      f"  * prepare it once (needs network and TensorFlow, which training itself never imports):\n"
      f"      pip install tensorflow-cpu && tfds build {name} --file_format=array_record "
      f"--data_dir={data_dir}")


def _split_files(builder, split: str) -> list[str]:
  try:
    return sorted(os.path.join(builder.data_dir, f) for f in os.listdir(builder.data_dir)
                  if f.startswith(f"{builder.name}-{split}."))
  except OSError:
    return []


def _damaged_data_error(builder, split: str, data_dir: str, e: BaseException) -> DataCorruptError:
  """Names the split's file(s) and how to prepare them again."""
  files = _split_files(builder, split)
  what = (files[0] if len(files) == 1 else f"one of {', '.join(files)}" if files else
          f"the {split} split in {builder.data_dir}")
  reason = (str(e).splitlines() or [""])[0][:300] or type(e).__name__
  return DataCorruptError(
      f"The prepared {builder.name!r} data cannot be read: {what} is damaged or incomplete "
      f"({reason}).\nPrepare it again (needs network and TensorFlow, which training itself never "
      f"imports): pip install tensorflow-cpu && tfds build {builder.name} "
      f"--file_format=array_record --data_dir={data_dir} --overwrite\nor copy an intact "
      f"prepared {builder.name}/ folder into {data_dir}.")


def _builder(name: str, data_dir: str):
  import tensorflow_datasets as tfds  # imported lazily: it takes a while and plain runs use the cache
  try:
    return tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise ConfigError(f"Unknown tfds dataset {name!r}: set --config.dataset to a tfds image "
                     "classification dataset such as mnist, fashion_mnist or kmnist.") from e


def _fingerprint(builder, split: str) -> str:
  """A digest of the split's prepared files (and the dataset's json metadata), so the cache is
  rebuilt when their content changes. File times are left out: copies and re-provisioned
  datasets get new ones, and decoding again costs seconds where hashing costs ~20 ms."""
  h = hashlib.sha256(f"{builder.info.full_name}|{split}".encode())
  if os.path.isdir(builder.data_dir):
    names = sorted(f for f in os.listdir(builder.data_dir)
                   if os.path.isfile(os.path.join(builder.data_dir, f)))
    # tfds names a split's files "<dataset>-<split>.<format>-<shard>-of-<n>"; under any other
    # naming, hash every file rather than miss a change.
    records = [f for f in names if f.startswith(f"{builder.name}-{split}.")]
    for f in (records + [f for f in names if f.endswith(".json")]) if records else names:
      h.update(f"|{f}|".encode())
      with open(os.path.join(builder.data_dir, f), "rb") as fh:
        while chunk := fh.read(1 << 20):
          h.update(chunk)
  return h.hexdigest()[:16]


def _decode(source) -> tuple[np.ndarray, np.ndarray]:
  n = len(source)
  images, labels = [], []
  for start in range(0, n, 5000):
    keys = list(range(start, min(start + 5000, n)))
    try:
      records = source.__getitems__(keys)  # batched reads are ~3x faster than one by one
    except TypeError:  # tfds.testing.mock_data's source lacks the batched read
      records = [source[k] for k in keys]
    images.extend(r["image"] for r in records)
    labels.extend(r["label"] for r in records)
  return np.stack(images).astype(np.uint8), np.asarray(labels, np.int32)


def load_split(builder, split: str, cache_dir: str, data_dir: str) -> tuple[np.ndarray, np.ndarray]:
  """Decoded (images, labels) of one tfds split, through the on-disk cache when enabled."""
  path = None
  if cache_dir:
    # One file per split wherever the data lies: a copy elsewhere is the same data.
    path = os.path.join(os.path.expanduser(cache_dir),
                        f"{builder.info.full_name.replace('/', '-')}-{split}.npz")
    fingerprint = _fingerprint(builder, split)
    if os.path.exists(path):
      try:
        with np.load(path) as f:
          if str(f["fingerprint"]) == fingerprint:
            return f["images"], f["labels"]
      except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        pass  # corrupt or partial cache file: decode again and overwrite it
  try:
    source = builder.as_data_source(split=split)
  except Exception as e:  # tfds raises several types (NotImplementedError, AssertionError, ...)
    if not builder.is_prepared():  # tfds' own message is then about another file format
      raise _missing_data_error(builder.name, data_dir) from e
    # array_record's reader fails on a damaged file with a RuntimeError (tfds' NotImplementedError,
    # a RuntimeError too, is about the file format).
    if (isinstance(e, (OSError, RuntimeError)) and not isinstance(e, NotImplementedError)
        and _split_files(builder, split)):
      raise _damaged_data_error(builder, split, data_dir, e) from e
    raise DataNotFoundError(
        f"Dataset {builder.name!r} in {builder.data_dir} cannot be read without TensorFlow (tfds "
        f"said: {e}).\nIt must be prepared in the array_record format: tfds build "
        f"{builder.name} --file_format=array_record --data_dir=<another folder>") from e
  try:
    images, labels = _decode(source)
  except (RuntimeError, OSError, ValueError) as e:
    # array_record (riegeli) raises RuntimeError for a damaged, truncated or missing file;
    # decoding a damaged image raises the others.
    raise _damaged_data_error(builder, split, data_dir, e) from e
  if path:
    _write_cache(path, images, labels, fingerprint)
  return images, labels


def _write_cache(path: str, images: np.ndarray, labels: np.ndarray, fingerprint: str) -> None:
  """Writes then renames, so a killed process never leaves a truncated cache behind. A cache that
  cannot be written costs the next start a decode, not this run: it is a warning."""
  tmp = None
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp.npz")
    with os.fdopen(fd, "wb") as f:
      np.savez(f, images=images, labels=labels, fingerprint=np.asarray(fingerprint))
    os.replace(tmp, path)
  except OSError as e:
    logging.warning("Could not write the decoded-data cache %s (%s); later runs will decode the "
                    "data again. Set --config.cache_dir to a writable directory, or to none.",
                    path, e.strerror or e)
    if tmp and os.path.exists(tmp):
      os.remove(tmp)


def carve_validation(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Disjoint (train, validation) index arrays: a seeded random `fraction` of range(n)."""
  if not 0.0 <= fraction < 1.0:
    raise ConfigError(f"validation_fraction must be in [0, 1), got {fraction}.")
  perm = np.random.default_rng(seed).permutation(n)
  n_val = int(round(n * fraction))
  return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def load(name: str = "mnist", *, data_dir: str | None = None, cache_dir: str | None = None,
         validation_fraction: float = 0.1, split_seed: int = 0, max_train_examples: int = 0,
         max_eval_examples: int = 0) -> Dataset:
  """Loads `name` from tfds into host memory as uint8 arrays.

  `cache_dir`: None means the default cache, "none" or "" disables it.
  """
  data_dir = resolve_data_dir(data_dir)
  if cache_dir is None:
    cache_dir = DEFAULT_CACHE_DIR
  if cache_dir.lower() == "none":
    cache_dir = ""
  builder = _builder(name, data_dir)
  features = builder.info.features
  if "image" not in features or "label" not in features:
    raise ConfigError(f"Dataset {name!r} has features {list(features)}; an image classification "
                     "dataset with 'image' and 'label' features is needed.")

  images, labels = load_split(builder, "train", cache_dir, data_dir)
  train_idx, val_idx = carve_validation(len(labels), validation_fraction, split_seed)
  if max_train_examples:
    train_idx = train_idx[:max_train_examples]
  if max_eval_examples:
    val_idx = val_idx[:max_eval_examples]
  train = Split(images[train_idx], labels[train_idx], train_idx)
  validation = Split(images[val_idx], labels[val_idx], val_idx) if len(val_idx) else None

  test_images, test_labels = load_split(builder, "test", cache_dir, data_dir)
  test_idx = np.arange(len(test_labels))
  if max_eval_examples:
    test_idx = test_idx[:max_eval_examples]
  test = Split(test_images[test_idx], test_labels[test_idx], test_idx)

  label = features["label"]
  image_shape = tuple(features["image"].shape)
  if None in image_shape or tuple(train.images.shape[1:]) != image_shape:
    raise ConfigError(f"Dataset {name!r} has images of shape {image_shape} (tfds info), "
                      f"decoded as {train.images.shape[1:]}; a fixed image size is needed.")
  return Dataset(name=name, train=train, validation=validation, test=test,
                 num_classes=label.num_classes, class_names=list(label.names),
                 image_shape=image_shape)
