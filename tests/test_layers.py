"""The hand-written layers that replace library ones for speed: they must compute the same thing."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nets import cnn, layers


@pytest.mark.parametrize("how", ["max", "avg"])
@pytest.mark.parametrize("side", [8, 7])  # an odd side drops the last row and column, as VALID
def test_pool2x2_matches_flax_pooling(how, side):
  x = jax.random.normal(jax.random.PRNGKey(0), (2, side, side, 3))
  flax_pool = nn.max_pool if how == "max" else nn.avg_pool
  np.testing.assert_allclose(cnn.pool2x2(x, how), flax_pool(x, (2, 2), strides=(2, 2)), rtol=1e-6)
  # Without ties every max-pool gradient is unique, so ours must equal flax's.
  g = jax.random.normal(jax.random.PRNGKey(1), (2, side // 2, side // 2, 3))
  ours = jax.vjp(lambda x: cnn.pool2x2(x, how), x)[1](g)[0]
  ref = jax.vjp(lambda x: flax_pool(x, (2, 2), strides=(2, 2)), x)[1](g)[0]
  np.testing.assert_allclose(ours, ref, rtol=1e-6)


def test_max_pool_gradient_goes_to_the_first_tied_maximum():
  # ReLU outputs tie at zero all the time; each window's gradient must go to one element (the
  # first in row-major order, as in PyTorch), not be counted once per tied element.
  x = jnp.array([[0., 0., 5., 1.],
                 [0., 0., 5., 5.],
                 [2., 3., 7., 7.],
                 [3., 1., 7., 7.]]).reshape(1, 4, 4, 1)
  g = jnp.array([[1., 10.], [100., 1000.]]).reshape(1, 2, 2, 1)
  grad = jax.vjp(lambda x: cnn.pool2x2(x, "max"), x)[1](g)[0][0, :, :, 0]
  np.testing.assert_array_equal(grad, [[1., 0., 10., 0.],
                                       [0., 0., 0., 0.],
                                       [0., 100., 1000., 0.],
                                       [0., 0., 0., 0.]])


@pytest.mark.parametrize("rate", [0.2, 0.5, 0.1, 0.01, 1e-4, 0.999])
def test_dropout_drops_at_the_rate_and_keeps_the_mean(rate):
  x = jnp.ones((256, 4099))  # odd width: words of random bits are cut to the last axis
  y = layers.Dropout(rate).apply({}, x, deterministic=False, rngs={"dropout": jax.random.PRNGKey(3)})
  dropped = float(jnp.mean(y == 0))
  # 5 binomial standard deviations, plus the documented rounding of the rate (at most 2%).
  sd = np.sqrt(rate * (1 - rate) / x.size)
  assert abs(dropped - rate) <= 5 * sd + 0.02 * rate, (dropped, rate)
  assert abs(float(y.mean()) - 1.0) <= 5 * sd / (1 - rate) + 1e-3
  assert set(np.unique(np.asarray(y))) <= {0.0, float(y.max())}


def test_dropout_uses_fewer_bits_only_where_the_rate_survives_rounding():
  assert layers.dropout_bits(0.2) == 8  # 205/256 kept: rate 0.1992
  assert layers.dropout_bits(0.01) == 16  # 1/256 steps would make it 0.0117
  assert layers.dropout_bits(1e-6) == 32
  assert layers.dropout_bits(0.999) == 16  # 8 bits would keep nothing


def test_dropout_is_identity_when_deterministic_and_seeded_otherwise():
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 6, 5))
  np.testing.assert_array_equal(layers.Dropout(0.5, deterministic=True).apply({}, x), x)
  apply = lambda seed: layers.Dropout(0.5).apply({}, x, deterministic=False,
                                                 rngs={"dropout": jax.random.PRNGKey(seed)})
  np.testing.assert_array_equal(apply(1), apply(1))
  assert not np.array_equal(apply(1), apply(2))
  np.testing.assert_array_equal(layers.Dropout(1.0).apply({}, x, deterministic=False), 0 * x)
  with pytest.raises(ValueError, match="rate must be in"):
    layers.Dropout(1.5).apply({}, x, deterministic=False, rngs={"dropout": jax.random.PRNGKey(0)})
