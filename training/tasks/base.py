"""Tasks: what a run learns, as a plug-in of the one training loop.

The loop (training/modes/train/) owns what every task shares: the device-resident data and its
shuffle, the jitted calls of the train step, checkpoints and exact resumption, the workdir lock,
signals, the progress bar, metrics.jsonl and TensorBoard, and data parallelism. A task owns its
state, its pure train step `(state, batch, rng) -> (state, metrics)`, its evaluation and its
figures. `config.task` names it; each module (or package) beside this one registers one, so a
new task is one new module (plus a config), as a new architecture is one file in nets/.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import nets
from training import members
from training.errors import ConfigError
from training.settings import task_name

Metrics = dict[str, Any]


class Task:
  """The interface the loop calls; subclasses fill it in for one kind of model.

  A task is built for a config and the data's shape (`num_classes`, `image_shape`), so it can
  also be built without data, to restore a checkpoint or to test a step.
  """
  kind = ""  # the nets registry's kind of model this task trains
  reports = False  # whether --mode=report (training/modes/report/) draws this task's runs
  bar_key = "loss"  # the train metric on the progress bar; its log records mark train steps
  epoch_keys: tuple[str, ...] = ("loss",)  # train metrics averaged into the epoch's record
  final_keys: tuple[str, ...] = ()  # test metrics written to metrics.jsonl and TensorBoard
  finetunes = False  # whether `finetune` starts a state from another run's (init_from, freeze)

  def __init__(self, config: ml_collections.ConfigDict, num_classes: int,
               image_shape: tuple[int, ...], population: members.Population):
    self.config, self.num_classes, self.image_shape = config, num_classes, image_shape
    self.population = population  # the run's, derived once from the config

  @classmethod
  def check_config(cls, config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError for the task's own fields' bad values, before any data is loaded."""

  @classmethod
  def check_start(cls, config: ml_collections.ConfigDict,
                  origin: dict[str, Any] | None = None) -> None:
    """Raises ConfigError for what a run about to train cannot start from (tasks.check_start);
    `origin`: where a resumed run's first weights came from, as its checkpoint recorded."""

  def init_state(self, schedule: Callable, init_key, train_key) -> Any:
    """The freshly initialized train state (a flax struct dataclass with `step` and `rng`)."""
    raise NotImplementedError

  def initial_state(self, schedule: Callable, init_keys, train_keys) -> Any:
    """The run's initial state from its population's keys (`Population.keys`): `init_state`'s
    for a single model; for a population, the members' stacked along a leading axis, each as
    `init_state` makes it from its seed's keys (so it starts where a single run of that seed
    would), with its swept values in the state's `hyper` (a task whose state has none refuses
    sweeps in check_config)."""
    population = self.population
    if not population.members:
      return self.init_state(schedule, init_keys, train_keys)
    state = jax.vmap(lambda a, b: self.init_state(schedule, a, b))(init_keys, train_keys)
    if population.swept:
      state = state.replace(hyper={
          f: jnp.asarray([m.values[f] for m in population.members], jnp.float32)
          for f in population.swept})
    return state

  def finetune(self, state: Any, dataset_info: dict[str, Any], schedule: Callable,
               origin: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any] | None]:
    """(The freshly initialized `state` (of the task's population's members along a leading
    axis, if it has any) started from another run's weights (`init_from`, `freeze`), for a task
    whose `finetunes`; the record of where they came from, kept with the run's checkpoints, or
    None). `origin`: that record, read back from the checkpoint a run resumes from."""
    return state, None

  def train_step(self, state: Any, batch: dict[str, Any], rng) -> tuple[Any, Metrics]:
    """One pure update on `batch` ({"image": uint8 NHWC, "label": int32}); jitted by the loop."""
    raise NotImplementedError

  def device_steps(self) -> dict[str, Callable]:
    """The pure steps the device driver jits (compute.device.DeviceSteps' keywords): the train
    step, and the evaluation's sums where the task evaluates through the driver."""
    return {"step": self.train_step}

  def start(self, ds: Any) -> None:
    """Called once as a run is set up, with its dataset (e.g. to prepare what evaluation needs):
    its errors come before the run writes anything."""

  def train_line(self, means: dict[str, float]) -> str:
    """The epoch line's train part, from the epoch's means ("train/<key>")."""
    return "  ".join(f"{k} {means[f'train/{k}']:.4f}" for k in self.epoch_keys)

  def end_epoch(self, run: Any, state: Any, epoch: int, means: dict[str, float]
                ) -> tuple[dict[str, float], str]:
    """Evaluation after an epoch: (its metrics, the epoch line's part for them)."""
    return {}, ""

  def finish(self, run: Any, state: Any) -> tuple[dict[str, Any], str]:
    """The final evaluation: (the summary's "test" entry, the report to print)."""
    raise NotImplementedError

  def headline(self, test: dict[str, Any]) -> str:
    """The run's last line's result, e.g. "test accuracy 99.1%"."""
    raise NotImplementedError


def spread(value: Any, fmt: str) -> str:
  """A metric as text: one number, or a population's values (an array, one per member) as their
  mean +- standard deviation ("99.21 +- 0.04%" for a percentage format)."""
  if np.ndim(value) == 0:
    return format(float(value), fmt)
  mean, std = mean_std(value)
  if fmt.endswith("%"):
    digits = fmt[:-1]
    return f"{mean * 100:{digits}f} +- {std * 100:{digits}f}%"
  return f"{mean:{fmt}} +- {std:{fmt}}"


def mean_std(values: Any) -> tuple[float, float]:
  """(mean, standard deviation) of the members' values (ddof=1: a sample of seeds; 0 for one)."""
  values = np.asarray(values, np.float64)
  return float(values.mean()), float(values.std(ddof=1)) if values.size > 1 else 0.0


_REGISTRY: dict[str, type[Task]] = {}


def register(name: str, task: type[Task]) -> type[Task]:
  _REGISTRY[name] = task
  return task


def names() -> list[str]:
  """The registered tasks, after importing every module of this package (each task registers
  itself when imported: the one import made by name, so that a new task is only a new file)."""
  for info in pkgutil.iter_modules([os.path.dirname(__file__)]):
    importlib.import_module(f"training.tasks.{info.name}")
  return sorted(_REGISTRY)


def check(config: ml_collections.ConfigDict) -> None:
  """The config's task exists, trains its kind of model, and accepts its own fields."""
  name, known = task_name(config), names()
  if name not in known:
    raise ConfigError(f"Unknown task {name!r}; choose one of {', '.join(known)} "
                      "(--config.task), or add a module to training/tasks/.")
  kind, wanted = nets.kind_of(config.model.name), _REGISTRY[name].kind
  if kind != wanted:
    models = ", ".join(nets.names(kind=wanted))
    raise ConfigError(f"Model {config.model.name!r} is a {kind} model, and task {name!r} trains "
                      f"{wanted} models ({models}): change --config.model.name or --config.task.")
  nets.check_values(config.model.name, {k: v for k, v in config.model.items() if k != "name"})
  _REGISTRY[name].check_config(config)


def check_start(config: ml_collections.ConfigDict, origin: dict[str, Any] | None = None) -> None:
  """`check`, and the checks only a run about to train needs (not one restored: the run that
  init_from named may be gone by then, as it may for a resumed run whose `origin` is recorded)."""
  check(config)
  task = _REGISTRY[task_name(config)]
  if (config.get("init_from") or config.get("freeze")) and not task.finetunes:
    raise ConfigError(f"init_from and freeze apply to classifiers, not to the "
                      f"{task_name(config)!r} task: leave them unset.")
  task.check_start(config, origin)


def get(config: ml_collections.ConfigDict, num_classes: int, image_shape: tuple[int, ...],
        population: members.Population) -> Task:
  check(config)
  return _REGISTRY[task_name(config)](config, num_classes, tuple(image_shape), population)


def epoch_means(logged: list[tuple[int, dict[str, float]]], keys: tuple[str, ...]
                ) -> dict[str, float]:
  """Step-weighted means of the log records `logged` ((steps, record) pairs) of one epoch."""
  total = sum(n for n, _ in logged)
  return {f"train/{k}": sum(n * m[f"train/{k}"] for n, m in logged) / total for k in keys}
