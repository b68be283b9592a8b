"""A run's config and workdir checked before anything is loaded or written: every refusal here
costs the user seconds, not a data load or a compilation."""

from __future__ import annotations

from typing import Any

import ml_collections
from flax import traverse_util

from training import tasks
from training.members import Population
from training.data import sources
from training.errors import ConfigError, check_writable
from training.compute import mesh, optim
from training.compute.build import DTYPES


# The smallest value each numeric field may take.
_AT_LEAST = {"batch_size": 1, "eval_batch_size": 1, "num_epochs": 1, "log_every_steps": 1,
             "checkpoint.every_epochs": 1, "checkpoint.keep": 1, "checkpoint.every_steps": 0,
             "checkpoint.keep_best": 0, "stop_after_steps": 0, "steps_per_call": 0,
             "max_train_examples": 0, "max_eval_examples": 0, "max_per_class": 0,
             "folder.image_size": 1, "weight_decay": 0.0,
             "grad_clip_norm": 0.0, "profile_steps": 0, "tta_shift": 0}


def validate(config: ml_collections.ConfigDict, origin: dict[str, Any] | None = None
             ) -> Population:
  """Fails fast, before the data is loaded, on config values that cannot work; returns the
  run's population, derived here once as its fields are checked. The config's own fields come
  first (choices, ranges, each sweep setting's), then the task's checks (its model, its own
  fields, a fine-tuning's source unless `origin`, the record of a run resumed, says where its
  weights came from) and the data options'."""
  for field, choices in (("dtype", DTYPES), ("optimizer", optim.OPTIMIZERS),
                         ("schedule", optim.SCHEDULES)):
    if config[field] not in choices:
      raise ConfigError(f"Unknown {field} {config[field]!r}; choose one of {', '.join(choices)}.")
  fields = traverse_util.flatten_dict(config.to_dict(), sep=".")
  _check_ranges(fields)
  mesh.check_shape(config.mesh_shape, config.mesh_axes)
  population = Population.of(config)
  _check_swept_ranges(fields, population)
  tasks.check_start(config, origin)  # an unknown model among them, listing the known ones
  sources.check_options(config.dataset, config.classes, config.folder.to_dict(),
                        config.get("data_url"))
  return population


def _check_ranges(fields: dict[str, Any]) -> None:
  """The numeric fields (those a sweep may vary among them), each within its meaningful range;
  `fields` by dotted name."""
  for field, low in _AT_LEAST.items():
    if (value := fields.get(field, low)) < low:
      raise ConfigError(f"{field} must be at least {low}, got {value}.")
  if not fields["learning_rate"] > 0:
    raise ConfigError(f"learning_rate must be positive, got {fields['learning_rate']}.")
  if not 0.0 <= (decay := fields.get("decay_fraction", 0.3)) <= 1.0:
    raise ConfigError(f"decay_fraction must be in [0, 1], got {decay}.")
  if not 0.0 <= fields["label_smoothing"] < 1.0:
    raise ConfigError(f"label_smoothing must be in [0, 1), got {fields['label_smoothing']}.")
  if not 0.0 <= fields["ema_decay"] < 1.0:
    raise ConfigError(f"ema_decay must be in [0, 1) (0 disables it), got {fields['ema_decay']}.")
  # The defaults first: configs saved before zoom, crop and elastic existed (resumed) lack them.
  a = {"zoom": 0.0, "crop": 0, "elastic": 0.0, "elastic_sigma": 4.0,
       **{k[len("augment."):]: v for k, v in fields.items() if k.startswith("augment.")}}
  for field in ("shift", "rotate", "zoom", "crop", "elastic"):
    if a[field] < 0:
      raise ConfigError(f"augment.{field} is a maximum magnitude and must be >= 0, got "
                        f"{a[field]}.")
  if not a["zoom"] < 1:
    raise ConfigError(f"augment.zoom must be below 1 (a zoom factor in [1 - zoom, 1 + zoom]), "
                      f"got {a['zoom']}.")
  if not a["elastic_sigma"] > 0:
    raise ConfigError(f"augment.elastic_sigma must be positive (pixels), got "
                      f"{a['elastic_sigma']}.")


def _check_swept_ranges(fields: dict[str, Any], population: Population) -> None:
  """`_check_ranges` of each sweep setting, its values in the fields' own types as its members'
  single runs take them (a traced value out of range, e.g. elastic_sigma 0, would train on NaNs
  rather than fail)."""
  for member in population.members:
    if member.values and member.seed == population.seed:  # each setting once, not once per seed
      try:
        _check_ranges({**fields, **{f: type(fields[f])(v) for f, v in member.values.items()}})
      except ConfigError as e:
        raise ConfigError(f"--config.sweep: {e}") from e


def check_workdir(workdir: str) -> None:
  """Fails fast, before the data is loaded, if `workdir` cannot be written or created; creates
  nothing, so that a refused run leaves no empty workdir behind."""
  try:
    check_writable(workdir)
  except OSError as e:
    raise ConfigError(f"Cannot write to the workdir {workdir!r} ({e.strerror or e}); pass a "
                      "writable directory with --workdir=...") from e
