"""Write MNIST as PNG files in an image folder: OUT/train/<digit>/*.png and OUT/test/<digit>/*.png.

    python examples/mnist_to_folder.py --out=/tmp/mnist_folder --per_class=100
    python train.py --config=configs/cnn.py --config.dataset=folder:/tmp/mnist_folder

Reads the original IDX files (--mnist_dir, default ../shared/mnist beside this repository), or,
when they are not there, the prepared tfds data ($TFDS_DATA_DIR). Takes the first --per_class
images of each digit in each split (0: all), so the same options write the same files.
`--names=words` names the class folders zero, one, ... instead of 0, 1, ...
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
import zlib

import numpy as np
from PIL import Image

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
IDX_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
             "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
REPLACE = ("copy the four files again (docs/data.md says where from), or give --mnist_dir a folder "
           "that holds them intact.")


class InputError(ValueError):
  """Bad options or input files: main prints the message as one `error:` line."""


def read_idx(path: str) -> np.ndarray:
  """An IDX file (gzip or not) as an array: a magic number gives the dimension count, then each
  dimension's size as a big-endian int32, then uint8 data. InputError if it is not one."""
  try:
    with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
      raw = f.read()
  except (OSError, EOFError, zlib.error) as e:  # unreadable, truncated or damaged gzip data
    raise InputError(f"cannot read {path} ({e}); {REPLACE}") from None
  ndim = raw[3] if len(raw) >= 4 and raw[:3] == b"\x00\x00\x08" else 0
  shape = np.frombuffer(raw, ">i4", ndim, 4) if len(raw) >= 4 + 4 * ndim else None
  if not ndim or shape is None or len(raw) != 4 + 4 * ndim + int(np.prod(shape, dtype=np.int64)):
    raise InputError(f"{path} is not a complete IDX file of bytes ({len(raw):,} bytes); {REPLACE}")
  return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_split(split: str, mnist_dir: str) -> tuple[np.ndarray, np.ndarray]:
  """(images (N, 28, 28), labels) of "train" or "test", from the IDX files or else tfds."""
  paths = [os.path.join(mnist_dir, f) for f in IDX_FILES[split]]
  if all(os.path.exists(p) for p in paths):
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    if (images.shape[1:], labels.shape) != ((28, 28), images.shape[:1]) or (
        labels.max(initial=0) > 9):
      raise InputError(f"{paths[0]} and {paths[1]} are not MNIST's 28x28 images and their labels "
                       f"(found shapes {images.shape} and {labels.shape}); {REPLACE}")
    return images, labels
  sys.path.insert(0, REPO)
  from training import data
  try:
    ds = data.load("mnist", validation_fraction=0.0)
  except (OSError, ValueError) as e:  # the project's data errors: not found, damaged, offline
    raise InputError(f"the IDX files are not all in {mnist_dir} (--mnist_dir), and the tfds "
                     f"data or a download failed too: {e}") from None
  part = ds.train if split == "train" else ds.test
  return part.images[..., 0], part.labels


def _not_a_folder(path: str) -> str | None:
  """`path`, or the nearest existing folder above it, where that is a file: nothing can be
  written there."""
  path = os.path.abspath(path)
  while not os.path.exists(path) and os.path.dirname(path) != path:
    path = os.path.dirname(path)
  return None if os.path.isdir(path) else path


def write(out: str, per_class: int = 0, mnist_dir: str = "", names: str = "digits") -> int:
  """Writes the PNGs; returns how many. InputError for bad options or input files, found before
  anything is written, and for a failure to write."""
  if per_class < 0:
    raise InputError(f"--per_class={per_class}: give a number of images per digit, or 0 for all.")
  mnist_dir = mnist_dir or os.path.join(REPO, "..", "shared", "mnist")
  folders = {(split, digit): os.path.join(out, split, WORDS[digit] if names == "words" else
                                          str(digit)) for split in IDX_FILES for digit in range(10)}
  for folder in folders.values():
    if blocker := _not_a_folder(folder):
      raise InputError(f"{blocker} is a file, not a folder, so {folder} cannot be made; give "
                       f"--out a folder (a new one or one that exists).")
  splits = {split: load_split(split, mnist_dir) for split in IDX_FILES}  # all read first
  written = 0
  for (split, digit), folder in folders.items():
    images, labels = splits[split]
    chosen = np.flatnonzero(labels == digit)
    try:
      os.makedirs(folder, exist_ok=True)
      for i in chosen[:per_class] if per_class else chosen:
        Image.fromarray(images[i]).save(os.path.join(folder, f"{split}_{i:05d}.png"))
        written += 1
    except OSError as e:  # no permission, a full disk
      raise InputError(f"cannot write into {folder} ({e}).") from None
  return written


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True, help="the folder to write (created if needed)")
  parser.add_argument("--per_class", type=int, default=0,
                      help="images per digit and split (0: all, 60,000 + 10,000 files)")
  parser.add_argument("--mnist_dir", default="", help="where the IDX files are")
  parser.add_argument("--names", choices=("digits", "words"), default="digits",
                      help="class folder names: 0..9, or zero..nine")
  args = parser.parse_args()
  try:
    n = write(args.out, args.per_class, args.mnist_dir, args.names)
  except InputError as e:
    sys.exit(f"error: {e}")
  print(f"wrote {n} PNG files into {os.path.join(args.out, 'train')} and "
        f"{os.path.join(args.out, 'test')}")


if __name__ == "__main__":
  main()
