"""From a config to its model: the registered `nets` module with the config's fields, its
compute dtype, and a clear message when the fields cannot build it."""

from __future__ import annotations

import os
import traceback
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import nets
from training.errors import ConfigError


DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def build_model(config: ml_collections.ConfigDict, num_classes: int):
  """The model named by `config.model.name`, with the config's other model fields."""
  fields = {k: v for k, v in config.model.items() if k != "name"}
  if config.dtype != "float32":
    if "dtype" not in nets.field_names(config.model.name):
      raise ConfigError(f"Model {config.model.name!r} has no `dtype` field, so "
                        f"--config.dtype={config.dtype} cannot apply to it.")
    fields["dtype"] = DTYPES[config.dtype]
  return nets.create(config.model.name, num_classes=num_classes, **fields)


def model_error(config: ml_collections.ConfigDict, image_shape: tuple[int, ...],
                e: Exception) -> str:
  """Why the model could not be built, and where (the innermost frame in nets/, for whoever is
  writing a new architecture: the command line shows no traceback)."""
  frames = traceback.extract_tb(e.__traceback__)
  ours = [f for f in frames if f"{os.sep}nets{os.sep}" in f.filename] or frames[-1:]
  where = f" (raised at {os.path.relpath(ours[-1].filename)}:{ours[-1].lineno})" if ours else ""
  fields = ", ".join(f"{k}={v!r}" for k, v in config.model.items())
  return (f"Model {config.model.name!r} cannot be built for {image_shape} images with "
          f"{fields}: {type(e).__name__}: {str(e).rstrip('.')}{where}. Check the "
          "--config.model.* values.")


def param_count(params: Any) -> int:
  return sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(params))
