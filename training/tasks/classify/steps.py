"""The classifier's pure steps: `train_step(state, batch, rng) -> (state, metrics)` and the
evaluation step's sums; jitted by `compute.device.DeviceSteps`."""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from training.data import augment
from training.compute.optim import ema_update
from training.tasks.classify.state import TrainState


Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]


def preprocess(images: jax.Array) -> jax.Array:
  """uint8 pixels -> float32 in [0, 1]."""
  return images.astype(jnp.float32) / 255.0


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
  targets = jax.nn.one_hot(labels, logits.shape[-1])
  if augment.enabled(label_smoothing):
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
  whole-pixel crop and elastic distortion (`augment.random_affine`); `ema_decay`: the decay of
  the moving average of the weights (kept when the state has one). A population's swept values
  (`state.hyper`, one per member) replace the options of the same fields.
  """
  o = swept_options(state.hyper, label_smoothing=label_smoothing, augment_shift=augment_shift,
                    augment_rotate=augment_rotate, augment_zoom=augment_zoom,
                    augment_crop=augment_crop, augment_elastic=augment_elastic,
                    augment_elastic_sigma=augment_elastic_sigma, ema_decay=ema_decay)
  step_rng = jax.random.fold_in(rng, state.step)
  images = augment.random_affine(preprocess(batch["image"]), jax.random.fold_in(step_rng, 1),
                                 max_shift=o["augment_shift"], max_rotate_deg=o["augment_rotate"],
                                 max_zoom=o["augment_zoom"], max_crop=o["augment_crop"],
                                 elastic=o["augment_elastic"],
                                 elastic_sigma=o["augment_elastic_sigma"])
  apply_fn = model_apply(state)

  def loss_fn(params):
    logits, updates = apply_fn(
        {**state.variables(), "params": params}, images, train=True,
        rngs={"dropout": step_rng}, mutable=["batch_stats"])
    loss = cross_entropy(logits, batch["label"], o["label_smoothing"]).mean()
    return loss, (logits, updates)

  (loss, (logits, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  new_state = state.apply_gradients(grads=grads,
                                    batch_stats=updates.get("batch_stats", state.batch_stats))
  if state.ema:
    live = {"params": new_state.params, "batch_stats": new_state.batch_stats}
    new_state = new_state.replace(ema=ema_update(state.ema, live, state.step, o["ema_decay"]))
  metrics = {"loss": loss,
             "accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["label"]),
             "grad_norm": optax.tree_utils.tree_norm(grads)}
  return new_state, metrics


def device_steps(**options: float) -> dict[str, Callable]:
  """The steps `compute.device.DeviceSteps` jits for a classifier: the train step with `options`
  (train_step's keywords), the evaluation's sums of one model and of a population."""
  return {"step": functools.partial(train_step, **options), "eval_step": eval_step,
          "population_eval_step": population_eval_step}


def swept_options(hyper: dict[str, Any], **options: Any) -> dict[str, Any]:
  """The step's `options` with a population's swept values: "augment_shift" is the field
  "augment.shift", "label_smoothing" the field of that name."""
  field = lambda name: name.replace("augment_", "augment.", 1)
  return {k: hyper.get(field(k), v) for k, v in options.items()}


def model_apply(state: TrainState) -> Callable[..., Any]:
  """The state's model's `apply`, with a population's swept model fields (its dropout rates)
  set to this member's values."""
  fields = {k.split(".", 1)[1]: v for k, v in state.hyper.items() if k.startswith("model.")}
  if not fields:
    return state.apply_fn
  return state.apply_fn.__self__.clone(**fields).apply


def eval_step(state: TrainState, batch: Batch, num_classes: int, tta_shift: int = 0) -> Metrics:
  """Sums over the real (mask=1) examples of a padded batch, so partial batches count exactly.
  `tta_shift`: test-time augmentation over shifts by that many pixels (0: off)."""
  return _sums(eval_logits(state, preprocess(batch["image"]), tta_shift), batch, num_classes)


def eval_logits(state: TrainState, images: jax.Array, tta_shift: int = 0) -> jax.Array:
  """One model's evaluation logits of preprocessed `images`; with `tta_shift`, the log of its
  mean softmax over the image and its shifted copies (`augment.test_time_logits`)."""
  apply = lambda x: state.apply_fn(state.eval_variables(), x, train=False)
  return augment.test_time_logits(apply, images, tta_shift) if tta_shift else apply(images)


def population_eval_step(state: TrainState, batch: Batch, num_classes: int,
                         member_map: Callable[[Callable], Callable],
                         tta_shift: int = 0) -> dict[str, Metrics]:
  """`eval_step`'s sums for each member of a population (a leading axis), under "members", and
  for their ensemble, whose class probabilities are the mean of the members', under "ensemble".
  With `tta_shift` each member's probabilities are its mean over the shifted views."""
  logits = members_logits(state, preprocess(batch["image"]), member_map, tta_shift)
  members = jax.vmap(lambda member: _sums(member, batch, num_classes))(logits)
  # As logits, the log of the mean probability has that mean for its softmax.
  return {"members": members, "ensemble": _sums(ensemble_log_probs(logits), batch, num_classes)}


def members_logits(state: TrainState, images: jax.Array,
                   member_map: Callable[[Callable], Callable], tta_shift: int = 0) -> jax.Array:
  """Each member's logits of the same `images` (preprocessed): (members, N, classes). Under
  jax.vmap the members' weights batch into wider layers, as the input is shared: no grouped
  convolutions, unlike training, where each member has a batch of its own."""
  return member_map(lambda s: eval_logits(s, images, tta_shift))(state)


def ensemble_log_probs(logits: jax.Array) -> jax.Array:
  """The log of the mean of the members' class probabilities, from their logits (members first)."""
  return jax.nn.logsumexp(jax.nn.log_softmax(logits), axis=0) - jnp.log(logits.shape[0])


def log_probabilities(state: TrainState, images: jax.Array, population: bool = False,
                      member_map: Callable[[Callable], Callable] = jax.vmap) -> jax.Array:
  """Log class probabilities of preprocessed `images` under the state's evaluation weights: one
  model's, or a population's ensemble (the log of its members' mean probability), its members
  run by `member_map` (device.member_map)."""
  if not population:
    return jax.nn.log_softmax(state.apply_fn(state.eval_variables(), images, train=False))
  return ensemble_log_probs(members_logits(state, images, member_map))


def _sums(logits: jax.Array, batch: Batch, num_classes: int) -> Metrics:
  mask = batch["mask"]
  preds = jnp.argmax(logits, -1)
  loss = cross_entropy(logits, batch["label"])
  confusion = jnp.zeros((num_classes, num_classes), jnp.int32).at[batch["label"], preds].add(
      mask.astype(jnp.int32))
  return {"loss_sum": jnp.sum(loss * mask), "count": jnp.sum(mask), "confusion": confusion}
