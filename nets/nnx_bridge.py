"""A `flax.nnx` model as the Linen module that training, checkpoints, export, fine-tuning and
populations already use: a model written in NNX registers in nets/ like a Linen one.

Each call builds the NNX module (at init with real weights; afterwards as shapes only, with
`nnx.eval_shape`, which costs no computation), puts the Linen variables into it, runs it and
hands its updated batch statistics back to Linen. Its parameters are the Linen "params"
collection, nested by attribute name ("block0/token_in/kernel"), so `freeze` and `init_from`
read them as any model's. Everything happens while tracing: the compiled step is the NNX
model's own computation (bench/nnx_vs_linen.py measures it against the same net in Linen).

Not flax's `nnx.bridge.to_linen`: in flax 0.10.0, the lower bound, it keeps the module's
GraphDef as a variable of an "nnx" collection, which no train state or checkpoint here holds.

The NNX module's contract: `__init__(self, ..., *, rngs)` with typed keyword fields (the config's
fields), optionally `input_shape` (the images' (H, W, C), which an eager NNX module needs to size
its first layer); `__call__(self, x, *, train, rngs)`, with `rngs` the dropout stream (None when
not training), passed to `nnx.Dropout`, and `train` deciding batch norm's running averages.
"""

from __future__ import annotations

from typing import Any, Callable

import inspect

import flax.linen as nn
import jax
from flax import nnx, traverse_util
from flax.core import FrozenDict

INPUT_SHAPE = "input_shape"  # the NNX field that the bridge fills from the data


def is_nnx(cls: Any) -> bool:
  return isinstance(cls, type) and issubclass(cls, nnx.Module)


def wrap(factory: Callable[..., nnx.Module], fields: dict[str, Any]) -> "FromNNX":
  """The NNX module class `factory` (or a partial of one) with `fields`, as a Linen module."""
  cls = getattr(factory, "func", factory)
  return FromNNX(factory, FrozenDict(fields), INPUT_SHAPE in inspect.signature(
      cls.__init__).parameters)


def _names(path: tuple) -> tuple[str, ...]:
  """A state leaf's path as attribute names: its dict keys, without the `.value` attribute."""
  return tuple(str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey))


class FromNNX(nn.Module):
  """The NNX module `nnx_class(**fields)` as a Linen module taking `(x, *, train)`."""
  nnx_class: Callable[..., nnx.Module]
  fields: FrozenDict = FrozenDict()
  takes_shape: bool = False  # whether nnx_class takes `input_shape`

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    fields = {**self.fields, **({INPUT_SHAPE: tuple(x.shape[1:])} if self.takes_shape else {})}
    if self.is_initializing():
      module = self.nnx_class(**fields, rngs=nnx.Rngs(params=self.make_rng("params")))
    else:  # shapes only: the values are the Linen variables'
      module = nnx.eval_shape(lambda: self.nnx_class(**fields, rngs=nnx.Rngs(0)))
    graphdef, params, stats, rest = nnx.split(module, nnx.Param, nnx.BatchStat, ...)
    if jax.tree_util.tree_leaves(rest):
      raise ValueError(f"{self.nnx_class.__name__} keeps state that is neither a parameter nor "
                       "a batch statistic (an Rngs?): take the dropout stream as __call__'s "
                       "`rngs` instead.")
    params, _ = self._linen("params", params)
    stats, stored = self._linen("batch_stats", stats)
    module = nnx.merge(graphdef, params, stats, rest)
    rngs = nnx.Rngs(dropout=self.make_rng("dropout")) if train and self.has_rng("dropout") else None
    y = module(x, train=train, rngs=rngs)
    if train and self.is_mutable_collection("batch_stats"):  # the statistics that `train` updated
      for name, value in _nested(nnx.split(module, nnx.BatchStat, ...)[1]).items():
        stored[name].value = value
    return y

  def _linen(self, collection: str, state: Any) -> tuple[Any, dict[str, Any]]:
    """`state` (an nnx State) kept as the Linen variables of `collection`, one per top-level
    attribute: (the state with their values, {attribute: its Linen variable} unless params)."""
    values, stored = {}, {}
    for name, value in _nested(state).items():
      if collection == "params":
        values[name] = self.param(name, lambda _, v=value: v)
      else:
        stored[name] = self.variable(collection, name, lambda v=value: v)
        values[name] = stored[name].value
    flat = traverse_util.flatten_dict(values)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(state)
    return jax.tree_util.tree_unflatten(treedef, [flat[_names(p)] for p, _ in leaves]), stored


def _nested(state: Any) -> dict[str, Any]:
  """An nnx State's arrays as nested dicts by attribute name."""
  leaves = jax.tree_util.tree_flatten_with_path(state)[0]
  return traverse_util.unflatten_dict({_names(p): leaf for p, leaf in leaves})
