"""A directory of images as a dataset: --config.dataset=folder:/path/to/images (docs/data.md).

Two layouts: /path/<class>/<images> (validation and test are carved from them), or
/path/train/<class>/..., /path/test/<class>/... and optionally /path/validation/<class>/...
(a missing test/ is carved from train/, a missing validation/ as for tfds data). Class names are
the folder names, sorted; images may be nested in subfolders of a class folder. Each image is
converted as `--mode=predict --fit=resize` converts one (training/data/images.py), to image_size x
image_size x channels, so that a trained model sees predict's images as it saw its training data.
The decoded arrays are cached like the tfds data, keyed by the files' names, sizes and times.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

from training.console import note
from training.data import cache, images
from training.data.dataset import Dataset, Split, carve_validation
from training.errors import ConfigError

PREFIX = "folder:"  # --config.dataset=folder:/path reads a directory of images
SPLITS = ("train", "validation", "test")
CACHE_VERSION = 1  # part of the cache key: bump when the decoding changes
SHOWN_SKIPPED = 5  # unreadable files named in the warning; the rest are counted


class FolderError(ConfigError):
  """An image folder that cannot be used as a dataset; the message says why and what to do."""


def check(path: str, image_size: int = 28, channels: int = 1, test_fraction: float = 0.1) -> None:
  """The folder options, and that the folder exists, before anything is read."""
  if channels not in (1, 3):
    raise ConfigError(f"folder.channels must be 1 (grey) or 3 (RGB), got {channels}.")
  if image_size < 1:
    raise ConfigError(f"folder.image_size must be at least 1, got {image_size}.")
  if not 0.0 < test_fraction < 1.0:
    raise ConfigError(f"folder.test_fraction must be in (0, 1), got {test_fraction}.")
  if not path:
    raise FolderError("--config.dataset=folder: needs a directory: folder:/path/to/images.")
  if not os.path.isdir(path):
    raise FolderError(f"No image folder {path!r} (from --config.dataset=folder:{path}): give a "
                      "directory with one subfolder of images per class, or train/ and test/ "
                      "folders that hold such class subfolders.")


def _subfolders(path: str) -> list[str]:
  """The visible subfolders of `path`, sorted (hidden ones, like .ipynb_checkpoints, are not
  classes)."""
  return sorted(d for d in os.listdir(path)
                if not d.startswith(".") and os.path.isdir(os.path.join(path, d)))


def layout(root: str) -> dict[str, str]:
  """{split: its directory} for the splits the folder has; a flat folder is all "train"."""
  subs = _subfolders(root)
  if "train" not in subs:
    if "test" in subs or "validation" in subs:
      raise FolderError(f"{root} has a test/ or validation/ folder but no train/ folder: add "
                        "train/<class>/ folders, or put the class folders directly in it.")
    return {"train": root}
  others = [d for d in subs if d not in SPLITS]
  if others:
    raise FolderError(f"{root} has train/ and also the folders {', '.join(others)}: with train/, "
                      "only train/, validation/ and test/ may be there (each holding class "
                      "folders). Move those into train/, or remove them.")
  return {s: os.path.join(root, s) for s in SPLITS if s in subs}


def _files(split_dir: str, classes: list[str]) -> list[tuple[str, int]]:
  """(path, class index) of every visible file under each class folder, in a fixed order."""
  found = []
  for label, name in enumerate(classes):
    class_dir = os.path.join(split_dir, name)
    for dirpath, dirnames, filenames in os.walk(class_dir):
      dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
      found += [(os.path.join(dirpath, f), label) for f in sorted(filenames)
                if not f.startswith(".")]
  return found


def class_names(root: str) -> list[str]:
  """The class folders of `root`'s training images, sorted: the labels' order."""
  return _subfolders(layout(root)["train"])


def list_images(root: str) -> tuple[list[str], dict[str, list[tuple[str, int]]]]:
  """The class names (train's folders) and each split's (path, label) files, checked for an
  unusable class list; emptiness is checked after decoding (a file may be unreadable)."""
  dirs = layout(root)
  classes = class_names(root)
  where = dirs["train"]
  if not classes:
    loose = any(not f.startswith(".") for f in os.listdir(where))
    note = " (its files are not in any)" if loose else ""
    raise FolderError(f"{where} has no class folders{note}"
                      ": put each class's images in a subfolder named after it, e.g. "
                      f"{os.path.join(where, 'cat')}/ and {os.path.join(where, 'dog')}/.")
  if len(classes) == 1:
    raise FolderError(f"{where} has a single class folder, {classes[0]}/: a classifier needs at "
                      "least two classes, each in a folder of its own.")
  files = {}
  for split, path in dirs.items():
    names = _subfolders(path)
    unknown = [n for n in names if n not in classes]
    if unknown:
      raise FolderError(f"{path} has the class folder(s) {', '.join(unknown)}, which "
                        f"{dirs['train']} does not have: every class must have training images. "
                        f"Add {', '.join(os.path.join(dirs['train'], n) for n in unknown)}/ or "
                        f"remove them from {split}/.")
    files[split] = _files(path, classes)  # a class that a split lacks simply has no files
  return classes, files


def fingerprint(root: str, files: dict[str, list[tuple[str, int]]], image_size: int,
                channels: int) -> str:
  """A digest of every file's relative path, class, size and time and of the conversion: any
  change to the folder (an image added, removed, moved or rewritten) decodes it again. Reading
  the files to hash them would cost nearly as much as decoding them."""
  h = hashlib.sha256(f"v{CACHE_VERSION}|{image_size}|{channels}".encode())
  for split in sorted(files):
    for path, label in files[split]:
      st = os.stat(path)
      h.update(f"|{split}|{os.path.relpath(path, root)}|{label}|{st.st_size}|"
               f"{st.st_mtime_ns}".encode())
  return h.hexdigest()[:16]


def decode(files: list[tuple[str, int]], image_size: int, channels: int
           ) -> tuple[np.ndarray, np.ndarray, list[str]]:
  """(images, labels) of the readable files, and the paths of those that are not."""
  shape = (image_size, image_size, channels)
  arrays, labels, skipped = [], [], []
  for path, label in files:
    try:
      arrays.append(images.read(path, shape, fit="resize").array)
      labels.append(label)
    except images.ImageError:  # unreadable, not an image, or too large to decode safely
      skipped.append(path)
  stacked = np.stack(arrays) if arrays else np.zeros((0, *shape), np.uint8)
  return stacked.astype(np.uint8), np.asarray(labels, np.int32), skipped


def _cache_path(root: str, cache_dir: str, image_size: int, channels: int) -> str:
  """One file per folder and conversion: a changed folder overwrites its own cache."""
  where = hashlib.sha256(os.path.realpath(root).encode()).hexdigest()[:12]
  name = os.path.basename(os.path.normpath(root)) or "root"
  return os.path.join(os.path.expanduser(cache_dir),
                      f"folder-{name}-{where}-{image_size}x{image_size}x{channels}.npz")


def decoded(root: str, cache_dir: str, image_size: int, channels: int
            ) -> tuple[list[str], dict[str, np.ndarray], dict[str, list[str]]]:
  """The class names; each split's images and labels ("<split>_images", "<split>_labels") plus
  "skipped" (unreadable files, relative to `root`), through the cache when enabled; and each
  split's readable files, in the order of its images (the file of each `Split.indices` value)."""
  classes, files = list_images(root)
  digest = fingerprint(root, files, image_size, channels)
  path = _cache_path(root, cache_dir, image_size, channels) if cache_dir else None
  arrays = cache.read(path, digest) if path else None
  if arrays is None:
    arrays, skipped = {}, []
    for split, split_files in files.items():
      arrays[f"{split}_images"], arrays[f"{split}_labels"], bad = decode(
          split_files, image_size, channels)
      skipped += [os.path.relpath(p, root) for p in bad]
    arrays["skipped"] = np.asarray(skipped, dtype=str)
    if path:
      cache.write(path, digest, **arrays)
  skipped = set(arrays["skipped"].tolist())
  readable = {split: [p for p, _ in split_files if os.path.relpath(p, root) not in skipped]
              for split, split_files in files.items()}
  return classes, arrays, readable


def _warn_skipped(root: str, skipped: np.ndarray) -> None:
  """One warning line for the files that could not be read (on cached loads too: they are still
  left out)."""
  if len(skipped):
    shown = ", ".join(str(s) for s in skipped[:SHOWN_SKIPPED])
    more = f" and {len(skipped) - SHOWN_SKIPPED} more" if len(skipped) > SHOWN_SKIPPED else ""
    note(f"skipped {len(skipped)} unreadable file(s) in {root} (not images, damaged or too "
         f"large): {shown}{more}.")


def _check_counts(root: str, classes: list[str], arrays: dict[str, np.ndarray]) -> None:
  """One clear error for a folder without images, or with a class folder that holds none."""
  if not any(len(v) for k, v in arrays.items() if k.endswith("_labels")):
    raise FolderError(f"{root} holds no readable images (PNG, JPEG, BMP, ...) in its class "
                      f"folders ({len(arrays['skipped'])} unreadable file(s)).")
  for split, path in layout(root).items():
    counts = np.bincount(arrays[f"{split}_labels"], minlength=len(classes))
    if not counts.sum():
      raise FolderError(f"{path} holds no readable images in class folders: add some, or remove "
                        f"it (without {split}/, {split} images are carved from train/).")
    empty = [os.path.join(path, n) for i, n in enumerate(classes)
             if counts[i] == 0 and (split == "train" or os.path.isdir(os.path.join(path, n)))]
    if empty:
      raise FolderError(f"The class folder(s) {', '.join(empty)} hold no readable images: add "
                        "images to them, or remove them.")


def carve_test(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Sorted (rest, test) positions: a seeded random `fraction` of each class held out, so every
  class is tested in proportion; at least one image of each class that has two or more, so that
  a small folder still tests every class."""
  rng = np.random.default_rng([seed, 2])  # not the validation carve's stream
  test = []
  for c in np.unique(labels):
    members = rng.permutation(np.flatnonzero(labels == c))
    n = int(round(len(members) * fraction))
    test.append(members[:max(n, 1) if len(members) > 1 else 0])
  test = np.sort(np.concatenate(test))
  return np.setdiff1d(np.arange(len(labels)), test), test


def _split(arrays: dict[str, np.ndarray], name: str, positions: np.ndarray | None = None
           ) -> Split:
  images_, labels = arrays[f"{name}_images"], arrays[f"{name}_labels"]
  if positions is None:
    positions = np.arange(len(labels))
  return Split(images_[positions], labels[positions], positions)


def load(root: str, *, cache_dir: str, validation_fraction: float = 0.1, split_seed: int = 0,
         image_size: int = 28, channels: int = 1, test_fraction: float = 0.1) -> Dataset:
  """The folder as a Dataset; `Split.indices` are positions among the split folder's readable
  images (train/ or the flat folder for the carved splits), and `test_files` names the file of
  each test index."""
  check(root, image_size, channels, test_fraction)
  classes, arrays, readable = decoded(root, cache_dir, image_size, channels)
  _warn_skipped(root, arrays["skipped"])
  _check_counts(root, classes, arrays)
  pool = np.arange(len(arrays["train_labels"]))
  if "test_labels" in arrays:
    test = _split(arrays, "test")
  else:
    pool, held_out = carve_test(arrays["train_labels"], test_fraction, split_seed)
    if not len(held_out):
      raise FolderError(f"{root} has too few images to hold out folder.test_fraction="
                        f"{test_fraction} of them for testing: add a test/ folder of class "
                        "folders, or more images.")
    test = _split(arrays, "train", held_out)
  validation = None
  if "validation_labels" in arrays:
    validation = _split(arrays, "validation")
  else:
    kept, carved = carve_validation(len(pool), validation_fraction, split_seed)
    if len(carved):
      validation = _split(arrays, "train", pool[carved])
    pool = pool[kept]
  source = "test" if "test_labels" in arrays else "train"  # the split whose files test indexes
  return Dataset(name=f"{PREFIX}{os.path.basename(os.path.normpath(root))}",
                 train=_split(arrays, "train", pool), validation=validation, test=test,
                 num_classes=len(classes), class_names=classes,
                 image_shape=(image_size, image_size, channels),
                 order=f"the readable images of {layout(root)[source]} (class folders, then "
                       "files, sorted)",
                 test_files=tuple(readable[source]))
