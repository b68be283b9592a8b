"""flax.nnx models (nets/nnx_bridge.py): batch norm and dropout as in Linen, on the same weights as
the same network in Linen; fine-tuning and both ways of running a population, on nets/mixer.py.
The rest (shapes, mock training as a population, checkpoints, SIGKILL, export) runs on the NNX
models as on every model, parametrized by architecture or config."""

from __future__ import annotations

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import nets
from training import train_and_evaluate
from training.compute import optim
from training.tasks import restore

from conftest import REPO, load_config, shrink


def _bench():
  spec = importlib.util.spec_from_file_location("nnx_vs_linen", REPO / "bench" / "nnx_vs_linen.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _twins(dropout: float):
  """nets/mlp.py's Linen MLP with batch norm, and the same network in NNX through nets/nnx_bridge.py."""
  fields = {"hidden": (32, 16), "dropout": dropout, "batch_norm": True, "num_classes": 10}
  return (nets.create("mlp", **fields),
          nets.nnx_bridge.wrap(_bench().MLP, fields))


def _close(a, b):
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)


def test_batch_norm_trains_and_evaluates_as_in_linen_on_the_same_weights():
  linen, nnx_model = _twins(dropout=0.0)
  x = jax.random.normal(jax.random.PRNGKey(1), (8, 28, 28, 1)) * 3 + 1
  variables = linen.init(jax.random.PRNGKey(0), x, train=False)
  ours = nnx_model.init(jax.random.PRNGKey(0), x, train=False)
  # The same tree: parameters under the same names, batch statistics in "batch_stats".
  assert (jax.tree_util.tree_structure(ours) == jax.tree_util.tree_structure(variables)
          and jax.tree_util.tree_map(jnp.shape, ours) == jax.tree_util.tree_map(jnp.shape, variables))
  _close(nnx_model.apply(variables, x, train=False), linen.apply(variables, x, train=False))
  # Training normalizes by the batch's statistics and moves the running ones, as Linen does.
  y, updated = nnx_model.apply(variables, x, train=True, mutable=["batch_stats"])
  y_linen, updated_linen = linen.apply(variables, x, train=True, mutable=["batch_stats"])
  _close(y, y_linen)
  _close(updated, updated_linen)
  moved = jax.tree_util.tree_leaves(jax.tree_util.tree_map(
      lambda a, b: jnp.abs(a - b).max(), updated["batch_stats"], variables["batch_stats"]))
  assert min(moved) > 1e-3
  # Evaluation reads the running statistics and leaves them alone.
  _, untouched = nnx_model.apply(variables, x, train=False, mutable=["batch_stats"])
  _close(untouched["batch_stats"], variables["batch_stats"])


def test_dropout_draws_from_the_dropout_stream_in_training_only():
  _, model = _twins(dropout=0.5)
  x = jax.random.normal(jax.random.PRNGKey(3), (4, 28, 28, 1))
  variables = model.init(jax.random.PRNGKey(0), x, train=False)
  run = lambda seed: model.apply(variables, x, train=True, mutable=["batch_stats"],
                                 rngs={"dropout": jax.random.PRNGKey(seed)})[0]
  np.testing.assert_array_equal(run(1), run(1))  # the stream decides it
  assert not np.allclose(run(1), run(2))
  evaluated = model.apply(variables, x, train=False)
  np.testing.assert_array_equal(evaluated, model.apply(variables, x, train=False))
  assert not np.allclose(run(1), evaluated)


def test_an_nnx_model_keeping_an_rngs_is_refused_saying_what_to_do():
  class KeepsRngs(nnx.Module):
    def __init__(self, num_classes: int = 10, *, rngs: nnx.Rngs):
      self.linear, self.rngs = nnx.Linear(4, num_classes, rngs=rngs), rngs

    def __call__(self, x, *, train, rngs=None):
      return self.linear(x)
  model = nets.nnx_bridge.wrap(KeepsRngs, {})
  with pytest.raises(ValueError, match="take the dropout stream as __call__'s `rngs`"):
    model.init(jax.random.PRNGKey(0), jnp.ones((2, 4)), train=False)


def _mixer(**overrides):
  return shrink(load_config("mixer"), **{"model.depth": 2, "model.dim": 16, **overrides})


def test_an_nnx_model_fine_tunes_with_a_frozen_backbone(mock_mnist, tmp_path):
  source = str(tmp_path / "source")
  train_and_evaluate(_mixer(ema_decay=0.0), source)  # what init_from loads: its weights
  flat = lambda params: {optim.param_path(p): np.asarray(v)
                         for p, v in jax.tree_util.tree_flatten_with_path(params)[0]}
  loaded = flat(restore.restore(source).state.params)
  config = _mixer(classes="5,6,7,8,9", init_from=source, freeze="^(embed|block)", ema_decay=0.0)
  state, _ = train_and_evaluate(config, str(tmp_path / "tuned"))
  after = flat(state.params)
  assert after["head/kernel"].shape == (16, 5)  # a new head for 5 classes
  for name in after:
    if name.startswith(("embed/", "block")):
      assert after[name].tobytes() == loaded[name].tobytes(), name
  assert not np.array_equal(after["norm/scale"], loaded["norm/scale"])  # not frozen: it trained


def test_an_nnx_population_trains_alike_in_a_loop_or_batched(mock_mnist):
  losses = {}
  for mode in ("loop", "vmap"):
    _, summary = train_and_evaluate(_mixer(population=2, population_mode=mode, **{
        "model.dropout": 0.1}))
    losses[mode] = [m["loss"] for m in summary["members"]]
  assert losses["loop"][0] != losses["loop"][1]  # two members, two seeds
  np.testing.assert_allclose(losses["loop"], losses["vmap"], rtol=1e-4)
