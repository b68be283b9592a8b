"""The decoded-data cache: a source's uint8 arrays as one .npz file, keyed by a fingerprint of
what they were decoded from, so later starts load them in well under a second."""

from __future__ import annotations

import os
import tempfile
import zipfile

import numpy as np

from training.console import note

DEFAULT_CACHE_DIR = os.path.join("~", ".cache", "mnist_flax", "datasets")


def resolve_dir(cache_dir: str | None) -> str:
  """None means the default cache; "none" or "" disables it."""
  if cache_dir is None:
    cache_dir = DEFAULT_CACHE_DIR
  return "" if cache_dir.lower() == "none" else os.path.expanduser(cache_dir)


def read(path: str, fingerprint: str) -> dict[str, np.ndarray] | None:
  """The arrays cached at `path` if they were decoded from what `fingerprint` names, else None."""
  try:
    with np.load(path) as f:
      if str(f["fingerprint"]) == fingerprint:
        return {k: f[k] for k in f.files if k != "fingerprint"}
  except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
    pass  # missing, corrupt or partial cache file: decode again and overwrite it
  return None


def write(path: str, fingerprint: str, **arrays: np.ndarray) -> None:
  """Writes then renames, so a killed process never leaves a truncated cache behind. A cache that
  cannot be written costs the next start a decode, not this run: it is a warning."""
  tmp = None
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp.npz")
    with os.fdopen(fd, "wb") as f:
      np.savez(f, fingerprint=np.asarray(fingerprint), **arrays)
    os.replace(tmp, path)
  except OSError as e:
    note(f"could not write the decoded-data cache {path} ({e.strerror or e}); later runs will "
         "decode the data again. Set --config.cache_dir to a writable directory, or to none.")
    if tmp and os.path.exists(tmp):
      os.remove(tmp)
