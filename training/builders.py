"""From a config to the objects a run is made of: checked settings, the data, the model.

Training, evaluation, prediction, the tests and the benchmarks all build through here, so none of
them needs the training loop.
"""

from __future__ import annotations

import errno
import os
import tempfile
import traceback
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import traverse_util
from tqdm.auto import tqdm

import nets
from training import data, optim
from training.errors import ConfigError

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

# The smallest value each numeric field may take.
_AT_LEAST = {"batch_size": 1, "eval_batch_size": 1, "num_epochs": 1, "log_every_steps": 1,
             "checkpoint.every_epochs": 1, "checkpoint.keep": 1, "checkpoint.every_steps": 0,
             "checkpoint.keep_best": 0, "stop_after_steps": 0, "steps_per_call": 0,
             "max_train_examples": 0, "max_eval_examples": 0, "max_per_class": 0,
             "folder.image_size": 1, "weight_decay": 0.0,
             "grad_clip_norm": 0.0}


def log(msg: str) -> None:
  """Prints on process 0 only (of a multi-process run), above a live progress bar."""
  if jax.process_index() == 0:
    tqdm.write(msg)


def validate(config: ml_collections.ConfigDict) -> None:
  """Fails fast, before the data is loaded, on config values that cannot work."""
  for field, choices in (("dtype", DTYPES), ("optimizer", optim.OPTIMIZERS),
                         ("schedule", optim.SCHEDULES)):
    if config[field] not in choices:
      raise ConfigError(f"Unknown {field} {config[field]!r}; choose one of {', '.join(choices)}.")
  flat = traverse_util.flatten_dict(config.to_dict(), sep=".")
  for field, low in _AT_LEAST.items():
    if (value := flat[field]) < low:
      raise ConfigError(f"{field} must be at least {low}, got {value}.")
  if not config.learning_rate > 0:
    raise ConfigError(f"learning_rate must be positive, got {config.learning_rate}.")
  if not 0.0 <= config.get("decay_fraction", 0.3) <= 1.0:
    raise ConfigError(f"decay_fraction must be in [0, 1], got {config.decay_fraction}.")
  if not 0.0 <= config.label_smoothing < 1.0:
    raise ConfigError(f"label_smoothing must be in [0, 1), got {config.label_smoothing}.")
  if not 0.0 <= config.ema_decay < 1.0:
    raise ConfigError(f"ema_decay must be in [0, 1) (0 disables it), got {config.ema_decay}.")
  for field in ("shift", "rotate"):
    if config.augment[field] < 0:
      raise ConfigError(f"augment.{field} is a maximum magnitude and must be >= 0, got "
                        f"{config.augment[field]}.")
  data.check_options(config.dataset, config.classes, config.folder.to_dict())
  nets.field_names(config.model.name)  # raises for an unknown model, listing the known ones
  from training import tasks  # its modules build through this one
  tasks.check(config)
  from training import finetune  # it restores checkpoints through inference, which needs us
  finetune.validate(config)


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


def step_options(config: ml_collections.ConfigDict) -> dict[str, float]:
  """The config's keyword arguments of `steps.train_step`."""
  return {"label_smoothing": config.label_smoothing, "augment_shift": config.augment.shift,
          "augment_rotate": config.augment.rotate, "ema_decay": config.ema_decay}


def steps_per_call(config: ml_collections.ConfigDict) -> int:
  """Train steps per jitted call: `config.steps_per_call`, or by backend when it is 0: one on
  CPU, where a scan made steps slower, and a log interval on GPU/TPU, where a scan removes the
  per-step dispatch (docs/performance.md)."""
  if config.steps_per_call > 0:
    return config.steps_per_call
  return 1 if jax.default_backend() == "cpu" else config.log_every_steps


def check_workdir(workdir: str) -> None:
  """Fails fast, before the data is loaded, if `workdir` cannot be written or created; creates
  nothing, so that a refused run leaves no empty workdir behind."""
  path = os.path.abspath(workdir)
  while not os.path.exists(path):
    path = os.path.dirname(path)
  try:
    if not os.path.isdir(path):
      raise NotADirectoryError(errno.ENOTDIR, f"{path} is a file")
    with tempfile.TemporaryFile(dir=path):
      pass
  except OSError as e:
    raise ConfigError(f"Cannot write to the workdir {workdir!r} ({e.strerror or e}); pass a "
                      "writable directory with --workdir=...") from e


def set_fields(config: ml_collections.ConfigDict, fields: dict[str, Any]) -> None:
  """Sets fields by dotted name, in place: {"augment.shift": 0.0, "num_epochs": 1}."""
  for name, value in fields.items():
    *groups, leaf = name.split(".")
    node = config
    for group in groups:
      node = node[group]
    node[leaf] = value


def load_data(config: ml_collections.ConfigDict) -> data.Dataset:
  return data.load(config.dataset, data_dir=config.data_dir, cache_dir=config.cache_dir,
                   validation_fraction=config.validation_fraction, split_seed=config.split_seed,
                   max_train_examples=config.max_train_examples,
                   max_eval_examples=config.max_eval_examples,
                   # .get: configs saved in checkpoints before these fields existed lack them
                   classes=config.get("classes", ""), max_per_class=config.get("max_per_class", 0),
                   folder=config.folder.to_dict() if "folder" in config else None)


def param_count(params: Any) -> int:
  return sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(params))
