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

import numpy as np
from PIL import Image

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
IDX_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
             "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def read_idx(path: str) -> np.ndarray:
  """An IDX file (gzip or not) as an array: a magic number gives the dimension count, then each
  dimension's size as a big-endian int32, then uint8 data."""
  with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
    raw = f.read()
  ndim = raw[3]
  shape = np.frombuffer(raw, ">i4", ndim, 4)
  return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_split(split: str, mnist_dir: str) -> tuple[np.ndarray, np.ndarray]:
  """(images (N, 28, 28), labels) of "train" or "test", from the IDX files or else tfds."""
  paths = [os.path.join(mnist_dir, f) for f in IDX_FILES[split]]
  if all(os.path.exists(p) for p in paths):
    return read_idx(paths[0]), read_idx(paths[1])
  sys.path.insert(0, REPO)
  from training import data
  ds = data.load("mnist", validation_fraction=0.0)
  part = ds.train if split == "train" else ds.test
  return part.images[..., 0], part.labels


def write(out: str, per_class: int = 0, mnist_dir: str = "", names: str = "digits") -> int:
  """Writes the PNGs; returns how many."""
  mnist_dir = mnist_dir or os.path.join(REPO, "..", "shared", "mnist")
  written = 0
  for split in ("train", "test"):
    images, labels = load_split(split, mnist_dir)
    for digit in range(10):
      folder = os.path.join(out, split, WORDS[digit] if names == "words" else str(digit))
      os.makedirs(folder, exist_ok=True)
      chosen = np.flatnonzero(labels == digit)
      for i in chosen[:per_class] if per_class else chosen:
        Image.fromarray(images[i]).save(os.path.join(folder, f"{split}_{i:05d}.png"))
        written += 1
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
  n = write(args.out, args.per_class, args.mnist_dir, args.names)
  print(f"wrote {n} PNG files into {os.path.join(args.out, 'train')} and "
        f"{os.path.join(args.out, 'test')}")


if __name__ == "__main__":
  main()
