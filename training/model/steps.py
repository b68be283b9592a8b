"""The classifier's pure steps: `train_step(state, batch, rng) -> (state, metrics)` and the
evaluation step's sums; jitted by `device.DeviceSteps`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from training.data import augment
from training.model.state import TrainState, ema_update


Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]


def preprocess(images: jax.Array) -> jax.Array:
  """uint8 pixels -> float32 in [0, 1]."""
  return images.astype(jnp.float32) / 255.0


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
  targets = jax.nn.one_hot(labels, logits.shape[-1])
  if label_smoothing:
    targets = optax.smooth_labels(targets, label_smoothing)
  return optax.softmax_cross_entropy(logits, targets)


def train_step(state: TrainState, batch: Batch, rng: jax.Array, *,
               label_smoothing: float = 0.0, augment_shift: float = 0.0,
               augment_rotate: float = 0.0, augment_zoom: float = 0.0,
               augment_crop: float = 0, augment_elastic: float = 0.0,
               augment_elastic_sigma: float = 4.0, ema_decay: float = 0.0
               ) -> tuple[TrainState, Metrics]:
  """One optimizer step on `batch`; pure, with per-step randomness from fold_in(rng, step).

  `augment_*`: each image's random shift (pixels), rotation (degrees), zoom (relative),
  whole-pixel crop and elastic distortion (`augment.random_affine`); `ema_decay`: keep
  an exponential moving average of the weights (needs a state made with `ema=True`).
  """
  step_rng = jax.random.fold_in(rng, state.step)
  images = augment.random_affine(preprocess(batch["image"]), jax.random.fold_in(step_rng, 1),
                                 max_shift=augment_shift, max_rotate_deg=augment_rotate,
                                 max_zoom=augment_zoom, max_crop=augment_crop,
                                 elastic=augment_elastic, elastic_sigma=augment_elastic_sigma)

  def loss_fn(params):
    logits, updates = state.apply_fn(
        {**state.variables(), "params": params}, images, train=True,
        rngs={"dropout": step_rng}, mutable=["batch_stats"])
    loss = cross_entropy(logits, batch["label"], label_smoothing).mean()
    return loss, (logits, updates)

  (loss, (logits, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  new_state = state.apply_gradients(grads=grads,
                                    batch_stats=updates.get("batch_stats", state.batch_stats))
  if ema_decay:
    live = {"params": new_state.params, "batch_stats": new_state.batch_stats}
    new_state = new_state.replace(ema=ema_update(state.ema, live, state.step, ema_decay))
  metrics = {"loss": loss,
             "accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["label"]),
             "grad_norm": optax.tree_utils.tree_norm(grads)}
  return new_state, metrics


def eval_step(state: TrainState, batch: Batch, num_classes: int, tta_shift: int = 0) -> Metrics:
  """Sums over the real (mask=1) examples of a padded batch, so partial batches count exactly.
  `tta_shift`: test-time augmentation over shifts by that many pixels (0: off)."""
  apply = lambda x: state.apply_fn(state.eval_variables(), x, train=False)
  images = preprocess(batch["image"])
  logits = augment.test_time_logits(apply, images, tta_shift) if tta_shift else apply(images)
  mask = batch["mask"]
  preds = jnp.argmax(logits, -1)
  loss = cross_entropy(logits, batch["label"])
  confusion = jnp.zeros((num_classes, num_classes), jnp.int32).at[batch["label"], preds].add(
      mask.astype(jnp.int32))
  return {"loss_sum": jnp.sum(loss * mask), "count": jnp.sum(mask), "confusion": confusion}
