"""Train state, the pure train and eval steps, and their jitted device-resident drivers."""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from training import augment
from training.errors import ConfigError

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]


class TrainState(train_state.TrainState):
  """Parameters, optimizer state and step, plus BatchNorm statistics, the base RNG key and,
  when enabled, an exponential moving average of the weights."""
  batch_stats: Any
  rng: jax.Array  # base key; each step folds in its step number
  ema: Any = flax.struct.field(default_factory=dict)  # {"params", "batch_stats"} or {} (off)

  def variables(self) -> dict[str, Any]:
    return {"params": self.params, **({"batch_stats": self.batch_stats} if self.batch_stats else {})}

  def eval_variables(self) -> dict[str, Any]:
    """What evaluation uses: the moving average when it is kept, else the live weights."""
    if not self.ema:
      return self.variables()
    return {"params": self.ema["params"],
            **({"batch_stats": self.ema["batch_stats"]} if self.batch_stats else {})}


def create_train_state(model: flax.linen.Module, tx: optax.GradientTransformation,
                       image_shape: tuple[int, ...], init_key: jax.Array, train_key: jax.Array,
                       ema: bool = False) -> TrainState:
  variables = jax.jit(functools.partial(model.init, train=False))(
      init_key, jnp.zeros((1, *image_shape), jnp.float32))
  params, batch_stats = variables["params"], variables.get("batch_stats", {})
  return TrainState.create(
      apply_fn=model.apply, params=params, tx=tx, batch_stats=batch_stats, rng=train_key,
      ema=jax.tree_util.tree_map(jnp.copy, {"params": params, "batch_stats": batch_stats})
      if ema else {})


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
               augment_rotate: float = 0.0, ema_decay: float = 0.0
               ) -> tuple[TrainState, Metrics]:
  """One optimizer step on `batch`; pure, with per-step randomness from fold_in(rng, step).

  `augment_*`: random shift (pixels) and rotation (degrees) of each image; `ema_decay`: keep
  an exponential moving average of the weights (needs a state made with `ema=True`).
  """
  step_rng = jax.random.fold_in(rng, state.step)
  images = augment.random_affine(preprocess(batch["image"]), jax.random.fold_in(step_rng, 1),
                                 max_shift=augment_shift, max_rotate_deg=augment_rotate)

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
    # The usual warm-up: early on the average follows the weights closely, so that a short run's
    # average is not dominated by the random initialization.
    decay = jnp.minimum(ema_decay, (1.0 + state.step) / (10.0 + state.step))
    live = {"params": new_state.params, "batch_stats": new_state.batch_stats}
    new_state = new_state.replace(ema=jax.tree_util.tree_map(
        lambda e, p: decay * e + (1.0 - decay) * p, state.ema, live))
  metrics = {"loss": loss,
             "accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["label"]),
             "grad_norm": optax.tree_utils.tree_norm(grads)}
  return new_state, metrics


def eval_step(state: TrainState, batch: Batch, num_classes: int) -> Metrics:
  """Sums over the real (mask=1) examples of a padded batch, so partial batches count exactly."""
  logits = state.apply_fn(state.eval_variables(), preprocess(batch["image"]), train=False)
  mask = batch["mask"]
  preds = jnp.argmax(logits, -1)
  loss = cross_entropy(logits, batch["label"])
  confusion = jnp.zeros((num_classes, num_classes), jnp.int32).at[batch["label"], preds].add(
      mask.astype(jnp.int32))
  return {"loss_sum": jnp.sum(loss * mask), "count": jnp.sum(mask), "confusion": confusion}


class DeviceSteps:
  """Jitted drivers that slice batches out of device-resident arrays: no host round trip per step.

  The dataset lives on the devices (MNIST is 47 MB); each epoch's shuffle is a permutation made on
  device, and a step gathers its batch by index. Batches are sharded over the mesh's `data` axis,
  parameters replicated. Every device holds the whole dataset and gathers only its own slice of
  each global batch, so in a multi-process run each process feeds its part and no example
  crosses hosts.
  """

  def __init__(self, mesh: Mesh, batch_size: int, eval_batch_size: int, num_classes: int, *,
               chunk: int = 1, steps_per_epoch: int = 0, step: Callable | None = None,
               **step_options: float):
    """`step`: the task's pure train step (state, batch, rng) -> (state, metrics); by default
    the classifier's `train_step` with `step_options`."""
    n = mesh.shape["data"]
    for what, size in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
      if size % n:
        raise ConfigError(f"{what}={size} does not divide over the {n} devices of the data axis; "
                         f"set --config.{what} to a multiple of {n}.")
    self.mesh, self.batch_size, self.eval_batch_size = mesh, batch_size, eval_batch_size
    self.replicated = NamedSharding(mesh, P())
    self.sharded = NamedSharding(mesh, P("data"))
    step = step or functools.partial(train_step, **step_options)
    evaluate = functools.partial(eval_step, num_classes=num_classes)

    def gather(images, labels, perm, i):
      idx = jax.lax.with_sharding_constraint(
          jax.lax.dynamic_slice_in_dim(perm, i * batch_size, batch_size), self.sharded)
      return jax.lax.with_sharding_constraint({"image": images[idx], "label": labels[idx]},
                                              self.sharded)

    @functools.partial(jax.jit, donate_argnums=0)
    def train(state, images, labels, perm, i):
      return step(state, gather(images, labels, perm, i), state.rng)

    @functools.partial(jax.jit, donate_argnums=5)
    def evaluate_batch(state, images, labels, mask, i, totals):
      sl = functools.partial(jax.lax.dynamic_slice_in_dim, start_index=i * eval_batch_size,
                             slice_size=eval_batch_size)
      batch = jax.lax.with_sharding_constraint(
          {"image": sl(images), "label": sl(labels), "mask": sl(mask)}, self.sharded)
      return jax.tree_util.tree_map(jnp.add, totals, evaluate(state, batch))

    @functools.partial(jax.jit, donate_argnums=0, static_argnums=6)
    def train_scan(state, images, labels, perm, start, count, length):
      # A fixed number of steps, of which the first `count` count: one program serves every call
      # of this length, wherever it starts. A select, not lax.cond, keeps the rest from updating
      # the state (a cond's predicate goes to the host every step on GPU).
      def body(state, j):
        new, metrics = train(state, images, labels, perm, start + j)
        keep = j < count
        return jax.tree_util.tree_map(lambda a, b: jnp.where(keep, a, b), new, state), metrics
      return jax.lax.scan(body, state, jnp.arange(length))

    # Several CPU devices in one process (XLA_FLAGS=--xla_force_host_platform_device_count=N):
    # calls with collectives that overlapped deadlocked on jaxlib 0.7.1-0.11.2, so there each
    # call finishes before the next starts (docs/performance.md).
    if mesh.devices.flat[0].platform == "cpu" and len(mesh.local_devices) > 1:
      one_at_a_time = lambda f: lambda *args: jax.block_until_ready(f(*args))
      train, train_scan, evaluate_batch = map(one_at_a_time, (train, train_scan, evaluate_batch))
    self._train, self._train_scan, self._evaluate_batch = train, train_scan, evaluate_batch
    self.chunk = chunk
    self.tail = steps_per_epoch % chunk  # the length of an epoch's last call, if not `chunk`
    self.gather = jax.jit(gather)  # the batch of step i, as the train step sees it
    self.permutation = jax.jit(lambda key, epoch, n: jax.random.permutation(
        jax.random.fold_in(key, epoch), n), static_argnums=2)
    # Host arrays: each evaluation gets fresh device buffers, as the batches donate them.
    self._zeros = {"loss_sum": np.zeros((), np.float32), "count": np.zeros((), np.float32),
                   "confusion": np.zeros((num_classes, num_classes), np.int32)}

  def put(self, x: Any) -> Any:
    """Host arrays (the same in every process) -> arrays replicated on the whole mesh."""
    def one(a):
      a = np.asarray(a)
      return jax.make_array_from_callback(a.shape, self.replicated, lambda idx: a[idx])
    return jax.tree_util.tree_map(one, x)

  def put_train(self, images, labels) -> tuple[jax.Array, jax.Array]:
    return self.put(images), self.put(labels)

  def put_eval(self, images, labels) -> tuple[jax.Array, ...]:
    """Pads to whole eval batches (with mask 0), so every example is evaluated exactly once."""
    n = len(labels)
    pad = -n % self.eval_batch_size
    images = np.concatenate([images, np.zeros((pad, *images.shape[1:]), images.dtype)])
    labels = np.concatenate([labels, np.zeros((pad,), labels.dtype)])
    mask = np.concatenate([np.ones((n,), np.float32), np.zeros((pad,), np.float32)])
    return tuple(self.put(a) for a in (images, labels, mask))

  def train_steps(self, state: TrainState, images, labels, perm, start: int, n: int
                  ) -> tuple[TrainState, Metrics]:
    """Steps start .. start+n-1 (n <= chunk) of the epoch's order. One step's metrics are
    scalars; a scan's have a leading axis of its length, of which the first n are real.

    Two scan lengths at most, so that a run compiles the same programs however long it is, where
    it resumed and how often it logs or saves: `chunk`, and the epoch's last call when `chunk`
    does not divide the epoch. Shorter calls (after a resume, or at a stop) run the `chunk`
    program with its tail masked.
    """
    if self.chunk == 1:
      return self._train(state, images, labels, perm, start)
    length = n if n == self.tail and start % self.chunk == 0 else self.chunk
    return self._train_scan(state, images, labels, perm, start, n, length)

  def call_length(self, i: int, steps_per_epoch: int, stop: int | None = None) -> int:
    """How many steps the call at step i of an epoch runs: up to the next multiple of `chunk`
    (counted from the epoch's start), the epoch's end or `stop`, whichever comes first."""
    end = min((i // self.chunk + 1) * self.chunk, steps_per_epoch)
    return (min(end, stop) if stop is not None and stop > i else end) - i

  def evaluate(self, state: TrainState, images, labels, mask) -> dict[str, Any]:
    totals = self.put(self._zeros)
    for i in range(len(labels) // self.eval_batch_size):
      totals = self._evaluate_batch(state, images, labels, mask, i, totals)
    return jax.device_get(totals)
