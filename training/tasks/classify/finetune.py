"""Fine-tuning: start a run from another run's checkpoint (`init_from`), train only part of the
model (`freeze`), and scale the learning rate of what was loaded (`init_lr_multiplier`).

`initialize` is one step of a run's set-up, through the task's `finetune`: it takes the freshly
initialised state and returns it with the other run's matching parameters and batch-norm
statistics loaded, and the record of what it loaded (the run's `origin`, saved with each of its
checkpoints). A run that resumes from its own checkpoint passes that record back instead: its
checkpoint already holds the fine-tuned weights, so the source run is not read again (it may
have moved or gone on training).
"""

from __future__ import annotations

import functools
import os
import re
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import traverse_util

from training.console import log
from training.errors import ConfigError
from training.members import Population
from training.compute import build, device, optim
from training.tasks.classify.state import TrainState
from training.tasks.restore import Restored, restore

WHICH = ("best", "latest")  # besides a step number
_MAX_LINES = 20  # mismatching parameters listed in an error


def parse_init_from(init_from: str) -> tuple[str, str, int | None]:
  """("runs/pre", "latest", None) of "runs/pre:latest"; a bare directory means its best
  checkpoint; a trailing ":member=K" picks member K of a population ("runs/pop:member=2")."""
  member = None
  head, sep, tail = init_from.rpartition(":")
  if sep and tail.startswith("member="):
    if not tail[len("member="):].isdigit():
      raise ConfigError(f"init_from={init_from!r}: member= takes a member's number, e.g. "
                        f"{head}:member=0.")
    init_from, member = head, int(tail[len("member="):])
  directory, sep, which = init_from.rpartition(":")
  if sep and (which in WHICH or which.isdigit()):
    return directory, which, member
  return init_from, "best", member


def validate(config: ml_collections.ConfigDict, origin: dict[str, Any] | None = None) -> None:
  """The fine-tuning fields' checks that need no model (the task's check_start); the source's
  checkpoints only for a run that will read them (not one resumed with its `origin` recorded)."""
  init_from, freeze = config.get("init_from", ""), config.get("freeze", "")
  multiplier = config.get("init_lr_multiplier", 1.0)
  if freeze:
    try:
      re.compile(freeze)
    except re.error as e:
      raise ConfigError(f"freeze={freeze!r} is not a regular expression ({e}); give one "
                        "matched against parameter paths, e.g. --config.freeze='^Conv_'.") from e
  if not multiplier > 0:
    raise ConfigError(f"init_lr_multiplier must be positive, got {multiplier}; to keep layers "
                      "fixed, use --config.freeze=REGEX.")
  if multiplier != 1.0 and not init_from:
    raise ConfigError("init_lr_multiplier scales the learning rate of the parameters loaded by "
                      "init_from: set --config.init_from=DIR too, or leave it at 1.0.")
  if init_from and not origin:
    directory, _, _ = parse_init_from(init_from)
    if not os.path.isdir(os.path.join(directory, "checkpoints")):
      raise ConfigError(f"init_from={init_from!r}: {directory!r} holds no checkpoints/; give "
                        "the workdir of a trained run, optionally with :best, :latest or :STEP "
                        "(e.g. --config.init_from=runs/cnn:best).")


def initialize(config: ml_collections.ConfigDict, state: TrainState,
               dataset_info: dict[str, Any], schedule: optax.Schedule,
               population: Population, origin: dict[str, Any] | None = None
               ) -> tuple[TrainState, dict[str, Any] | None]:
  """(`state` (freshly initialised; of the `population`'s members along a leading axis) with
  `init_from`'s matching parameters and batch-norm statistics (the same in every member), the
  head re-initialised if the classes differ, and the optimizer rebuilt to scale the loaded
  parameters' learning rate; the record of what was loaded, or None without `init_from`).
  Checks `freeze` against the model's parameter paths. `origin`: that record, kept with the
  checkpoint a run resumes from, which then holds the weights: only the optimizer is rebuilt."""
  if not (config.get("init_from") or config.get("freeze")):
    return state, None
  size = len(population.members)
  one = device.take(state, 0) if size else state  # the shapes of one member
  paths = _paths(one.params)
  frozen = _frozen(config.freeze, paths) if config.freeze else []
  if not config.init_from:
    log(f"Frozen at their initialisation: {len(frozen)} of {len(paths)} parameter "
                 f"arrays (freeze={config.freeze!r}).")
    return state, None
  if origin:
    log(f"Fine-tuned from the {origin['checkpoint']} checkpoint (step {origin['step']}) of "
        f"{origin['directory']}: this run's checkpoints hold those weights, so the source is not "
        "read again.")
  else:
    state, origin = _load(config, state, one, dataset_info, frozen, size)
  head = set(origin["head"])
  tx = optim.make_optimizer(config, schedule, loaded=lambda path: f"params/{path}" not in head,
                            swept=population.swept)
  # A resumed run's fresh optimizer state and average are restored over, their structure kept.
  params, batch_stats = state.params, state.batch_stats
  return state.replace(
      tx=tx, opt_state=jax.vmap(tx.init)(params) if size else tx.init(params),
      ema=jax.tree_util.tree_map(jnp.copy, {"params": params, "batch_stats": batch_stats})
      if state.ema else state.ema), origin


def _load(config: ml_collections.ConfigDict, state: TrainState, one: TrainState,
          dataset_info: dict[str, Any], frozen: list[str], size: int
          ) -> tuple[TrainState, dict[str, Any]]:
  """(`state` with init_from's weights but the head's, in each of its `size` members (0: a single
  model), the record of what was loaded); `one`: one member's state, for the shapes."""
  try:
    source = _source(config.init_from)
  except ConfigError as e:
    raise ConfigError(f"init_from={config.init_from!r}: {e}") from e
  head = _head(config, one, dataset_info, source)
  ours = {"params": state.params, "batch_stats": state.batch_stats}
  theirs = (source.state.ema if source.state.ema else  # what the source run evaluated
            {"params": source.state.params, "batch_stats": source.state.batch_stats})
  if size:  # every member starts from the same loaded weights
    theirs = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (size, *x.shape)), theirs)
  merged = _merge(ours, theirs, head)
  log(_summary(config, source, dataset_info, {"params": one.params,
                                              "batch_stats": one.batch_stats}, head, frozen))
  return (state.replace(params=merged["params"], batch_stats=merged["batch_stats"]),
          {"init_from": config.init_from, "checkpoint": source.which, "step": source.step,
           "directory": os.path.abspath(parse_init_from(config.init_from)[0]),
           "head": sorted(head)})


def _source(init_from: str) -> Restored:
  """The checkpoint init_from names, as one model: a population's member `member=K`."""
  directory, which, member = parse_init_from(init_from)
  source = restore(directory, which, task="classify")
  size = len(source.members)
  if size and member is None:
    raise ConfigError(f"{directory} holds a population of {size} members: pick one with "
                      f"{init_from}:member=K (K from 0 to {size - 1}).")
  if member is not None and (not size or member >= size):
    raise ConfigError(f"{directory} has no member {member}: it holds "
                      + (f"{size} members (0 to {size - 1})." if size else "a single model; "
                         "leave out :member=K."))
  if size:
    source.state = device.take(source.state, member)
  return source


def _paths(tree: Any) -> list[str]:
  return [optim.param_path(path) for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _frozen(freeze: str, paths: list[str]) -> list[str]:
  """The parameters `freeze` matches; matching none or all of them is a mistake."""
  pattern = re.compile(freeze)
  frozen = [p for p in paths if pattern.search(p)]
  if not frozen or len(frozen) == len(paths):
    what = ("none of this model's parameters" if not frozen else
            "every parameter of this model, so nothing would train")
    raise ConfigError(f"freeze={freeze!r} matches {what}; its parameter paths are: "
                      f"{', '.join(paths)}.")
  return frozen


def _shapes(config: ml_collections.ConfigDict, image_shape: tuple[int, ...],
            num_classes: int) -> dict[str, tuple[int, ...]]:
  """{"params/Dense_1/kernel": shape, ...} of this config's model for `num_classes` classes,
  without computing anything."""
  model = build.build_model(config, num_classes)
  variables = jax.eval_shape(functools.partial(model.init, train=False), jax.random.PRNGKey(0),
                             jnp.zeros((1, *image_shape), jnp.float32))
  return _tree_shapes(variables)


def _tree_shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {optim.param_path(path): tuple(leaf.shape) for path, leaf in flat}


def _head(config: ml_collections.ConfigDict, state: TrainState,
          dataset_info: dict[str, Any], source: Restored) -> set[str]:
  """The variables to keep freshly initialised: those whose shape depends on the number of
  classes (the classifier head), when the source was trained on other classes. Refuses a source
  whose other variables do not match this config's model."""
  image_shape = tuple(dataset_info["image_shape"])
  theirs_info = source.dataset_info
  n, n_theirs = dataset_info["num_classes"], theirs_info["num_classes"]
  ours = _tree_shapes({"params": state.params, "batch_stats": state.batch_stats})
  # What this config's model would hold had it been trained on the source's classes, and what it
  # holds for one class more than either: the variables whose shapes differ are the head.
  source_classes, by_class = (_shapes(config, image_shape, k)
                              for k in (n_theirs, max(n, n_theirs) + 1))
  expected = ours if n_theirs == n else source_classes
  theirs = _tree_shapes(source.state.variables())
  wrong = sorted(k for k in expected.keys() | theirs.keys() if theirs.get(k) != expected.get(k))
  if wrong:
    raise _mismatch(config, source, wrong, theirs, ours)
  head = {k for k in ours if by_class[k] != ours[k]}
  same = n == n_theirs and (list(theirs_info.get("class_names", [])) ==
                            list(dataset_info.get("class_names", [])))
  return set() if same else head


def _mismatch(config: ml_collections.ConfigDict, source: Restored, wrong: list[str],
              theirs: dict[str, tuple], ours: dict[str, tuple]) -> ConfigError:
  lines = [f"  {k}: checkpoint {theirs.get(k, 'missing')} vs this config "
           f"{ours.get(k, 'missing')}" for k in wrong]
  model = ", ".join(f"{k}={v!r}" for k, v in source.config.model.items())
  return ConfigError(
      f"init_from={config.init_from!r}: the {source.which} checkpoint (step {source.step}) was "
      f"written by a model of other shapes than this config's; mismatching variables (the "
      f"classifier head excepted):\n" + "\n".join(lines[:_MAX_LINES])
      + (f"\n  ... and {len(lines) - _MAX_LINES} more" if len(lines) > _MAX_LINES else "")
      + f"\nFine-tune with that run's model settings ({model}) on images of its shape "
      f"{tuple(source.dataset_info['image_shape'])}, or start from another run.")


def _merge(ours: dict[str, Any], theirs: dict[str, Any], keep: set[str]) -> dict[str, Any]:
  """`theirs`, except the variables in `keep` (and any our model has alone: none after
  `_head`'s check), which come from `ours`."""
  flat_ours = traverse_util.flatten_dict(ours, sep="/")
  flat_theirs = traverse_util.flatten_dict(theirs, sep="/")
  merged = {k: v if k in keep or k not in flat_theirs else flat_theirs[k]
            for k, v in flat_ours.items()}
  out = traverse_util.unflatten_dict(merged, sep="/")
  return {"params": out.get("params", {}), "batch_stats": out.get("batch_stats", {})}


def _classes(info: dict[str, Any]) -> str:
  names = info.get("class_names", [])
  return f"{info['num_classes']} classes" + (f" ({', '.join(map(str, names))})"
                                             if 0 < len(names) <= 10 else "")


def _summary(config: ml_collections.ConfigDict, source: Restored,
             dataset_info: dict[str, Any], ours: dict[str, Any], head: set[str],
             frozen: list[str]) -> str:
  names = list(_tree_shapes(ours))
  loaded = [k for k in names if k.startswith("params/") and k not in head]
  stats = [k for k in names if k.startswith("batch_stats/") and k not in head]
  line = (f"Fine-tuning from the {source.which} checkpoint (step {source.step}) of "
          f"{parse_init_from(config.init_from)[0]}: loaded {len(loaded)} of "
          f"{sum(k.startswith('params/') for k in names)} parameter arrays"
          + (f" and {len(stats)} batch-norm statistics" if stats else ""))
  if head:
    line += (f"; re-initialised the head ({', '.join(sorted(k.split('/', 1)[1] for k in head))})"
             f" for this run's {_classes(dataset_info)}, not the checkpoint's "
             f"{_classes(source.dataset_info)}")
  if frozen:
    line += f"; frozen: {len(frozen)} parameter arrays (freeze={config.freeze!r})"
  if config.init_lr_multiplier != 1.0:
    line += f"; learning rate x{config.init_lr_multiplier:g} for the loaded ones"
  return line
