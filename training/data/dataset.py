"""The Dataset every source produces (uint8 arrays of train, validation and test), and what is
done to one whatever its source: the validation carve, class subsets, per-class and quick-run
caps."""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from training.console import note
from training.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Split:
  images: np.ndarray  # uint8, (N, H, W, C)
  labels: np.ndarray  # int32, (N,)
  indices: np.ndarray  # int64, (N,): positions in the source's split they came from

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

  image_shape: tuple[int, ...]  # (H, W, C)
  # What `Split.indices` count, for a person to look an example up, e.g. "position in the file
  # t10k-images-idx3-ubyte" (the report names its mistakes' indices with it).
  order: str = ""
  # The file of each test index (test_files[i] is index i's), for a person to open a mistake;
  # empty for sources that are not one file per image.
  test_files: Sequence[str] = ()

  def info(self) -> dict[str, object]:
    """What inference needs to know of the data; saved with every checkpoint."""
    return {"name": self.name, "image_shape": list(self.image_shape),
            "num_classes": self.num_classes, "class_names": list(self.class_names)}


def carve_validation(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Disjoint (train, validation) index arrays: a seeded random `fraction` of range(n)."""
  if not 0.0 <= fraction < 1.0:
    raise ConfigError(f"validation_fraction must be in [0, 1), got {fraction}.")
  perm = np.random.default_rng(seed).permutation(n)
  n_val = int(round(n * fraction))
  return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def member_carves(ds: Dataset, fraction: float, seeds: Sequence[int]
                  ) -> tuple[Split, np.ndarray, np.ndarray]:
  """A population with its own splits: the pool (train and validation together, in the source's
  order) and each member's (train, validation) positions in it, (members, n) arrays:
  `carve_validation` of the pool seeded by the member's seed. Where the pool is the source's
  whole train split, a member's carve is the one of a single run with split_seed=seed."""
  parts = [ds.train] + ([ds.validation] if ds.validation is not None else [])
  indices = np.concatenate([p.indices for p in parts])
  order = np.argsort(indices, kind="stable")
  pool = Split(np.concatenate([p.images for p in parts])[order],
               np.concatenate([p.labels for p in parts])[order], indices[order])
  carves = [carve_validation(len(pool), fraction, seed) for seed in seeds]
  return pool, np.stack([t for t, _ in carves]), np.stack([v for _, v in carves])


def from_arrays(name: str, train: tuple[np.ndarray, np.ndarray],
                test: tuple[np.ndarray, np.ndarray], *, class_names: Sequence[str], image_shape: tuple[int, ...],
                validation_fraction: float, split_seed: int, order: str = "") -> Dataset:
  """A Dataset of a source's whole train and test (images, labels), with `validation_fraction`
  of train carved out (seeded by `split_seed`); indices are positions in the source's splits."""
  (images, labels), (test_images, test_labels) = train, test
  train_idx, val_idx = carve_validation(len(labels), validation_fraction, split_seed)
  validation = Split(images[val_idx], labels[val_idx], val_idx) if len(val_idx) else None
  return Dataset(name=name, train=Split(images[train_idx], labels[train_idx], train_idx),
                 validation=validation,
                 test=Split(test_images, test_labels, np.arange(len(test_labels))),
                 num_classes=len(class_names), class_names=list(class_names),
                 image_shape=tuple(image_shape), order=order)


def _head(split: Split | None, n: int) -> Split | None:
  """The first `n` examples of `split` (all when n is 0)."""
  if split is None or not n:
    return split
  return Split(split.images[:n], split.labels[:n], split.indices[:n])


def cap(ds: Dataset, max_train_examples: int, max_eval_examples: int) -> Dataset:
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
  """The dataset's indices of the entries of `classes`: a class name, else an index. An index
  into names that are not the indices themselves (a folder's sorted folder names) is easily
  mistaken for a name: taken, with a warning that names the classes it picked."""
  names = [str(n) for n in class_names]
  indices, by_position = [], []
  for entry in parse_classes(classes):
    if entry in names:
      indices.append(names.index(entry))
    elif entry.isdigit() and int(entry) < len(names):
      indices.append(int(entry))
      by_position.append(f"{entry} -> {names[int(entry)]}")
    else:
      raise ConfigError(f"Unknown class {entry!r} in --config.classes; {dataset} has the classes "
                        f"{', '.join(names)} (names, or indices 0-{len(names) - 1}).")
  if len(set(indices)) < len(indices):
    raise ConfigError(f"classes={classes!r} names the same class twice (by name and by index).")
  if by_position:
    that, position = (("that is", "a position") if len(by_position) == 1 else
                      ("those are", "positions"))
    note(f"--config.classes={classes}: {dataset} has no class named "
         f"{' or '.join(e.split(' ->')[0] for e in by_position)}, so {that} read as {position} "
         f"in its list of classes: {', '.join(by_position)}. Give class names to be sure of the "
         f"choice, e.g. --config.classes={','.join(names[i] for i in indices)}.")
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


def select(ds: Dataset, classes: str = "", max_per_class: int = 0, seed: int = 0,
           where: str = "") -> Dataset:
  """`ds` with only `classes` (names or indices, comma-separated; "" = all), relabelled 0..k-1 in
  the order given, in every split; and at most `max_per_class` training examples of each class
  (0 = all), chosen reproducibly from `seed` (validation and test are left whole). `where`: the
  data as the user named it (a folder's path), for the notes."""
  if classes.strip():
    indices = class_indices(classes, ds.class_names, where or ds.name)
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
