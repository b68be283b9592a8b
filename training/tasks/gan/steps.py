"""GAN train state and the pure, jittable GAN train step (one discriminator and one generator
update per batch) and sampling; the loop that drives them lives elsewhere.

The models are those of nets/gan.py: one module with `generate` and `discriminate` methods whose
parameters split into {"generator": ..., "discriminator": ...}.
"""

from __future__ import annotations

import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from training.compute.optim import ema_update

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]
HALVES = ("generator", "discriminator")


class GanState(flax.struct.PyTreeNode):
  """Both networks' parameters, BatchNorm statistics and optimizer states, split by network."""
  step: jax.Array
  params: dict[str, Any]  # {"generator": ..., "discriminator": ...}
  batch_stats: dict[str, Any]  # the same split; a network without BatchNorm has {}
  opt_state: dict[str, Any]  # {"generator": tx_g's state, "discriminator": tx_d's state}
  rng: jax.Array  # base key; each step folds in its step number
  apply_fn: Any = flax.struct.field(pytree_node=False)
  tx_g: optax.GradientTransformation = flax.struct.field(pytree_node=False)
  tx_d: optax.GradientTransformation = flax.struct.field(pytree_node=False)
  latent_dim: int = flax.struct.field(pytree_node=False, default=64)
  # A moving average of the generator's {"params", "batch_stats"}, which sampling uses; {}: off.
  ema: dict[str, Any] = flax.struct.field(default_factory=dict)

  def variables(self, half: str, params: Any = None, batch_stats: Any = None) -> dict[str, Any]:
    """The variables that `half`'s method reads: its parameters and statistics (or those given)."""
    own = {"params": {half: self.params[half] if params is None else params}}
    stats = self.batch_stats[half] if batch_stats is None else batch_stats
    if stats:
      own["batch_stats"] = {half: stats}
    return own


def create_gan_state(model: flax.linen.Module, tx_g: optax.GradientTransformation,
                     tx_d: optax.GradientTransformation, init_key: jax.Array,
                     train_key: jax.Array, ema: bool = False) -> GanState:
  """Initializes both networks of `model` (a nets/gan.py module) and their optimizers; `ema`:
  also keep a moving average of the generator (train_step's `ema_decay`)."""
  z = jnp.zeros((1, model.latent_dim), jnp.float32)
  variables = jax.jit(functools.partial(model.init, train=False))(
      init_key, z, jnp.zeros((1,), jnp.int32))
  split = lambda tree: {half: tree.get(half, {}) for half in HALVES}
  params, batch_stats = split(variables["params"]), split(variables.get("batch_stats", {}))
  opt_state = {"generator": tx_g.init(params["generator"]),
               "discriminator": tx_d.init(params["discriminator"])}
  return GanState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                  opt_state=opt_state, rng=train_key, apply_fn=model.apply, tx_g=tx_g, tx_d=tx_d,
                  latent_dim=model.latent_dim,
                  ema=jax.tree_util.tree_map(jnp.copy, {"params": params["generator"],
                                                        "batch_stats": batch_stats["generator"]})
                  if ema else {})


def to_unit(images: jax.Array) -> jax.Array:
  """uint8 pixels -> float32 in [-1, 1], the generator's tanh range."""
  return images.astype(jnp.float32) / 127.5 - 1.0


def to_uint8(images: jax.Array) -> jax.Array:
  return jnp.round((jnp.clip(images, -1.0, 1.0) + 1.0) * 127.5).astype(jnp.uint8)


def _apply(state: GanState, half: str, method: str, params: Any, *args: Any, train: bool
           ) -> tuple[jax.Array, Any]:
  """`method` of the model with `half`'s variables; returns (output, its new batch statistics)."""
  variables = state.variables(half, params)
  if not train:
    return state.apply_fn(variables, *args, train=False, method=method), state.batch_stats[half]
  out, updates = state.apply_fn(variables, *args, train=True, method=method,
                                mutable=["batch_stats"])
  return out, updates.get("batch_stats", {}).get(half, state.batch_stats[half])


def _bce(logits: jax.Array, target: float) -> jax.Array:
  return optax.sigmoid_binary_cross_entropy(logits, jnp.full_like(logits, target)).mean()


LOSSES = ("bce", "hinge")


def _d_loss(real_logits, fake_logits, loss: str, label_smoothing: float) -> jax.Array:
  if loss == "hinge":
    return jnp.mean(jax.nn.relu(1.0 - real_logits)) + jnp.mean(jax.nn.relu(1.0 + fake_logits))
  return _bce(real_logits, 1.0 - label_smoothing) + _bce(fake_logits, 0.0)


def _g_loss(fake_logits, loss: str) -> jax.Array:
  return -jnp.mean(fake_logits) if loss == "hinge" else _bce(fake_logits, 1.0)


def train_step(state: GanState, batch: Batch, rng: jax.Array, *, label_smoothing: float = 0.0,
               ema_decay: float = 0.0, loss: str = "bce") -> tuple[GanState, Metrics]:
  """One discriminator update, then one generator update against the updated discriminator.

  The fakes are generated once: the discriminator sees them as constants, and the generator's
  gradient flows back through the same forward pass (its VJP). `loss`: "bce" (binary cross-
  entropy, the non-saturating generator loss; `label_smoothing` lowers the real images' target
  to 1 - label_smoothing, one-sided) or "hinge" (Lim & Ye's; no smoothing).
  Fakes get the batch's labels, so the conditional model sees the data's class frequencies.
  `ema_decay`: update the generator's moving average (needs a state made with `ema=True`).
  """
  if loss not in LOSSES:
    raise ValueError(f"Unknown GAN loss {loss!r}; choose one of {', '.join(LOSSES)}.")
  step_rng = jax.random.fold_in(rng, state.step)
  labels = batch["label"]
  real = to_unit(batch["image"])
  z = jax.random.normal(step_rng, (labels.shape[0], state.latent_dim), jnp.float32)

  def generate(g_params):
    return _apply(state, "generator", "generate", g_params, z, labels, train=True)
  fake, g_vjp, g_stats = jax.vjp(generate, state.params["generator"], has_aux=True)

  def d_loss_fn(d_params):
    images = jnp.concatenate([real, jax.lax.stop_gradient(fake)])
    logits, stats = _apply(state, "discriminator", "discriminate", d_params, images,
                           jnp.concatenate([labels, labels]), train=True)
    real_logits, fake_logits = jnp.split(logits, 2)
    return (_d_loss(real_logits, fake_logits, loss, label_smoothing),
            (real_logits, fake_logits, stats))

  (d_loss, (real_logits, fake_logits, d_stats)), d_grads = jax.value_and_grad(
      d_loss_fn, has_aux=True)(state.params["discriminator"])
  d_updates, d_opt = state.tx_d.update(d_grads, state.opt_state["discriminator"],
                                       state.params["discriminator"])
  d_params = optax.apply_updates(state.params["discriminator"], d_updates)

  def g_loss_fn(images):
    logits, _ = _apply(state, "discriminator", "discriminate", d_params, images, labels,
                       train=True)
    return _g_loss(logits, loss)

  g_loss, image_grads = jax.value_and_grad(g_loss_fn)(fake)
  (g_grads,) = g_vjp(image_grads)
  g_updates, g_opt = state.tx_g.update(g_grads, state.opt_state["generator"],
                                       state.params["generator"])
  new_state = state.replace(
      step=state.step + 1,
      params={"generator": optax.apply_updates(state.params["generator"], g_updates),
              "discriminator": d_params},
      batch_stats={"generator": g_stats, "discriminator": d_stats},
      opt_state={"generator": g_opt, "discriminator": d_opt})
  if ema_decay:
    live = {"params": new_state.params["generator"], "batch_stats": g_stats}
    new_state = new_state.replace(ema=ema_update(state.ema, live, state.step, ema_decay))
  metrics = {"d_loss": d_loss, "g_loss": g_loss,
             "d_real": jnp.mean(jax.nn.sigmoid(real_logits)),
             "d_fake": jnp.mean(jax.nn.sigmoid(fake_logits)),
             "g_grad_norm": optax.tree_utils.tree_norm(g_grads),
             "d_grad_norm": optax.tree_utils.tree_norm(d_grads)}
  return new_state, metrics


def generate(state: GanState, z: jax.Array, labels: jax.Array) -> jax.Array:
  """(N, latent_dim) noise and (N,) labels -> (N, H, W, C) uint8 images (inference mode; from
  the moving average when the state keeps one)."""
  variables = (state.variables("generator", state.ema["params"], state.ema["batch_stats"])
               if state.ema else state.variables("generator"))
  images = state.apply_fn(variables, z, labels, train=False, method="generate")
  return to_uint8(images)
