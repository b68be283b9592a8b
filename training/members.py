"""A population: the members that `--config.population` and `--config.sweep` make of one config.

Members are the product of the sweep's lists, each setting times `population` seeds (seed,
seed + 1, ...), in that order: `--config.sweep='{"learning_rate": [0.001, 0.003]}'` with
`--config.population=2` gives (0.001, seed), (0.001, seed + 1), (0.003, seed), (0.003, seed + 1).
They train in one compiled program; a swept field may change only values inside it, never the
program's shapes, so fields that do (the model's widths, the batch size, the model) are refused.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import traverse_util

from training import settings
from training.errors import ConfigError

# Fields a sweep may vary: each is read as a number inside the step (one per member), so the
# members share one program. Any numeric augment.* field, and model fields named *dropout*,
# qualify too (see `sweepable`).
SWEEPABLE = ("learning_rate", "weight_decay", "label_smoothing", "ema_decay", "grad_clip_norm")
# What the members' program is made of: a change of any of these is another program.
_PROGRAM = ("model.", "batch_size", "dtype", "optimizer", "schedule", "num_epochs", "task",
            "dataset", "mesh_", "steps_per_call", "population", "sweep", "seed")


@dataclasses.dataclass(frozen=True)
class Member:
  index: int
  seed: int
  values: dict[str, float]  # the swept fields' values ({} without a sweep)

  def label(self) -> str:
    """"seed 3" or "seed 3, learning_rate=0.003": how the member is named in lines and tables."""
    return ", ".join([f"seed {self.seed}"] + [f"{k}={v:g}" for k, v in self.values.items()])


def sweepable(field: str) -> bool:
  """Whether `field` only changes values inside the step, so that members may differ in it."""
  leaf = field.rsplit(".", 1)[-1]
  return (field in SWEEPABLE or field.startswith("augment.")
          or (field.startswith("model.") and "dropout" in leaf))


def parse_sweep(text: str) -> dict[str, list[float]]:
  """{field: values} of `--config.sweep`, a JSON object of lists; "" is no sweep."""
  if not text.strip():
    return {}
  try:
    sweep = json.loads(text)
  except ValueError as e:
    raise ConfigError(f"--config.sweep={text!r} is not JSON ({e}); give an object of lists, e.g. "
                      "--config.sweep='{\"learning_rate\": [0.001, 0.003]}'.") from e
  if not isinstance(sweep, dict) or not sweep or not all(
      isinstance(v, list) and v for v in sweep.values()):
    raise ConfigError(f"--config.sweep={text!r} must be a JSON object of non-empty lists, e.g. "
                      "'{\"learning_rate\": [0.001, 0.003], \"model.dropout\": [0.1, 0.3]}'.")
  return sweep


def check(config: ml_collections.ConfigDict) -> None:
  """The population fields: a positive population, and a sweep of known fields that change only
  values (anything else is refused naming the field)."""
  population = config.get("population", 1)
  if not isinstance(population, int) or population < 1:
    raise ConfigError(f"population must be a whole number >= 1, got {population!r}.")
  if config.get("population_splits", False) and not (
      is_population(config) and config.get("task", "classify") == "classify"):
    raise ConfigError("population_splits gives each member of a classifier's population its own "
                      "training and validation split: set --config.population=2 or more (or a "
                      "sweep), or leave population_splits False.")
  flat = traverse_util.flatten_dict(config.to_dict(), sep=".")
  for field, values in parse_sweep(config.get("sweep", "")).items():
    if field not in flat:
      raise ConfigError(f"--config.sweep names {field!r}, which is not a field of this config "
                        "(--mode=show lists them).")
    if not sweepable(field):
      what = ("changes the program (its shapes or its steps)" if field.startswith(_PROGRAM)
              else "is not read inside the train step")
      raise ConfigError(
          f"--config.sweep cannot vary {field!r}: it {what}, so members with other values cannot "
          f"share one compiled program. Run one population per value (e.g. --config.{field}=... "
          f"with its own --workdir). Fields a sweep can vary: {', '.join(SWEEPABLE)}, "
          "augment.*, model.*dropout*.")
    bad = [v for v in values if isinstance(v, bool) or not isinstance(v, (int, float))]
    if bad:
      raise ConfigError(f"--config.sweep: {field} takes numbers, got {bad[0]!r}.")
    # A member's traced value is used as given, its single run's rounded (`member_config`).
    if type(flat[field]) is int and any(v != int(v) for v in values):
      raise ConfigError(f"--config.sweep: {field} takes whole numbers, got {values}.")


def members(config: ml_collections.ConfigDict) -> list[Member]:
  """The members, in order: each sweep setting (the product of the lists, in the order given)
  with `population` seeds."""
  sweep = parse_sweep(config.get("sweep", ""))
  settings = [dict(zip(sweep, combo)) for combo in itertools.product(*sweep.values())] or [{}]
  population = config.get("population", 1)
  return [Member(i, config.seed + s, {k: float(v) for k, v in setting.items()})
          for i, (setting, s) in enumerate(itertools.product(settings, range(population)))]


def count(config: ml_collections.ConfigDict) -> int:
  """How many members `config` trains (1 for a plain run)."""
  return len(members(config))


def is_population(config: ml_collections.ConfigDict) -> bool:
  """Whether `config` trains a population (its state has a leading member axis), even of one."""
  return config.get("population", 1) > 1 or bool(parse_sweep(config.get("sweep", "")))


def swept(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The fields whose values differ between members (read from the state inside the step)."""
  return tuple(parse_sweep(config.get("sweep", "")))


def member_config(config: ml_collections.ConfigDict, member: Member) -> ml_collections.ConfigDict:
  """The single run that `member` is: the config with its seed and swept values, no population."""
  single = ml_collections.ConfigDict(config.to_dict())
  settings.set_fields(single, {f: type(field_value(config, f))(v) for f, v in member.values.items()})
  single.seed, single.population, single.sweep = member.seed, 1, ""
  return single


def field_value(config: ml_collections.ConfigDict, field: str) -> Any:
  """The value of a dotted field: "augment.shift" -> config.augment.shift."""
  node = config
  for part in field.split("."):
    node = node[part]
  return node


def seed_keys(seed: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(init, train, shuffle) keys of a run with `seed`: the parameters' initialization, each
  step's randomness and each epoch's order; a member of a population uses its seed's, so it
  starts where a single run of that seed would."""
  init_key, train_key, shuffle_key = jax.random.split(jax.random.PRNGKey(seed), 3)
  return init_key, train_key, shuffle_key


def member_keys(population: list[Member]) -> tuple[jax.Array, jax.Array, jax.Array]:
  """`seed_keys` of every member, stacked: three arrays with a leading members axis."""
  keys = [seed_keys(m.seed) for m in population]
  return tuple(jnp.stack([k[i] for k in keys]) for i in range(3))


def take(state: Any, k: int) -> Any:
  """Member k of a population's state (its arrays without the members axis)."""
  return jax.tree_util.tree_map(lambda x: x[k], state)


def summary(values: np.ndarray) -> tuple[float, float]:
  """(mean, standard deviation) of the members' values (ddof=1: a sample of seeds; 0 for one)."""
  values = np.asarray(values, np.float64)
  return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0
