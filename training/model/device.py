"""The jitted device drivers: batches sliced out of device-resident arrays, one step or a scan
of several per call, over a `jax.sharding` mesh."""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from training.errors import ConfigError
from training.model import steps as steps_lib
from training.model.state import TrainState

Metrics = dict[str, jax.Array]


def steps_per_call(config: ml_collections.ConfigDict) -> int:
  """Train steps per jitted call: `config.steps_per_call`, or by backend when it is 0: one on
  CPU, where a scan made steps slower, and a log interval on GPU/TPU, where a scan removes the
  per-step dispatch (docs/performance.md)."""
  if config.steps_per_call > 0:
    return config.steps_per_call
  return 1 if jax.default_backend() == "cpu" else config.log_every_steps


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
               tta_shift: int = 0, **step_options: float):
    """`step`: the task's pure train step (state, batch, rng) -> (state, metrics); by default
    the classifier's `train_step` with `step_options`. `tta_shift`: the evaluation's test-time
    augmentation (`steps.eval_step`)."""
    n = mesh.shape["data"]
    for what, size in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
      if size % n:
        raise ConfigError(f"{what}={size} does not divide over the {n} devices of the data axis; "
                         f"set --config.{what} to a multiple of {n}.")
    self.mesh, self.batch_size, self.eval_batch_size = mesh, batch_size, eval_batch_size
    self.replicated = NamedSharding(mesh, P())
    self.sharded = NamedSharding(mesh, P("data"))
    step = step or functools.partial(steps_lib.train_step, **step_options)
    evaluate = functools.partial(steps_lib.eval_step, num_classes=num_classes,
                                 tta_shift=tta_shift)

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
