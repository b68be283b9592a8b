"""Optimizer and learning-rate schedule from the config, built from optax parts."""

from __future__ import annotations

import re
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

from training.errors import ConfigError

OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "warmup_cosine", "onecycle", "constant_linear")


def make_schedule(config: ml_collections.ConfigDict, steps_per_epoch: int) -> optax.Schedule:
  total = max(1, config.num_epochs * steps_per_epoch)
  lr, end = config.learning_rate, config.learning_rate * config.end_lr_factor
  if config.schedule == "constant":
    return optax.constant_schedule(lr)
  if config.schedule == "cosine":
    return optax.cosine_decay_schedule(lr, total, alpha=config.end_lr_factor)
  if config.schedule == "warmup_cosine":
    warmup = min(total - 1, int(config.warmup_epochs * steps_per_epoch))
    return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, total, end_value=end)
  if config.schedule == "onecycle":
    pct_start = config.get("onecycle_pct_start", 0.3)
    if not 0.0 <= pct_start < 1.0:
      raise ConfigError(f"onecycle_pct_start is the share of the steps spent rising to the peak "
                        f"and must be in [0, 1), got {pct_start}.")
    return optax.cosine_onecycle_schedule(total, lr, pct_start=pct_start)
  if config.schedule == "constant_linear":
    return constant_linear(lr, end, total, config.get("decay_fraction", 0.3))
  raise ConfigError(f"Unknown schedule {config.schedule!r}; choose one of {', '.join(SCHEDULES)}.")


def constant_linear(lr: float, end: float, total_steps: int, decay_fraction: float
                    ) -> optax.Schedule:
  """`lr` held, then over the last `decay_fraction` of `total_steps` linearly to `end`."""
  decay = int(round(decay_fraction * total_steps))
  return optax.join_schedules([optax.constant_schedule(lr),
                               optax.linear_schedule(lr, end, max(decay, 1))],
                              [total_steps - decay])


# The optimizer's fields that a population may sweep (training/members.py): each member's value is
# read from the train state when the update runs.
SWEPT_FIELDS = ("learning_rate", "weight_decay", "grad_clip_norm")


def make_optimizer(config: ml_collections.ConfigDict, schedule: optax.Schedule,
                   loaded: Callable[[str], bool] | None = None, swept: tuple[str, ...] = ()
                   ) -> optax.GradientTransformation:
  """The config's optimizer. With `freeze`, parameters whose path matches it get no update at
  all (no weight decay either, and no clipping share); with `init_lr_multiplier`, the updates of
  the parameters `loaded(path)` says were loaded by init_from are scaled by it (None: all).

  `swept`: the population's swept fields. Those of SWEPT_FIELDS are then read at each update from
  its `hyper=` argument (the state's values, one per member: TrainState.apply_gradients passes
  them), the learning rate as a scale of the schedule (every schedule here is proportional to its
  peak); the structure, and so the optimizer state, is the same for every member.

  The optimizer state's structure depends on the config alone, so a checkpoint of a fine-tuning
  run restores without knowing which parameters were loaded."""
  fields = tuple(f for f in SWEPT_FIELDS if f in swept)
  if not fields:
    return _optimizer(config, schedule, loaded, config.weight_decay, config.grad_clip_norm)

  def build(hyper: dict[str, Any]) -> optax.GradientTransformation:
    scale = hyper.get("learning_rate", config.learning_rate) / config.learning_rate
    return _optimizer(config, lambda count: scale * schedule(count), loaded,
                      hyper.get("weight_decay", config.weight_decay),
                      hyper.get("grad_clip_norm", config.grad_clip_norm), forced=fields)

  def update(updates, state, params=None, *, hyper=None, **extra):
    del extra
    return build(hyper or {}).update(updates, state, params)
  return optax.GradientTransformationExtraArgs(lambda params: build({}).init(params), update)


def _optimizer(config: ml_collections.ConfigDict, schedule: optax.Schedule,
               loaded: Callable[[str], bool] | None, weight_decay: Any, clip_norm: Any,
               forced: tuple[str, ...] = ()) -> optax.GradientTransformation:
  """The base optimizer with the fine-tuning parts; `forced`: swept fields whose transform is
  there whatever this member's value (a value of 0 then leaves the updates unchanged)."""
  opt = _base_optimizer(config, schedule, weight_decay, clip_norm, forced)
  # .get: configs saved in checkpoints before these fields existed lack them.
  multiplier = config.get("init_lr_multiplier", 1.0)
  if multiplier != 1.0:
    opt = optax.chain(opt, _scale_by_path(
        lambda path: multiplier if loaded is None or loaded(path) else 1.0))
  if config.get("freeze", ""):
    pattern = re.compile(config.freeze)
    opt = optax.multi_transform(
        {"trained": opt, "frozen": optax.set_to_zero()},
        lambda params: jax.tree_util.tree_map_with_path(
            lambda path, _: "frozen" if pattern.search(param_path(path)) else "trained", params))
  return opt


def param_path(path: tuple[Any, ...]) -> str:
  """A parameter's tree path as freeze and init_from name it: "Conv_0/kernel"."""
  return "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def _scale_by_path(factor: Callable[[str], float]) -> optax.GradientTransformation:
  """Multiplies each update by `factor(its path)`. Stateless, unlike a multi_transform of the
  loaded and the new parameters, so the state does not depend on which were loaded."""
  def update(updates, state, params=None):
    del params
    return jax.tree_util.tree_map_with_path(
        lambda path, u: u * factor(param_path(path)), updates), state
  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def _base_optimizer(config: ml_collections.ConfigDict, schedule: optax.Schedule, wd: Any,
                    clip_norm: Any, forced: tuple[str, ...] = ()) -> optax.GradientTransformation:
  name = config.optimizer
  # Configs saved before these fields existed (in older checkpoints) used optax's defaults.
  b1, b2 = config.get("adam_b1", 0.9), config.get("adam_b2", 0.999)
  for field, value in (("adam_b1", b1), ("adam_b2", b2)):
    if not 0.0 <= value < 1.0:
      raise ConfigError(f"{field} is a moment decay rate and must be in [0, 1), got {value}.")
  if name == "adamw":
    opt = optax.adamw(schedule, b1=b1, b2=b2, weight_decay=wd, mask=_decay_mask)
  elif name in ("sgd", "momentum", "adam"):
    if name == "adam":
      opt = optax.adam(schedule, b1=b1, b2=b2)
    else:
      opt = optax.sgd(schedule, momentum=config.momentum if name == "momentum" else None,
                      nesterov=config.nesterov and name == "momentum")
    if "weight_decay" in forced or wd:  # classic L2: added to the gradient before the update rule
      opt = optax.chain(optax.add_decayed_weights(wd, mask=_decay_mask), opt)
  else:
    raise ConfigError(f"Unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}.")
  if "grad_clip_norm" in forced:  # a member's 0 means no clipping
    opt = optax.chain(optax.clip_by_global_norm(jnp.where(clip_norm > 0, clip_norm, jnp.inf)), opt)
  elif clip_norm:
    opt = optax.chain(optax.clip_by_global_norm(clip_norm), opt)
  return opt


def _decay_mask(params):
  """Decays weight matrices and kernels only: biases and norm scales are left alone."""
  return jax.tree_util.tree_map(lambda p: p.ndim > 1, params)


def ema_update(average: Any, live: Any, step: jax.Array, decay: float) -> Any:
  """The moving average `average` moved towards the `live` weights after step `step`, with the
  usual warm-up: early on it follows the weights closely, so that a short run's average is not
  dominated by the random initialization."""
  decay = jnp.minimum(decay, (1.0 + step) / (10.0 + step))
  return jax.tree_util.tree_map(lambda e, p: decay * e + (1.0 - decay) * p, average, live)
