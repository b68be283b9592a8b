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

from training.errors import ConfigError, DataCorruptError, DataNotFoundError

DEFAULT_CACHE_DIR = os.path.join("~", ".cache", "mnist_flax", "datasets")


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
  write_npz(path, images=images, labels=labels, fingerprint=np.asarray(fingerprint))


def write_npz(path: str, **arrays: np.ndarray) -> None:
  """Writes then renames, so a killed process never leaves a truncated cache behind. A cache that
  cannot be written costs the next start a decode, not this run: it is a warning."""
  tmp = None
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp.npz")
    with os.fdopen(fd, "wb") as f:
      np.savez(f, **arrays)
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


FOLDER_PREFIX = "folder:"  # --config.dataset=folder:/path reads a directory of images


def check_options(name: str, classes: str, folder: dict | None = None) -> None:
  """What can be checked of the data options before anything is read (builders.validate)."""
  parse_classes(classes)
  if name.startswith(FOLDER_PREFIX):
    from training import folder as folder_lib  # only folder runs need Pillow's decoders
    folder_lib.check(name[len(FOLDER_PREFIX):], **(folder or {}))


def _resolve_cache_dir(cache_dir: str | None) -> str:
  """None means the default cache; "none" or "" disables it."""
  if cache_dir is None:
    cache_dir = DEFAULT_CACHE_DIR
  return "" if cache_dir.lower() == "none" else cache_dir


def load(name: str = "mnist", *, data_dir: str | None = None, cache_dir: str | None = None,
         validation_fraction: float = 0.1, split_seed: int = 0, max_train_examples: int = 0,
         max_eval_examples: int = 0, classes: str = "", max_per_class: int = 0,
         folder: dict | None = None) -> Dataset:
  """Loads `name` (a tfds dataset, or "folder:/path": see training/folder.py) into host memory as
  uint8 arrays; keeps `classes` and at most `max_per_class` training examples of each (`select`),
  then applies the max_*_examples caps.

  `cache_dir`: None means the default cache, "none" or "" disables it. `folder`: the
  config's folder options (image_size, channels, test_fraction).
  """
  check_options(name, classes, folder)
  cache_dir = _resolve_cache_dir(cache_dir)
  if name.startswith(FOLDER_PREFIX):
    from training import folder as folder_lib
    ds = folder_lib.load(name[len(FOLDER_PREFIX):], cache_dir=cache_dir,
                         validation_fraction=validation_fraction, split_seed=split_seed,
                         **(folder or {}))
  else:
    ds = _load_tfds(name, resolve_data_dir(data_dir), cache_dir, validation_fraction, split_seed)
  ds = select(ds, classes, max_per_class, split_seed)
  return _cap(ds, max_train_examples, max_eval_examples)


def _load_tfds(name: str, data_dir: str, cache_dir: str, validation_fraction: float,
               split_seed: int) -> Dataset:
  builder = _builder(name, data_dir)
  features = builder.info.features
  if "image" not in features or "label" not in features:
    raise ConfigError(f"Dataset {name!r} has features {list(features)}; an image classification "
                     "dataset with 'image' and 'label' features is needed.")

  images, labels = load_split(builder, "train", cache_dir, data_dir)
  train_idx, val_idx = carve_validation(len(labels), validation_fraction, split_seed)
  train = Split(images[train_idx], labels[train_idx], train_idx)
  validation = Split(images[val_idx], labels[val_idx], val_idx) if len(val_idx) else None
  test_images, test_labels = load_split(builder, "test", cache_dir, data_dir)
  test = Split(test_images, test_labels, np.arange(len(test_labels)))

  label = features["label"]
  image_shape = tuple(features["image"].shape)
  if None in image_shape or tuple(train.images.shape[1:]) != image_shape:
    raise ConfigError(f"Dataset {name!r} has images of shape {image_shape} (tfds info), "
                      f"decoded as {train.images.shape[1:]}; a fixed image size is needed.")
  return Dataset(name=name, train=train, validation=validation, test=test,
                 num_classes=label.num_classes, class_names=list(label.names),
                 image_shape=image_shape)


def _head(split: Split | None, n: int) -> Split | None:
  """The first `n` examples of `split` (all when n is 0)."""
  if split is None or not n:
    return split
  return Split(split.images[:n], split.labels[:n], split.indices[:n])


def _cap(ds: Dataset, max_train_examples: int, max_eval_examples: int) -> Dataset:
  """The quick-run caps: the first examples of each split (in their sorted order)."""
  return dataclasses.replace(ds, train=_head(ds.train, max_train_examples),
                             validation=_head(ds.validation, max_eval_examples),
                             test=_head(ds.test, max_eval_examples))


def parse_classes(classes: str) -> list[str]:
  """The comma-separated entries of --config.classes, checked for empty and repeated ones."""
  if not classes.strip():
    return []
  entries = [c.strip() for c in classes.split(",")]
  if "" in entries:
    raise ConfigError(f"classes={classes!r} has an empty entry; give comma-separated class "
                      "names or indices, e.g. --config.classes=0,1,2.")
  repeated = sorted({c for c in entries if entries.count(c) > 1})
  if repeated:
    raise ConfigError(f"classes={classes!r} names {', '.join(repeated)} more than once; give "
                      "each class once.")
  if len(entries) < 2:
    raise ConfigError(f"classes={classes!r} keeps a single class, and a classifier needs at "
                      "least two; give two or more, or \"\" for all.")
  return entries


def class_indices(classes: str, class_names: Sequence[str], dataset: str) -> list[int]:
  """The dataset's indices of the entries of `classes`: a class name, else an index."""
  names = [str(n) for n in class_names]
  indices = []
  for entry in parse_classes(classes):
    if entry in names:
      indices.append(names.index(entry))
    elif entry.isdigit() and int(entry) < len(names):
      indices.append(int(entry))
    else:
      raise ConfigError(f"Unknown class {entry!r} in --config.classes; {dataset} has the classes "
                        f"{', '.join(names)} (names, or indices 0-{len(names) - 1}).")
  if len(set(indices)) < len(indices):
    raise ConfigError(f"classes={classes!r} names the same class twice (by name and by index).")
  return indices


def _keep(split: Split | None, mapping: np.ndarray) -> Split | None:
  """The examples of `split` whose class is kept, relabelled by `mapping` (old -> new, -1: drop)."""
  if split is None:
    return None
  mask = mapping[split.labels] >= 0
  return Split(split.images[mask], mapping[split.labels[mask]].astype(np.int32),
               split.indices[mask])


def per_class_positions(split: Split, n: int, seed: int) -> np.ndarray:
  """Sorted positions of at most `n` examples of each class of `split`. Each example's rank is a
  seeded random key of its index in the source split, so the choice depends only on the seed and
  `n` (not on the other classes), and the choice for n + 1 contains the one for n."""
  if not len(split):
    return np.zeros((0,), np.int64)
  keys = np.random.default_rng([seed, 1]).random(int(split.indices.max()) + 1)[split.indices]
  chosen = []
  for c in np.unique(split.labels):
    members = np.flatnonzero(split.labels == c)
    chosen.append(members[np.argsort(keys[members], kind="stable")[:n]])
  return np.sort(np.concatenate(chosen))


def select(ds: Dataset, classes: str = "", max_per_class: int = 0, seed: int = 0) -> Dataset:
  """`ds` with only `classes` (names or indices, comma-separated; "" = all), relabelled 0..k-1 in
  the order given, in every split; and at most `max_per_class` training examples of each class
  (0 = all), chosen reproducibly from `seed` (validation and test are left whole)."""
  if classes.strip():
    indices = class_indices(classes, ds.class_names, ds.name)
    mapping = np.full(ds.num_classes, -1, np.int64)
    mapping[indices] = np.arange(len(indices))
    validation = _keep(ds.validation, mapping)
    ds = dataclasses.replace(
        ds, train=_keep(ds.train, mapping), test=_keep(ds.test, mapping),
        validation=validation if validation is not None and len(validation) else None,
        num_classes=len(indices), class_names=[ds.class_names[i] for i in indices])
  if max_per_class:
    keep = per_class_positions(ds.train, max_per_class, seed)
    ds = dataclasses.replace(ds, train=Split(ds.train.images[keep], ds.train.labels[keep],
                                             ds.train.indices[keep]))
  return ds
