"""A population: the members that `--config.population` and `--config.sweep` make of one config.

Members are the product of the sweep's lists, each setting times `population` seeds (seed,
seed + 1, ...), in that order: `--config.sweep='{"learning_rate": [0.001, 0.003]}'` with
`--config.population=2` gives (0.001, seed), (0.001, seed + 1), (0.003, seed), (0.003, seed + 1).
They train in one compiled program; a swept field may change only values inside it, never the
program's shapes, so fields that do (the model's widths, the batch size, the model) are refused.

`Population.of` derives a run's population once from its config (and a mode once from a
checkpoint's saved config), checking those fields; the run, its task and a restored checkpoint
carry it, so nothing below parses them again.
"""

from __future__ import annotations

import dataclasses
import itertools
import json

import jax
import jax.numpy as jnp
import ml_collections
from flax import traverse_util

from training import settings as settings_lib
from training.errors import ConfigError

# Fields a sweep may vary: each is read as a number inside the step (one per member), so the
# members share one program. Any numeric augment.* field, and model fields named *dropout*,
# qualify too (see `sweepable`).
SWEEPABLE = ("learning_rate", "weight_decay", "label_smoothing", "ema_decay", "grad_clip_norm")
MODES = ("auto", "vmap", "loop")  # population_mode's values
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


@dataclasses.dataclass(frozen=True)
class Population:
  """What a run's config makes of it as members, derived once (`of`) and carried by the run (and
  by a restored checkpoint) so that nothing below reads the population's fields again."""
  seed: int  # the config's seed: a single model's, and the first of each setting's members
  members: tuple[Member, ...] = ()  # () for a single model: its state has no members axis
  swept: tuple[str, ...] = ()  # the fields whose values differ between members
  # population_mode, how one program runs the members: "vmap", "loop" (`device.member_map`) or
  # "auto", which the run's plan settles by backend and model (`DeviceSteps.mode`).
  mode: str = "auto"
  splits: bool = False  # population_splits: each member its own training and validation split

  @classmethod
  def of(cls, config: ml_collections.ConfigDict) -> Population:
    """The population of `config`, its fields checked: a positive population, a sweep of known
    fields that change only values (anything else is refused naming the field), a known mode."""
    population, mode = config.get("population", 1), config.get("population_mode", "auto")
    if not isinstance(population, int) or population < 1:
      raise ConfigError(f"population must be a whole number >= 1, got {population!r}.")
    if mode not in MODES:
      raise ConfigError(f"population_mode must be auto, vmap or loop, got {mode!r}.")
    sweep = parse_sweep(config.get("sweep", ""))
    stacked = population > 1 or bool(sweep)  # a sweep of one value is a population of one
    splits = bool(config.get("population_splits", False))
    if splits and not (stacked and settings_lib.task_name(config) == "classify"):
      raise ConfigError("population_splits gives each member of a classifier's population its "
                        "own training and validation split: set --config.population=2 or more "
                        "(or a sweep), or leave population_splits False.")
    if splits and not config.get("validation_fraction", 0.0) > 0:
      raise ConfigError("population_splits carves each member's own validation examples, "
                        "validation_fraction of the training pool: with validation_fraction=0 "
                        "every member would train on the same examples. Set "
                        "--config.validation_fraction=0.1, or leave population_splits False.")
    _check_sweep(config, sweep)
    settings = [dict(zip(sweep, combo)) for combo in itertools.product(*sweep.values())] or [{}]
    pairs = itertools.product(settings, range(population))
    members = tuple(Member(i, config.seed + s, {k: float(v) for k, v in setting.items()})
                    for i, (setting, s) in enumerate(pairs))
    return cls(config.seed, members if stacked else (), tuple(sweep), mode, splits)

  def keys(self) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(init, train, shuffle) keys: the parameters' initialization, each step's randomness and
    each epoch's order. A member takes its seed's, so it starts where a single run of that seed
    would; a population's are stacked, with a leading members axis."""
    if not self.members:
      return _seed_keys(self.seed)
    keys = [_seed_keys(m.seed) for m in self.members]
    return tuple(jnp.stack([k[i] for k in keys]) for i in range(3))

  def alone(self, k: int) -> Population:
    """Member k as a single model."""
    return dataclasses.replace(self, seed=self.members[k].seed, members=(), swept=())


def _check_sweep(config: ml_collections.ConfigDict, sweep: dict[str, list[float]]) -> None:
  flat = traverse_util.flatten_dict(config.to_dict(), sep=".")
  for field, values in sweep.items():
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
    # A member's traced value is used as given, while an int field of a single run would round it.
    if type(flat[field]) is int and any(v != int(v) for v in values):
      raise ConfigError(f"--config.sweep: {field} takes whole numbers, got {values}.")


def _seed_keys(seed: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  init_key, train_key, shuffle_key = jax.random.split(jax.random.PRNGKey(seed), 3)
  return init_key, train_key, shuffle_key
