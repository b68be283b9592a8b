"""The two forms of the augmentation warp: 4-neighbour gathers (`warp`) and matmuls
(`warp_matmul`) compute the same bilinear resampling."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from training.data import augment

# Both forms sample the same points, but XLA may round the source coordinates (about 14 at most
# here, so 1 ulp is 1e-6) differently in the two programs. Bilinear resampling of pixels in
# [0, 1] moves by at most 2 per unit of coordinate, so a few ulps give at most a few 1e-6; the
# products themselves add only float32 rounding of sums of <= 4 non-zero terms.
TOLERANCE = 1e-5


@pytest.mark.parametrize("shape", [(16, 28, 28, 1), (4, 9, 13, 3)])
def test_matmul_warp_matches_the_gather_warp(shape):
  rng = np.random.default_rng(0)
  n = shape[0]
  images = jnp.asarray(rng.random(shape), jnp.float32)
  # Any angle, and shifts that take some images partly or wholly out of the frame.
  angle = jnp.asarray(rng.uniform(-np.pi, np.pi, n), jnp.float32)
  shift = jnp.asarray(rng.uniform(-8, 8, (n, 2)), jnp.float32)
  angle, shift = angle.at[0].set(0.0), shift.at[0].set(0.0)  # the identity too
  reference = jax.jit(augment.warp)(images, angle, shift)
  fast = jax.jit(augment.warp_matmul)(images, angle, shift)
  assert fast.shape == images.shape and fast.dtype == images.dtype
  np.testing.assert_allclose(fast, reference, rtol=0, atol=TOLERANCE)
  np.testing.assert_allclose(fast[0], images[0], rtol=0, atol=TOLERANCE)


def test_matmul_warp_in_random_affine_matches():
  """As the train step draws them: up to 10 degrees and 2 pixels, the same rng."""
  images = jnp.asarray(np.random.default_rng(1).random((32, 28, 28, 1)), jnp.float32)
  kwargs = dict(max_shift=2.0, max_rotate_deg=10.0)
  reference = augment.random_affine(images, jax.random.PRNGKey(3), **kwargs)
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(augment, "warp", augment.warp_matmul)
    fast = augment.random_affine(images, jax.random.PRNGKey(3), **kwargs)
  np.testing.assert_allclose(fast, reference, rtol=0, atol=TOLERANCE)


def test_matmul_warp_shifts_and_rotates_like_numpy():
  x = np.zeros((1, 5, 5, 1), np.float32)
  x[0, 1, 3, 0] = 1.0
  shifted = augment.warp_matmul(jnp.asarray(x), jnp.zeros(1), jnp.array([[1.0, -2.0]]))
  np.testing.assert_allclose(shifted[0, :, :, 0], np.roll(x[0, :, :, 0], (1, -2), (0, 1)),
                             atol=1e-6)
  rotated = augment.warp_matmul(jnp.asarray(x), jnp.array([np.pi / 2]), jnp.zeros((1, 2)))
  np.testing.assert_allclose(rotated[0, :, :, 0], np.rot90(x[0, :, :, 0]), atol=1e-6)
  # Half a pixel: the dot's weight splits evenly between two neighbours (bilinear).
  half = augment.warp_matmul(jnp.asarray(x), jnp.zeros(1), jnp.array([[0.0, 0.5]]))
  np.testing.assert_allclose(half[0, 1, 3:5, 0], [0.5, 0.5], atol=1e-6)
  np.testing.assert_allclose(half.sum(), 1.0, atol=1e-6)
