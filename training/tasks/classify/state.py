"""The classifier's train state: parameters, optimizer state and step, batch-norm statistics,
the base RNG key and, when kept, a moving average of the weights."""

from __future__ import annotations

import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

import nets


class TrainState(train_state.TrainState):
  """Parameters, optimizer state and step, plus BatchNorm statistics, the base RNG key and,
  when enabled, an exponential moving average of the weights."""
  batch_stats: Any
  rng: jax.Array  # base key; each step folds in its step number
  ema: Any = flax.struct.field(default_factory=dict)  # {"params", "batch_stats"} or {} (off)
  # A population's swept fields, {"learning_rate": value, ...}: read inside the step, one value
  # per member (training/members.py); {} when every member has the config's values, and then
  # not in the checkpoint, whose layout stays that of the runs before populations.
  hyper: Any = flax.struct.field(default_factory=dict, metadata={"saved_if_empty": False})

  def variables(self) -> dict[str, Any]:
    return {"params": self.params, **({"batch_stats": self.batch_stats} if self.batch_stats else {})}

  def eval_variables(self) -> dict[str, Any]:
    """What evaluation uses: the moving average when it is kept, else the live weights."""
    if not self.ema:
      return self.variables()
    return {"params": self.ema["params"],
            **({"batch_stats": self.ema["batch_stats"]} if self.batch_stats else {})}

  def apply_gradients(self, *, grads: Any, **kwargs: Any) -> "TrainState":
    """flax's update, which hands a population's swept values to the optimizer
    (optim.make_optimizer builds one that reads them)."""
    if not self.hyper:
      return super().apply_gradients(grads=grads, **kwargs)
    tx = optax.with_extra_args_support(self.tx)  # one that reads no swept value ignores them
    updates, opt_state = tx.update(grads, self.opt_state, self.params, hyper=self.hyper)
    return self.replace(step=self.step + 1, params=optax.apply_updates(self.params, updates),
                        opt_state=opt_state, **kwargs)


def create_train_state(model: flax.linen.Module, tx: optax.GradientTransformation,
                       image_shape: tuple[int, ...], init_key: jax.Array, train_key: jax.Array,
                       ema: bool = False, hyper: dict[str, Any] | None = None,
                       num_classes: int | None = None) -> TrainState:
  """The state of `model`, initialized on one image of `image_shape`; a model whose logits are
  not `num_classes` wide is refused, as it would otherwise train on the wrong labels."""
  logits, variables = jax.jit(functools.partial(model.init_with_output, train=False))(
      init_key, jnp.zeros((1, *image_shape), jnp.float32))
  if num_classes is not None and logits.shape[-1:] != (num_classes,):
    raise nets.ModelContractError(
        f"{nets.source_of(model)}: the model's logits have shape {logits.shape[1:]} for "
        f"{num_classes} classes: its last layer must have `self.num_classes` units "
        "(docs/extending.md).")
  params, batch_stats = variables["params"], variables.get("batch_stats", {})
  return TrainState.create(
      apply_fn=model.apply, params=params, tx=tx, batch_stats=batch_stats, rng=train_key,
      ema=jax.tree_util.tree_map(jnp.copy, {"params": params, "batch_stats": batch_stats})
      if ema else {}, hyper=hyper or {})
