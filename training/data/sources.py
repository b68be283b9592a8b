"""A config's dataset, from whichever source holds it: `load` (and `from_config`) return the
uint8 train/validation/test arrays in host memory, with the config's class subset and caps."""

from __future__ import annotations

from typing import TYPE_CHECKING

from training.data import cache, folder as folder_source, tfds_source
from training.data.dataset import Dataset, cap, parse_classes, select

if TYPE_CHECKING:  # a config's type only: examples/ import this package without ml_collections
  import ml_collections


def check_options(name: str, classes: str, folder: dict | None = None) -> None:
  """What can be checked of the data options before anything is read (the run's config check)."""
  parse_classes(classes)
  if name.startswith(folder_source.PREFIX):
    folder_source.check(name[len(folder_source.PREFIX):], **(folder or {}))


def load(name: str = "mnist", *, data_dir: str | None = None, cache_dir: str | None = None,
         validation_fraction: float = 0.1, split_seed: int = 0, max_train_examples: int = 0,
         max_eval_examples: int = 0, classes: str = "", max_per_class: int = 0,
         folder: dict | None = None) -> Dataset:
  """Loads `name` (a tfds dataset, or "folder:/path": see folder.py) into host memory as uint8
  arrays; keeps `classes` and at most `max_per_class` training examples of each (`select`),
  then applies the max_*_examples caps.

  `cache_dir`: None means the default cache, "none" or "" disables it. `folder`: the
  config's folder options (image_size, channels, test_fraction).
  """
  check_options(name, classes, folder)
  cache_dir = cache.resolve_dir(cache_dir)
  if name.startswith(folder_source.PREFIX):
    ds = folder_source.load(name[len(folder_source.PREFIX):], cache_dir=cache_dir,
                            validation_fraction=validation_fraction, split_seed=split_seed,
                            **(folder or {}))
  else:
    ds = tfds_source.load(name, tfds_source.resolve_data_dir(data_dir), cache_dir,
                          validation_fraction, split_seed)
  ds = select(ds, classes, max_per_class, split_seed)
  return cap(ds, max_train_examples, max_eval_examples)


def from_config(config: ml_collections.ConfigDict) -> Dataset:
  """The dataset of a run's config (or of one saved with a checkpoint)."""
  return load(config.dataset, data_dir=config.data_dir, cache_dir=config.cache_dir,
              validation_fraction=config.validation_fraction, split_seed=config.split_seed,
              max_train_examples=config.max_train_examples,
              max_eval_examples=config.max_eval_examples,
              # .get: configs saved in checkpoints before these fields existed lack them
              classes=config.get("classes", ""), max_per_class=config.get("max_per_class", 0),
              folder=config.folder.to_dict() if "folder" in config else None)
