"""tensorflow-datasets' prepared data (array_record files), read with tfds data sources: no
TensorFlow. Decoding the PNGs takes seconds, so the decoded arrays are cached (`cache`), one file
per split, keyed by a digest of the prepared files: re-prepared data is decoded again and
overwrites its cache file, so copies never pile up."""

from __future__ import annotations

import hashlib
import os

import numpy as np

from training.data import cache
from training.data.dataset import Dataset, from_arrays
from training.errors import ConfigError, DataCorruptError, DataNotFoundError


def resolve_data_dir(data_dir: str | None) -> str:
  if data_dir:
    return os.path.expanduser(data_dir)
  if os.environ.get("TFDS_DATA_DIR"):
    return os.path.expanduser(os.environ["TFDS_DATA_DIR"])
  return os.path.expanduser(os.path.join("~", "tensorflow_datasets"))


def is_prepared(name: str, data_dir: str) -> bool:
  """Whether `data_dir` holds a prepared version of `name` (a folder with its dataset_info.json:
  `<name>/<version>/`, or `<name>/<config>/<version>/` for a dataset with configs), found without
  importing tfds. A version or config in `name` ("mnist:3.0.1", "emnist/digits") is looked for
  under the dataset's folder as well."""
  root = os.path.join(data_dir, name.split(":")[0].split("/")[0])
  try:
    for entry in os.scandir(root):
      if entry.is_dir() and (os.path.isfile(os.path.join(entry.path, "dataset_info.json"))
                             or any(os.path.isfile(os.path.join(sub.path, "dataset_info.json"))
                                    for sub in os.scandir(entry.path) if sub.is_dir())):
        return True
  except OSError:
    pass
  return False


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
      f"({reason}).\n{_prepare_again(builder.name, data_dir)}")


def _prepare_again(name: str, data_dir: str) -> str:
  return (f"Prepare it again (needs network and TensorFlow, which training itself never "
          f"imports): pip install tensorflow-cpu && tfds build {name} "
          f"--file_format=array_record --data_dir={data_dir} --overwrite\nor copy an intact "
          f"prepared {name}/ folder into {data_dir}.")


def _builder(name: str, data_dir: str):
  import tensorflow_datasets as tfds  # imported lazily: it takes a while and plain runs use the cache
  unknown = tfds.core.registered.DatasetNotFoundError
  if not is_prepared(name, data_dir):
    # tfds' builder would look the dataset up online and leave an empty temporary folder behind
    # for each call; whether the name exists is all there is to say before the missing data.
    try:
      tfds.builder_cls(name.split(":")[0].split("/")[0])
    except unknown as e:
      raise _unknown_dataset(name) from e
    raise _missing_data_error(name, data_dir)
  try:
    return tfds.builder(name, data_dir=data_dir)
  except unknown as e:
    raise _unknown_dataset(name) from e
  except Exception as e:  # tfds reads the prepared metadata here (a protobuf ParseError, ...)
    reason = (str(e).splitlines() or [""])[0][:300] or type(e).__name__
    raise DataCorruptError(
        f"The prepared {name!r} data in {data_dir} cannot be read: its metadata "
        f"(dataset_info.json) is damaged ({reason}).\n{_prepare_again(name, data_dir)}") from e


def _unknown_dataset(name: str) -> ConfigError:
  return ConfigError(f"Unknown tfds dataset {name!r}: set --config.dataset to a tfds image "
                     "classification dataset such as mnist, fashion_mnist or kmnist.")


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
  path = fingerprint = None
  if cache_dir:
    # One file per split wherever the data lies: a copy elsewhere is the same data.
    path = os.path.join(cache_dir, f"{builder.info.full_name.replace('/', '-')}-{split}.npz")
    fingerprint = _fingerprint(builder, split)
    if (cached := cache.read(path, fingerprint)) is not None:
      return cached["images"], cached["labels"]
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
    cache.write(path, fingerprint, images=images, labels=labels)
  return images, labels


def load(name: str, data_dir: str, cache_dir: str, validation_fraction: float,
         split_seed: int) -> Dataset:
  """The tfds dataset `name` prepared in `data_dir`, with `validation_fraction` of its train
  split carved out (seeded by `split_seed`)."""
  builder = _builder(name, data_dir)
  features = builder.info.features
  if "image" not in features or "label" not in features:
    raise ConfigError(f"Dataset {name!r} has features {list(features)}; an image classification "
                     "dataset with 'image' and 'label' features is needed.")

  train = load_split(builder, "train", cache_dir, data_dir)
  test = load_split(builder, "test", cache_dir, data_dir)
  label = features["label"]
  image_shape = tuple(features["image"].shape)
  if None in image_shape or tuple(train[0].shape[1:]) != image_shape:
    raise ConfigError(f"Dataset {name!r} has images of shape {image_shape} (tfds info), "
                      f"decoded as {train[0].shape[1:]}; a fixed image size is needed.")
  names = list(label.names) if label.names else [str(i) for i in range(label.num_classes)]
  return from_arrays(name, train, test, class_names=names, image_shape=image_shape,
                     validation_fraction=validation_fraction, split_seed=split_seed,
                     order=f"tfds's order of {builder.info.full_name} (not the original files')")
