"""From a config to its model: the registered `nets` module with the config's fields, its
compute dtype, and a clear message when the fields cannot build it."""

from __future__ import annotations

import os
import traceback
from typing import Any, Collection

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import configs
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


def switch_model(config: ml_collections.ConfigDict, file_model: str, given: Collection[str]
                 ) -> tuple[ml_collections.ConfigDict, str | None]:
  """For a command line that set `model.name` to another model than the config file's
  (`file_model`): the config with that model's defaults in place of the file's model fields,
  which were meant for the other model, except the fields in `given` (also set on the command
  line); and a note that says what was dropped. The config unchanged (and None) otherwise."""
  name = config.model.name
  if name == file_model:
    return config, None
  defaults = nets.config_fields(name)  # raises for an unknown model, listing the known ones
  old = {k: v for k, v in config.model.items() if k != "name"}
  model = {"name": name, **defaults, **{k: old[k] for k in given if k in old}}
  new = ml_collections.ConfigDict({**config.to_dict(), "model": model})
  dropped = [k for k in old if k not in given]
  tuned = f"configs/{name}.py"
  return new, (f"note: --config.model.name={name} replaces {file_model}: the config's "
               f"{file_model} fields ({', '.join(dropped) or 'none'}) are dropped and {name}'s "
               "defaults used"
               + (f" ({tuned} holds tuned ones)" if name in configs.names() else "")
               + "; --mode=show lists them.")


def model_error(config: ml_collections.ConfigDict, image_shape: tuple[int, ...],
                e: Exception) -> str:
  """Why the model could not be built, and where (the innermost frame in nets/, for whoever is
  writing a new architecture: the command line shows no traceback)."""
  if isinstance(e, nets.ModelContractError):  # the model's code, not the config, is at fault
    return str(e)
  frames = traceback.extract_tb(e.__traceback__)
  ours = [f for f in frames if f"{os.sep}nets{os.sep}" in f.filename] or frames[-1:]
  where = f" (raised at {os.path.relpath(ours[-1].filename)}:{ours[-1].lineno})" if ours else ""
  fields = ", ".join(f"{k}={v!r}" for k, v in config.model.items())
  return (f"Model {config.model.name!r} cannot be built for {image_shape} images with "
          f"{fields}: {type(e).__name__}: {str(e).rstrip('.')}{where}. Check the "
          "--config.model.* values.")


def param_count(params: Any) -> int:
  return sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(params))
