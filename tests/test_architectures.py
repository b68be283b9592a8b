"""ResNet, MobileNet, RNN and ViT: parameter counts by hand, and what each design promises."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nets
from nets.mobilenet import DepthwiseConv
from nets.resnet import BasicBlock
from training.compute import build

NEW = ("resnet", "mobilenet", "rnn", "vit")


def _images(shape=(28, 28, 1), n=2, seed=0):
  return jnp.asarray(np.random.default_rng(seed).random((n, *shape)), jnp.float32)


def _count(model, shape=(28, 28, 1)):
  variables = model.init(jax.random.PRNGKey(0), _images(shape), train=False)
  return build.param_count(variables["params"])


# --- Parameter counts, from the layer shapes alone (batch norm: a scale and a bias per channel) ---

def _resnet_params(stem, features, blocks, strides, classes=10, channels=1):
  total, c = 9 * channels * stem + 2 * stem, stem
  for width, count, stride in zip(features, blocks, strides):
    for i in range(count):
      total += 9 * c * width + 2 * width + 9 * width * width + 2 * width
      if (stride if i == 0 else 1) != 1 or c != width:
        total += c * width + 2 * width  # 1x1 projection shortcut and its batch norm
      c = width
  return total + c * classes + classes


def _mobilenet_params(stem, features, classes=10, channels=1):
  total, c = 9 * channels * stem + 2 * stem, stem
  for width in features:
    total += 9 * c + 2 * c  # depthwise 3x3: one filter per channel
    total += c * width + 2 * width  # pointwise 1x1
    c = width
  return total + c * classes + classes


def _rnn_params(cell, inputs, hidden, layers, bidirectional, classes=10):
  directions = 2 if bidirectional else 1
  total = 0
  for _ in range(layers):
    if cell == "lstm":  # four gates: input kernels without bias, recurrent kernels with bias
      per_direction = 4 * inputs * hidden + 4 * (hidden * hidden + hidden)
    else:  # GRU: r, z, n input kernels with bias; r, z recurrent without, n recurrent with
      per_direction = 3 * (inputs * hidden + hidden) + 3 * hidden * hidden + hidden
    total += directions * per_direction
    inputs = directions * hidden
  return total + inputs * classes + classes


def _vit_params(patch, dim, depth, mlp, tokens, cls, classes=10, channels=1):
  total = patch * patch * channels * dim + dim  # patch embedding
  total += dim if cls else 0
  total += (tokens + cls) * dim  # position embeddings
  block = 2 * dim + 4 * (dim * dim + dim)  # LayerNorm, query/key/value/output projections
  block += 2 * dim + dim * mlp + mlp + mlp * dim + dim  # LayerNorm, MLP
  return total + depth * block + 2 * dim + dim * classes + classes


def test_resnet_param_count():
  kw = dict(stem_features=16, features=(16, 32, 64), blocks=(2, 1, 1), strides=(1, 2, 2))
  model = nets.create("resnet", **kw)
  assert _count(model) == _resnet_params(16, (16, 32, 64), (2, 1, 1), (1, 2, 2)) == 82_426
  assert _count(model, (32, 32, 3)) == _resnet_params(16, (16, 32, 64), (2, 1, 1), (1, 2, 2),
                                                       channels=3)


def test_mobilenet_param_count():
  model = nets.create("mobilenet", stem_features=32, features=(64, 128, 128, 256),
                      strides=(1, 2, 1, 2))
  assert _count(model) == _mobilenet_params(32, (64, 128, 128, 256)) == 67_338


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_rnn_param_count(cell):
  model = nets.create("rnn", cell=cell, hidden=32, layers=2, bidirectional=True)
  assert _count(model) == _rnn_params(cell, 28, 32, 2, True)
  # A row of a 32x32x3 image is one step of 32 * 3 = 96 features.
  assert _count(model, (32, 32, 3)) == _rnn_params(cell, 96, 32, 2, True)
  assert _count(nets.create("rnn", cell="gru", hidden=128, bidirectional=True)) == 123_402


def test_vit_param_count():
  model = nets.create("vit", patch_size=4, dim=64, depth=4, num_heads=4, mlp_dim=128)
  assert _count(model) == _vit_params(4, 64, 4, 128, tokens=49, cls=True) == 139_018
  model = nets.create("vit", patch_size=7, dim=64, depth=6, num_heads=4, mlp_dim=128, pool="mean")
  assert _count(model) == _vit_params(7, 64, 6, 128, tokens=16, cls=False) == 205_834


# --- Behaviour ---

@pytest.mark.parametrize("name", NEW)
def test_bfloat16_compute_keeps_float32_params_and_logits(name):
  model = nets.create(name, dtype=jnp.bfloat16)
  x = _images()
  variables = model.init(jax.random.PRNGKey(0), x, train=False)
  assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(variables)} == {jnp.dtype("float32")}
  logits = model.apply(variables, x, train=False)
  assert logits.dtype == jnp.float32 and np.isfinite(np.asarray(logits)).all()


def _block_output_sizes(strides):
  model = nets.create("resnet", stem_features=8, features=(8, 8, 8), blocks=(1, 1, 1),
                      strides=strides)
  x = _images()
  variables = model.init(jax.random.PRNGKey(0), x, train=False)
  _, state = model.apply(variables, x, train=False, capture_intermediates=True,
                         mutable=["intermediates"])
  inter = state["intermediates"]
  return [inter[f"BasicBlock_{i}"]["__call__"][0].shape[1:3] for i in range(3)], variables


def test_resnet_stride_two_halves_the_resolution_with_a_projection():
  sizes, variables = _block_output_sizes((1, 2, 2))
  assert sizes == [(28, 28), (14, 14), (7, 7)]
  # Same width and stride 1: an identity shortcut; stride 2: a 1x1 projection.
  assert "proj" not in variables["params"]["BasicBlock_0"]
  assert "proj" in variables["params"]["BasicBlock_1"]
  sizes, _ = _block_output_sizes((2, 2, 2))
  assert sizes == [(14, 14), (7, 7), (4, 4)]  # SAME padding: an odd side rounds up


def test_resnet_blocks_start_as_identity():
  # The zero-initialised last batch-norm scale: at init a block is ReLU(shortcut).
  x = _images((8, 8, 4))
  y, _ = BasicBlock(4).init_with_output(jax.random.PRNGKey(0), x, train=False)
  np.testing.assert_allclose(y, nn.relu(x), atol=1e-6)


@pytest.mark.parametrize("shape", [(28, 28, 5), (7, 7, 4), (5, 6, 3)])
@pytest.mark.parametrize("strides", [1, 2])
def test_depthwise_conv_matches_grouped_nn_conv(shape, strides):
  x = _images(shape)
  variables = DepthwiseConv(3, strides).init(jax.random.PRNGKey(0), x)
  reference = nn.Conv(shape[-1], (3, 3), strides=strides, feature_group_count=shape[-1],
                      use_bias=False).apply(variables, x)
  for impl in ("shifted", "conv"):
    out = DepthwiseConv(3, strides, impl).apply(variables, x)
    assert out.shape == reference.shape
    np.testing.assert_allclose(out, reference, atol=1e-5)


def test_mobilenet_depthwise_impls_agree_and_bad_impl_is_refused():
  x = _images()
  model = nets.create("mobilenet")
  variables = model.init(jax.random.PRNGKey(0), x, train=False)
  conv = nets.create("mobilenet", depthwise="conv")
  np.testing.assert_allclose(model.apply(variables, x, train=False),
                             conv.apply(variables, x, train=False), atol=1e-4)
  with pytest.raises(ValueError, match="depthwise must be"):
    nets.create("mobilenet", depthwise="fft").init(jax.random.PRNGKey(0), x, train=False)


@pytest.mark.parametrize("pool", ["last", "mean"])
def test_rnn_bidirectional_doubles_the_features(pool):
  for bidirectional, features in ((False, 16), (True, 32)):
    model = nets.create("rnn", hidden=16, bidirectional=bidirectional, pool=pool)
    variables = model.init(jax.random.PRNGKey(0), _images(), train=False)
    assert variables["params"]["Dense_0"]["kernel"].shape == (features, 10)


def test_rnn_backward_direction_reads_the_whole_image():
  # With the forward GRU zeroed (its state stays 0), the logits come from the backward
  # direction alone: its final state must have read the first row too.
  model = nets.create("rnn", cell="gru", hidden=16, bidirectional=True)
  x = _images()
  params = model.init(jax.random.PRNGKey(0), x, train=False)["params"]
  assert set(params) == {"layer0_forward", "layer0_backward", "Dense_0"}
  params = {**params, "layer0_forward": jax.tree_util.tree_map(jnp.zeros_like,
                                                               params["layer0_forward"])}
  changed = x.at[:, 0].add(1.0)
  assert not np.allclose(model.apply({"params": params}, x, train=False),
                         model.apply({"params": params}, changed, train=False))


def test_rnn_rejects_unknown_cell():
  with pytest.raises(ValueError, match="cell must be one of"):
    nets.create("rnn", cell="transformer").init(jax.random.PRNGKey(0), _images(), train=False)


def test_vit_rejects_a_patch_size_that_does_not_divide_the_image():
  with pytest.raises(ValueError, match=r"patch_size 5 does not divide the image size 28x28"):
    nets.create("vit", patch_size=5).init(jax.random.PRNGKey(0), _images(), train=False)
  with pytest.raises(ValueError, match="does not divide"):  # divides 28, not 32
    nets.create("vit", patch_size=7).init(jax.random.PRNGKey(0), _images((28, 32, 1)),
                                          train=False)


def test_vit_tokens_follow_the_image_and_pooling():
  def pos_shape(shape, pool):
    model = nets.create("vit", patch_size=4, dim=16, depth=1, num_heads=2, mlp_dim=32, pool=pool)
    params = model.init(jax.random.PRNGKey(0), _images(shape), train=False)["params"]
    return params["pos_embedding"].shape, "cls_token" in params

  assert pos_shape((28, 28, 1), "cls") == ((1, 50, 16), True)  # 7x7 patches + class token
  assert pos_shape((32, 32, 3), "cls") == ((1, 65, 16), True)
  assert pos_shape((28, 28, 1), "mean") == ((1, 49, 16), False)
