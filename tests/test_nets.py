"""Every registered model: output shape, parameter count, train/eval modes; the registry's errors."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import nets

from conftest import CLASSIFIER_CONFIGS, load_config
from training.compute import build

SHAPE = (28, 28, 1)


def _init(model, shape=SHAPE):
  x = jnp.asarray(np.random.default_rng(0).random((3, *shape)), jnp.float32)
  variables = model.init(jax.random.PRNGKey(0), x, train=False)
  return x, variables


@pytest.mark.parametrize("name", nets.names())
def test_every_model_outputs_logits(name):
  model = nets.create(name, num_classes=7)
  x, variables = _init(model)
  logits = model.apply(variables, x, train=False)
  assert logits.shape == (3, 7) and logits.dtype == jnp.float32
  assert np.isfinite(np.asarray(logits)).all()
  logits_train, _ = model.apply(variables, x, train=True, mutable=["batch_stats"],
                                rngs={"dropout": jax.random.PRNGKey(1)})
  assert logits_train.shape == (3, 7)
  assert build.param_count(variables["params"]) > 0


@pytest.mark.parametrize("name", nets.names())
def test_every_model_takes_other_image_shapes(name):
  # fashion_mnist/kmnist share 28x28x1; a 32x32x3 input checks nothing is hard-wired to MNIST.
  model = nets.create(name, num_classes=10)
  x, variables = _init(model, (32, 32, 3))
  assert model.apply(variables, x, train=False).shape == (3, 10)


def _mlp_params(inputs, hidden, classes):
  sizes = [inputs, *hidden, classes]
  return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


def _cnn_params(features, dense, classes, k=3, side=28, channels=1):
  total, c = 0, channels
  for f in features:
    total += k * k * c * f + f
    c, side = f, side // 2
  return total + _mlp_params(side * side * c, dense, classes)


def test_param_counts_match_the_architecture():
  """Counted by hand from the layer shapes, independently of flax."""
  mlp = nets.create("mlp", hidden=(512, 512), num_classes=10)
  assert build.param_count(_init(mlp)[1]["params"]) == _mlp_params(784, (512, 512), 10) == 669_706
  cnn = nets.create("cnn", features=(32, 64), dense=(128,), num_classes=10)
  assert build.param_count(_init(cnn)[1]["params"]) == _cnn_params((32, 64), (128,), 10) == 421_642
  strided = nets.create("cnn_strided")  # the same shapes, halved by strides instead of pools
  assert build.param_count(_init(strided)[1]["params"]) == _cnn_params((32, 64), (128,), 10)


@pytest.mark.parametrize("config_name", CLASSIFIER_CONFIGS)
def test_config_builds_its_model(config_name):
  config = load_config(config_name)
  model = build.build_model(config, num_classes=10)
  _, variables = _init(model)
  assert build.param_count(variables["params"]) > 0


def test_batch_norm_adds_statistics():
  model = nets.create("cnn", batch_norm=True)
  _, variables = _init(model)
  assert "batch_stats" in variables


def test_unknown_model_lists_known_names():
  with pytest.raises(ValueError, match=r"Unknown model 'resnet9000'.*Known models: .*cnn.*mlp"):
    nets.create("resnet9000")


def test_unknown_model_field_lists_fields():
  with pytest.raises(ValueError, match=r"no field\(s\) \['widht'\].*hidden"):
    nets.create("mlp", widht=3)


def test_variant_fields_are_fixed():
  # A registered partial fixes its fields; the config cannot silently fight it.
  assert "downsample" not in nets.field_names("cnn_strided")
  assert "downsample" in nets.field_names("cnn")


def test_registering_a_name_twice_is_refused_naming_both_files():
  with pytest.raises(nets.ModelContractError, match=r"The model name 'mlp' is registered twice: "
                     r"by nets/mlp.py \(MLP\) and by nets/cnn.py \(CNN\)\. Give one"):
    nets.register("mlp", nets.get_factory("cnn"))


class _NoDefault(nn.Module):
  width: int  # no default
  num_classes: int = 10


class _NoTrain(nn.Module):
  num_classes: int = 10

  def __call__(self, x):
    return x


class _NoClasses(nn.Module):
  width: int = 3  # units

  def __call__(self, x, *, train):
    return x


class _NNXNoRngs(nnx.Module):
  def __init__(self, num_classes: int = 10, *, rngs: nnx.Rngs):
    self.out = nnx.Linear(4, num_classes, rngs=rngs)

  def __call__(self, x, *, train):
    return self.out(x)


@pytest.mark.parametrize("factory, kind, message", [
    (_NoDefault, "classifier", r"_NoDefault's field\(s\) width have no default\. Give each"),
    (_NoTrain, "classifier", r"_NoTrain\.__call__ takes no `train` keyword: write it "
     r"`def __call__\(self, x, \*, train\)`"),
    (_NoClasses, "classifier", r"_NoClasses has no `num_classes` field"),
    (_NNXNoRngs, "classifier", r"_NNXNoRngs\.__call__ takes no `rngs` keyword: see nets/mixer"),
])
def test_a_model_that_breaks_the_contract_is_refused_as_it_registers(factory, kind, message,
                                                                      monkeypatch):
  nets.names()  # every model registered, then a registry of this test's own
  monkeypatch.setattr(nets, "_REGISTRY", dict(nets._REGISTRY))
  monkeypatch.setattr(nets, "_KINDS", dict(nets._KINDS))
  with pytest.raises(nets.ModelContractError, match=f"^tests/test_nets.py: {message}"):
    nets.register("contract_breaker", factory, kind=kind)
  assert "contract_breaker" not in nets.names(kind=None)
  # A variant that fixes the field without a default is a model like any other.
  if factory is _NoDefault:
    nets.register("contract_keeper", functools.partial(_NoDefault, width=4))
    assert nets.field_names("contract_keeper") == ["num_classes"]


def test_logits_of_another_width_than_num_classes_are_refused():
  import optax
  from training.tasks.classify import state as state_lib
  model = nets.create("mlp", num_classes=7)
  key = jax.random.PRNGKey(0)
  with pytest.raises(nets.ModelContractError,
                     match=r"^nets/mlp.py: the model's logits have shape \(7,\) for 10 classes: "
                     r"its last layer must have `self.num_classes` units"):
    state_lib.create_train_state(model, optax.sgd(0.1), SHAPE, key, key, num_classes=10)
