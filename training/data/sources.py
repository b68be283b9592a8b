"""A config's dataset, from whichever source holds it: `load` (and `from_config`) return the
uint8 train/validation/test arrays in host memory, with the config's class subset and caps.

The one place that picks the source (docs/data.md#where-the-data-comes-from): `folder:/path` is
an image folder; MNIST, Fashion-MNIST and KMNIST come from prepared tfds data when there is some,
else from their IDX files in the data directory, else from a download into it; any other name is
a prepared tfds dataset.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from training.data import cache, download, folder as folder_source, idx, tfds_source
from training.data.dataset import Dataset, cap, parse_classes, select

if TYPE_CHECKING:  # a config's type only: examples/ import this package without ml_collections
  import ml_collections


def check_options(name: str, classes: str, folder: dict | None = None,
                  data_url: str | None = None) -> None:
  """What can be checked of the data options before anything is read (the run's config check)."""
  parse_classes(classes)
  if name.startswith(folder_source.PREFIX):
    folder_source.check(name[len(folder_source.PREFIX):], **(folder or {}))
  if data_url:
    download.check_url(data_url)


def idx_files(name: str, data_dir: str | None, data_url: str | None) -> dict[str, str] | None:
  """{role: path} of `name`'s IDX files (downloaded first if the data directory lacks them), or
  None when prepared tfds data is there to use instead."""
  if tfds_source.is_prepared(name, tfds_source.resolve_data_dir(data_dir)):
    return None
  dirs = idx.candidate_dirs(name, data_dir)
  return idx.locate(dirs) or download.fetch(name, dirs[0], data_url)


def _load_source(name: str, data_dir: str | None, data_url: str | None, cache_dir: str,
                 validation_fraction: float, split_seed: int, folder: dict | None
                 ) -> Dataset:
  if name.startswith(folder_source.PREFIX):
    return folder_source.load(name[len(folder_source.PREFIX):], cache_dir=cache_dir,
                              validation_fraction=validation_fraction, split_seed=split_seed,
                              **(folder or {}))
  if name in idx.DATASETS and (paths := idx_files(name, data_dir, data_url)) is not None:
    return idx.load(name, paths, cache_dir, validation_fraction, split_seed)
  return tfds_source.load(name, tfds_source.resolve_data_dir(data_dir), cache_dir,
                          validation_fraction, split_seed)


def load(name: str = "mnist", *, data_dir: str | None = None, cache_dir: str | None = None,
         validation_fraction: float = 0.1, split_seed: int = 0, max_train_examples: int = 0,
         max_eval_examples: int = 0, classes: str = "", max_per_class: int = 0,
         folder: dict | None = None, data_url: str | None = None) -> Dataset:
  """Loads `name` (mnist, fashion_mnist, kmnist or another tfds dataset, or "folder:/path": see
  folder.py) into host memory as uint8 arrays; keeps `classes` and at most `max_per_class`
  training examples of each (`select`), then applies the max_*_examples caps.

  `data_dir`: where the data is (prepared tfds data, or IDX files in it or its <name>/ folder);
  unset: $TFDS_DATA_DIR or ~/tensorflow_datasets for tfds, ~/.cache/mnist_flax/data/<name>/ for
  IDX files. `data_url`: the base URL to download missing IDX files from (unset: the dataset's
  mirrors). `cache_dir`: None means the default cache, "none" or "" disables it.
  `folder`: the config's folder options (image_size, channels, test_fraction).
  """
  check_options(name, classes, folder, data_url)
  ds = _load_source(name, data_dir, data_url, cache.resolve_dir(cache_dir), validation_fraction,
                    split_seed, folder)
  where = (f"the folder {name[len(folder_source.PREFIX):]}"
           if name.startswith(folder_source.PREFIX) else name)
  ds = select(ds, classes, max_per_class, split_seed, where=where)
  return cap(ds, max_train_examples, max_eval_examples)


def from_config(config: ml_collections.ConfigDict) -> Dataset:
  """The dataset of a run's config (or of one saved with a checkpoint)."""
  return load(config.dataset, data_dir=config.data_dir, cache_dir=config.cache_dir,
              validation_fraction=config.validation_fraction, split_seed=config.split_seed,
              max_train_examples=config.max_train_examples,
              max_eval_examples=config.max_eval_examples,
              # .get: configs saved in checkpoints before these fields existed lack them
              classes=config.get("classes", ""), max_per_class=config.get("max_per_class", 0),
              folder=config.folder.to_dict() if "folder" in config else None,
              data_url=config.get("data_url"))


def with_flags(e: Exception, flags: dict[str, str]) -> Exception:
  """`e` (a data error) with the --config options it suggests renamed to a mode's own flags,
  e.g. {"--config.data_dir": "--data_dir"} for --mode=evaluate."""
  text = str(e)
  for option, flag in flags.items():
    text = text.replace(option, flag)
  return type(e)(text)
