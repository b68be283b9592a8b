"""Where the tests find the real MNIST, as train.py finds it: prepared tfds data ($TFDS_DATA_DIR,
else ../shared/tensorflow_datasets), else the four IDX files in the folder that train.py downloads
them into (~/.cache/mnist_flax/data/mnist) or in ../shared/mnist.

    python tests/mnist_data.py [URL]   # says where; downloads the IDX files when there are none
                                       # (from URL, a mirror, if given)

(`make data` runs it, and `make test` before the tests.)
"""

from __future__ import annotations

import os
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
if str(REPO) not in sys.path:  # run as a script
  sys.path.insert(0, str(REPO))

from training.data import idx, tfds_source  # noqa: E402

MISSING = ("Real MNIST not found (prepared tfds data in $TFDS_DATA_DIR or ../shared/"
           "tensorflow_datasets, or its IDX files in ~/.cache/mnist_flax/data/mnist or ../shared/"
           "mnist): run `make data` to download it.")


def tfds_dir() -> str | None:
  """The folder of the prepared tfds MNIST, or None."""
  path = os.environ.get("TFDS_DATA_DIR") or str(SHARED / "tensorflow_datasets")
  return path if tfds_source.is_prepared("mnist", path) else None


def download_dir() -> pathlib.Path:
  return pathlib.Path(idx.DEFAULT_DATA_DIR).expanduser() / "mnist"


def idx_dir() -> str | None:
  """The folder of MNIST's four IDX files (train.py's download folder first), or None."""
  found = idx.locate([str(download_dir()), str(SHARED / "mnist")])
  return os.path.dirname(found["train_images"]) if found else None


def data_dir() -> str | None:
  """A --config.data_dir (and $TFDS_DATA_DIR for a subprocess) with the real MNIST in it: the
  tfds folder, else the folder above the IDX files' (for the download folder that is where
  train.py finds them by itself), or None."""
  if path := tfds_dir():
    return path
  return os.path.dirname(path) if (path := idx_dir()) else None


def main() -> None:
  if not data_dir():
    from training.data import download
    download.fetch("mnist", str(download_dir()), sys.argv[1] if len(sys.argv) > 1 else None)
  print(f"MNIST for the tests: {data_dir()}")


if __name__ == "__main__":
  main()
