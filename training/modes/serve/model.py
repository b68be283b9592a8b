"""The served model: a checkpoint of a workdir, or the jax.export artifact of an export folder,
compiled once per batch bucket before the first request, so that no request pays a compilation.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any, Callable

import jax
import numpy as np
# jax.export is a module that `import jax` does not load on every release (not on 0.7.1).
from jax import export as jax_export

from training.data import folder
from training.errors import ConfigError
from training.modes import ensemble as ensemble_lib, export_meta
from training.tasks import restore as restore_lib


@dataclasses.dataclass
class Served:
  """What the server needs of a model: its compiled calls and what /model tells about it."""
  calls: dict[int, Callable[[np.ndarray], Any]]  # bucket (batch size) -> compiled function
  shape: tuple[int, int, int]  # (H, W, C) of one image
  class_names: list[str]
  fit: str  # how images of another size are fitted (training/data/images.py)
  light_matters: bool  # the model learnt light ink on dark: dark-on-light images get a note
  description: dict[str, Any]  # GET /model

  @property
  def buckets(self) -> list[int]:
    return sorted(self.calls)

  def probabilities(self, images: np.ndarray) -> np.ndarray:
    """Class probabilities (N, classes) of uint8 `images` (N, H, W, C), N at most the largest
    bucket: padded to the smallest bucket that holds them, so that one of the compiled shapes
    runs."""
    n = len(images)
    bucket = next(b for b in self.buckets if b >= n)
    padded = np.zeros((bucket, *self.shape), np.uint8)
    padded[:n] = images
    return np.asarray(self.calls[bucket](padded), np.float64)[:n]


def buckets(max_batch: int) -> list[int]:
  """The compiled batch sizes: powers of two up to `max_batch` (and it): a batch is padded by
  less than half, and the start-up compiles log2(max_batch) shapes."""
  if max_batch < 1:
    raise ConfigError(f"--max_batch={max_batch}: give 1 or more images per device call.")
  sizes = [1 << i for i in range(max_batch.bit_length()) if 1 << i < max_batch]
  return sizes + [max_batch]


def is_export(directory: str) -> bool:
  """Whether `directory` holds a --mode=export folder (model.jax and model.json)."""
  return all(os.path.isfile(os.path.join(directory, f))
             for f in (export_meta.JAX_FILE, export_meta.META_FILE))


def load(directory: str, which: str, member: int | None, max_batch: int) -> Served:
  """The model of a trained workdir's checkpoint `which` (a population: its ensemble, or member
  `member`), or of an export folder, compiled for every bucket."""
  sizes = buckets(max_batch)
  if is_export(directory):
    if member is not None:
      raise ConfigError(f"--member={member}: {directory} is an export, which holds one model "
                        "(or one ensemble); export the member with --mode=export --member=K.")
    return _from_export(directory, sizes)
  return _from_checkpoint(directory, which, member, sizes)


def _from_checkpoint(workdir: str, which: str, member: int | None, sizes: list[int]) -> Served:
  r = restore_lib.restore(workdir, which, member=member)
  info = r.dataset_info
  shape = tuple(info["image_shape"])
  fn = jax.jit(functools.partial(ensemble_lib.probabilities, [r]))
  states = [r.state]
  calls = {}
  for size in sizes:
    compiled = fn.lower(states, jax.ShapeDtypeStruct((size, *shape), np.uint8)).compile()
    calls[size] = (lambda c: lambda x: c(states, x))(compiled)
  description = export_meta.metadata([r], [workdir], {})
  for key in ("files", "jax_platforms", "onnx_opset", "input", "output"):
    description.pop(key, None)  # about export files, which a checkpoint has none of
  description["config"] = r.config.to_dict()
  description["served_from"] = "checkpoint"
  return Served(calls, shape, [str(n) for n in info["class_names"]],
                "digit" if info["name"] == "mnist" else "resize",
                not str(info["name"]).startswith(folder.PREFIX), description)


def _from_export(directory: str, sizes: list[int]) -> Served:
  try:
    with open(os.path.join(directory, export_meta.META_FILE)) as f:
      meta = json.load(f)
    with open(os.path.join(directory, export_meta.JAX_FILE), "rb") as f:
      exported = jax_export.deserialize(bytearray(f.read()))
    shape = tuple(meta["input"]["shape"][1:])
    names = [str(n) for n in meta["class_names"]]
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise ConfigError(f"Cannot read the export in {directory} ({type(e).__name__}: {e}); "
                      "write it again with --mode=export --overwrite.") from None
  fn = jax.jit(exported.call)
  calls = {size: fn.lower(jax.ShapeDtypeStruct((size, *shape), np.uint8)).compile()
           for size in sizes}
  return Served(calls, shape, names, meta.get("fit", "digit"),
                not str(meta.get("dataset", "")).startswith(folder.PREFIX),
                {**meta, "served_from": "export"})
