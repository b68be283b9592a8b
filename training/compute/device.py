"""The jitted device drivers: batches sliced out of device-resident arrays, one step or a scan
of several per call, over a `jax.sharding` mesh."""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from training.errors import ConfigError

Metrics = dict[str, jax.Array]


def steps_per_call(config: ml_collections.ConfigDict) -> int:
  """Train steps per jitted call: `config.steps_per_call`, or by backend when it is 0: one on
  CPU, where a scan made steps slower, and a log interval on GPU/TPU, where a scan removes the
  per-step dispatch (docs/performance.md)."""
  if config.steps_per_call > 0:
    return config.steps_per_call
  return 1 if jax.default_backend() == "cpu" else config.log_every_steps


def member_map(mode: str, mesh: Mesh) -> Callable[[Callable], Callable]:
  """How a function of one member of a population runs over all of them, in one program:
  "vmap" batches them (their axis sharded over the mesh's "members" axis when it has one);
  "loop" runs them one after another, where a batched convolution would become a grouped one,
  which XLA:CPU runs slower than the members' convolutions in turn."""
  if mode == "loop":
    return unrolled
  axis = "members" if "members" in mesh.axis_names else None
  return lambda f: jax.vmap(f, spmd_axis_name=axis)


def unrolled(f: Callable) -> Callable:
  """`f` over the leading axis of its arguments, one member after another, unrolled: a loop
  (`lax.map`) around a convolution's step ran 20x slower on XLA:CPU than the steps apart
  (docs/performance.md#populations-benchpopulationpy). The program holds `f` once per member."""
  def each(*args):
    n = jax.tree_util.tree_leaves(args)[0].shape[0]
    outs = [f(*jax.tree_util.tree_map(lambda x: x[k], args)) for k in range(n)]
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *outs)
  return each


def choose_member_map(mode: str, mesh: Mesh, init: Callable) -> str:
  """The population's `mode` ("vmap" or "loop"), or by backend and model when it is "auto":
  "loop" on CPU for a model with convolutions (`init`: a function whose trace runs the model),
  "vmap" otherwise (docs/performance.md#populations-benchpopulationpy has the measurements)."""
  if mode == "loop" and mesh.shape.get("members", 1) > 1:
    raise ConfigError("population_mode='loop' runs the members one after another on every "
                      "device, so it cannot split them over a 'members' mesh axis: use vmap, or a "
                      "mesh without that axis.")
  if mode != "auto":
    return mode
  if jax.default_backend() != "cpu" or mesh.shape.get("members", 1) > 1:
    return "vmap"
  return "loop" if _has_convolution(jax.make_jaxpr(init)().jaxpr) else "vmap"


def _has_convolution(jaxpr: Any) -> bool:
  """Whether the traced program, or one nested in it, convolves."""
  return any(e.primitive.name == "conv_general_dilated"
             for j in jaxprs_within(jaxpr) for e in j.eqns)


def jaxprs_within(jaxpr: Any) -> Iterator[Any]:
  """`jaxpr` and every jaxpr nested in it (a scan's body, a cond's branches, a pjit's program),
  found in the equations' parameters: every jax since the lower bound has those, where
  `jax.extend.core.subjaxprs` came after 0.7.1."""
  pending = [jaxpr]
  while pending:
    j = pending.pop()
    yield j
    for value in (v for e in j.eqns for v in e.params.values()):
      for v in value if isinstance(value, (tuple, list)) else (value,):
        if hasattr(v, "eqns"):
          pending.append(v)
        elif hasattr(getattr(v, "jaxpr", None), "eqns"):  # a closed jaxpr
          pending.append(v.jaxpr)


class DeviceSteps:
  """Jitted drivers that slice batches out of device-resident arrays: no host round trip per step.

  The dataset lives on the devices (MNIST is 47 MB); each epoch's shuffle is a permutation made on
  device, and a step gathers its batch by index. Batches are sharded over the mesh's `data` axis,
  parameters replicated. Every device holds the whole dataset and gathers only its own slice of
  each global batch, so in a multi-process run each process feeds its part and no example
  crosses hosts.

  A population (`members` > 0) is a state with a leading axis of its members, each with its own
  shuffle; the same program trains them all (`member_map`), and its metrics have a members axis.
  """

  def __init__(self, mesh: Mesh, batch_size: int, eval_batch_size: int, num_classes: int, *,
               step: Callable | None = None, eval_step: Callable | None = None,
               population_eval_step: Callable | None = None, chunk: int = 1,
               steps_per_epoch: int = 0, members: int = 0, mode: str = "vmap",
               tta_shift: int = 0):
    """The task's pure steps (its `Task.device_steps()`): `step`, the train step (state, batch,
    rng) -> (state, metrics); `eval_step`, an evaluation batch's sums (state, batch,
    num_classes, tta_shift); `population_eval_step`, a population's (with `member_map`). A
    driver that only evaluates needs no `step`, one that only trains no evaluation.
    `members`: the population's size (0: a single model); `mode`: how the step runs over them
    (`member_map`). `tta_shift`: the evaluation's test-time augmentation."""
    _check_divisible(mesh, batch_size, eval_batch_size, members)
    self.mesh, self.batch_size, self.eval_batch_size = mesh, batch_size, eval_batch_size
    self.members, self.mode, self.map = members, mode, member_map(mode, mesh)
    self.replicated = NamedSharding(mesh, P())
    self.sharded = NamedSharding(mesh, P("data"))
    self.by_member = NamedSharding(mesh, P("members" if "members" in mesh.axis_names else None))
    evaluate = population_eval_step if members else eval_step
    self._own = eval_step and functools.partial(eval_step, num_classes=num_classes,
                                                tta_shift=tta_shift)
    self._compile(step, evaluate and functools.partial(evaluate, tta_shift=tta_shift),
                  num_classes)
    self.chunk = chunk
    self.tail = steps_per_epoch % chunk  # the length of an epoch's last call, if not `chunk`
    permutation = lambda key, epoch, n: jax.random.permutation(jax.random.fold_in(key, epoch), n)
    self.permutation = jax.jit(jax.vmap(permutation, in_axes=(0, None, None)) if members
                               else permutation, static_argnums=2)
    # Each member's epoch order as positions in its own training subset -> positions in the
    # shared training arrays (population_splits): once an epoch, so the step is unchanged.
    self.within = jax.jit(lambda subsets, perm: jnp.take_along_axis(subsets, perm, axis=1))
    self._zeros = self._own_zeros = None  # the evaluations' totals, once their shapes are known

  def gather(self, images, labels, perm, i):
    """The batch of step i of the epoch's order `perm`, as the train step sees it."""
    idx = jax.lax.with_sharding_constraint(
        jax.lax.dynamic_slice_in_dim(perm, i * self.batch_size, self.batch_size), self.sharded)
    return jax.lax.with_sharding_constraint({"image": images[idx], "label": labels[idx]},
                                            self.sharded)

  def _compile(self, step: Callable, evaluate: Callable, num_classes: int) -> None:
    """The jitted train call, scan of calls and evaluation batch."""
    # Evaluation batches the members whatever the training does: they share the input.
    self._sums = evaluate and (functools.partial(evaluate, num_classes=num_classes,
                                                 member_map=member_map("vmap", self.mesh))
                               if self.members else
                               functools.partial(evaluate, num_classes=num_classes))

    def one(state, images, labels, perm, i):
      return step(state, self.gather(images, labels, perm, i), state.rng)

    @functools.partial(jax.jit, donate_argnums=0)
    def train(state, images, labels, perm, i):
      if not self.members:
        return one(state, images, labels, perm, i)
      return self.map(lambda s, p: one(s, images, labels, p, i))(state, perm)

    @functools.partial(jax.jit, donate_argnums=5)
    def evaluate_batch(state, images, labels, mask, i, totals):
      sl = functools.partial(jax.lax.dynamic_slice_in_dim, start_index=i * self.eval_batch_size,
                             slice_size=self.eval_batch_size)
      batch = jax.lax.with_sharding_constraint(
          {"image": sl(images), "label": sl(labels), "mask": sl(mask)}, self.sharded)
      return jax.tree_util.tree_map(jnp.add, totals, self._sums(state, batch))

    @functools.partial(jax.jit, donate_argnums=5)
    def evaluate_own_batch(state, images, labels, mask, i, totals):
      # Each member's batch of its own split (a leading members axis), run as training runs them.
      sl = functools.partial(jax.lax.dynamic_slice_in_dim, start_index=i * self.eval_batch_size,
                             slice_size=self.eval_batch_size, axis=1)
      batch = {"image": sl(images), "label": sl(labels), "mask": sl(mask)}
      return jax.tree_util.tree_map(jnp.add, totals, self.map(self._own)(state, batch))

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
    if self.mesh.devices.flat[0].platform == "cpu" and len(self.mesh.local_devices) > 1:
      one_at_a_time = lambda f: lambda *args: jax.block_until_ready(f(*args))
      train, train_scan, evaluate_batch, evaluate_own_batch = map(
          one_at_a_time, (train, train_scan, evaluate_batch, evaluate_own_batch))
    self._train, self._train_scan, self._evaluate_batch = train, train_scan, evaluate_batch
    self._evaluate_own_batch = evaluate_own_batch

  def put(self, x: Any) -> Any:
    """Host arrays (the same in every process) -> arrays replicated on the whole mesh."""
    return _put(x, self.replicated)

  def put_state(self, state: Any) -> Any:
    """A train state on the devices: replicated, or for a population split by member over the
    mesh's "members" axis (each device holds its members whole)."""
    return _put(state, self.by_member if self.members else self.replicated)

  def put_train(self, images, labels) -> tuple[jax.Array, jax.Array]:
    return self.put(images), self.put(labels)

  def put_eval(self, images, labels) -> tuple[jax.Array, ...]:
    """Pads to whole eval batches (with mask 0), so every example is evaluated exactly once."""
    return tuple(self.put(a) for a in _padded(images, labels, self.eval_batch_size))

  def put_own_eval(self, images, labels) -> tuple[jax.Array, ...]:
    """`put_eval` of each member's own split ((members, n, ...) arrays), split by member."""
    padded = [_padded(i, l, self.eval_batch_size) for i, l in zip(images, labels)]
    return tuple(_put(np.stack(arrays), self.by_member) for arrays in zip(*padded))

  def train_steps(self, state: Any, images, labels, perm, start: int, n: int
                  ) -> tuple[Any, Metrics]:
    """Steps start .. start+n-1 (n <= chunk) of the epoch's order. One step's metrics are
    scalars (of each member, for a population); a scan's have a leading axis of its length, of
    which the first n are real.

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

  def evaluate(self, state: Any, images, labels, mask) -> dict[str, Any]:
    """The evaluation's sums over the split (for a population: each member's, under "members",
    and the ensemble's, its members' probabilities averaged, under "ensemble")."""
    if self._zeros is None:  # kept on the host: each evaluation donates fresh device buffers
      batch = {"image": jax.ShapeDtypeStruct((self.eval_batch_size, *images.shape[1:]),
                                             images.dtype),
               "label": jax.ShapeDtypeStruct((self.eval_batch_size,), labels.dtype),
               "mask": jax.ShapeDtypeStruct((self.eval_batch_size,), mask.dtype)}
      self._zeros = jax.tree_util.tree_map(lambda x: np.zeros(x.shape, x.dtype),
                                           jax.eval_shape(self._sums, state, batch))
    totals = self.put(self._zeros)
    for i in range(len(labels) // self.eval_batch_size):
      totals = self._evaluate_batch(state, images, labels, mask, i, totals)
    return jax.device_get(totals)

  def evaluate_own(self, state: Any, images, labels, mask) -> dict[str, Any]:
    """Each member's evaluation sums over its own split (`put_own_eval`'s arrays), under
    "members"; no ensemble, as the members saw different examples."""
    if self._own_zeros is None:
      batch = {k: jax.ShapeDtypeStruct((a.shape[0], self.eval_batch_size, *a.shape[2:]), a.dtype)
               for k, a in (("image", images), ("label", labels), ("mask", mask))}
      self._own_zeros = jax.tree_util.tree_map(lambda x: np.zeros(x.shape, x.dtype),
                                               jax.eval_shape(self.map(self._own), state, batch))
    totals = _put(self._own_zeros, self.by_member)
    for i in range(labels.shape[1] // self.eval_batch_size):
      totals = self._evaluate_own_batch(state, images, labels, mask, i, totals)
    return {"members": jax.device_get(totals)}


def _padded(images: np.ndarray, labels: np.ndarray, batch: int) -> tuple[np.ndarray, ...]:
  """(images, labels, mask) padded to whole batches of `batch`, the padding's mask 0."""
  n = len(labels)
  pad = -n % batch
  images = np.concatenate([images, np.zeros((pad, *images.shape[1:]), images.dtype)])
  labels = np.concatenate([labels, np.zeros((pad,), labels.dtype)])
  mask = np.concatenate([np.ones((n,), np.float32), np.zeros((pad,), np.float32)])
  return images, labels, mask


def take(tree: Any, k: int) -> Any:
  """Member k of a population's tree (a state, its metrics): its arrays without the members axis."""
  return jax.tree_util.tree_map(lambda x: x[k], tree)


def _put(x: Any, sharding: NamedSharding) -> Any:
  """Host arrays (the same in every process) -> global arrays with `sharding`."""
  def one(a):
    a = np.asarray(a)
    return jax.make_array_from_callback(a.shape, sharding, lambda idx: a[idx])
  return jax.tree_util.tree_map(one, x)


def _check_divisible(mesh: Mesh, batch_size: int, eval_batch_size: int, members: int) -> None:
  """The batches split evenly over the data axis, and the members over the members axis."""
  n = mesh.shape["data"]
  for what, size in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
    if size % n:
      raise ConfigError(f"{what}={size} does not divide over the {n} devices of the data axis; "
                        f"set --config.{what} to a multiple of {n}.")
  m = mesh.shape.get("members", 1)
  if m > 1 and members % m:
    raise ConfigError(f"The population's {members or 1} member(s) do not divide over the {m} "
                      f"devices of the mesh's members axis: train a multiple of {m} members, "
                      "or shrink that axis (--config.mesh_shape).")
