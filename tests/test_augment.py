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


# --- The augmentations: crop, zoom, elastic distortion, with magnitudes as numbers or arrays ---

ALL_ON = dict(max_shift=2.0, max_rotate_deg=10.0, max_zoom=0.1, max_crop=2, elastic=34.0,
              elastic_sigma=4.0)
EACH = [dict(max_zoom=0.15), dict(max_crop=2), dict(elastic=34.0, elastic_sigma=4.0), ALL_ON]


def _digits(n=16, seed=0):
  """Blobs away from the border, like digits: zeros around, so nothing is lost at the edges."""
  x = np.zeros((n, 28, 28, 1), np.float32)
  x[:, 8:20, 10:18] = np.random.default_rng(seed).random((n, 12, 8, 1))
  return jnp.asarray(x)


def test_enabled_is_static_for_numbers_and_on_for_arrays():
  assert not augment.enabled(0) and not augment.enabled(0.0)
  assert augment.enabled(2) and augment.enabled(np.float32(0.5))
  assert augment.enabled(jnp.zeros(())) and augment.enabled(jnp.zeros(4))


@pytest.mark.parametrize("kwargs", EACH)
def test_each_augmentation_is_shaped_seeded_and_per_image(kwargs):
  images = _digits()
  a = augment.random_affine(images, jax.random.PRNGKey(0), **kwargs)
  b = augment.random_affine(images, jax.random.PRNGKey(0), **kwargs)
  c = augment.random_affine(images, jax.random.PRNGKey(1), **kwargs)
  assert a.shape == images.shape and a.dtype == images.dtype
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)
  twice = jnp.concatenate([images[:1], images[:1]])
  pair = augment.random_affine(twice, jax.random.PRNGKey(0), **kwargs)
  assert not np.allclose(pair[0], pair[1])
  assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0 + 1e-6


def test_off_is_untouched_and_zero_arrays_are_the_identity():
  images = _digits()
  off = {k: 0.0 for k in ALL_ON if k != "elastic_sigma"}
  assert augment.random_affine(images, jax.random.PRNGKey(0), **off) is images
  # Arrays are always "on" (their values may be traced): at zero they must change nothing.
  zeros = {k: jnp.zeros(()) for k in off}
  out = jax.jit(lambda x, m: augment.random_affine(x, jax.random.PRNGKey(0), **m))(images, zeros)
  np.testing.assert_allclose(out, images, atol=1e-6)


def test_crop_moves_each_image_by_whole_pixels_within_the_bound():
  images = _digits(64)
  out = np.asarray(augment.random_affine(images, jax.random.PRNGKey(0), max_crop=2))
  seen = set()
  for x, y in zip(np.asarray(images), out):
    offsets = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
               if np.allclose(np.roll(x, (dy, dx), (0, 1)), y, atol=1e-6)]
    assert len(offsets) == 1, "an exact whole-pixel translation within +-2"
    seen.add(offsets[0])
  assert len(seen) >= 15  # 25 offsets, 64 draws: most of them turn up


def test_zoom_scales_about_the_centre():
  x = np.zeros((1, 9, 9, 1), np.float32)
  x[0, 4, 6, 0] = 1.0  # 2 pixels right of the centre
  zoomed = augment.warp(jnp.asarray(x), jnp.zeros(1), jnp.zeros((1, 2)), zoom=jnp.array([1.5]))
  assert float(zoomed[0, 4, 7, 0]) == pytest.approx(1.0)  # 3 pixels right of it


def test_a_constant_displacement_samples_from_there():
  """Output pixel p samples the input at p + d: the content moves by -d."""
  x = _dot(h=6, w=6, at=(2, 3))
  d = jnp.broadcast_to(jnp.array([1.0, -2.0])[None, :, None, None], (1, 2, 6, 6))
  for warp in (augment.warp, augment.warp_matmul):
    out = warp(jnp.asarray(x), jnp.zeros(1), jnp.zeros((1, 2)), displacement=d)
    np.testing.assert_allclose(out[0, :, :, 0], np.roll(x[0, :, :, 0], (-1, 2), (0, 1)),
                               atol=1e-6)


def _dot(h, w, at):
  x = np.zeros((1, h, w, 1), np.float32)
  x[0, at[0], at[1], 0] = 1.0
  return x


def test_matmul_warp_matches_with_zoom_and_displacement():
  images = _digits(8)
  rng = np.random.default_rng(2)
  args = (jnp.asarray(rng.uniform(-0.3, 0.3, 8), jnp.float32),
          jnp.asarray(rng.uniform(-2, 2, (8, 2)), jnp.float32))
  extra = dict(zoom=jnp.asarray(rng.uniform(0.8, 1.2, 8), jnp.float32),
               displacement=augment.elastic_field(jax.random.PRNGKey(0), 8, 28, 28, 34.0, 4.0))
  np.testing.assert_allclose(augment.warp_matmul(images, *args, **extra),
                             augment.warp(images, *args, **extra), rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("sigma", [4.0, 6.0])
def test_elastic_displacements_have_the_expected_statistics(sigma):
  """Uniform noise (variance 1/3) smoothed by the Gaussian matrices G: at pixel (i, j) the
  displacement's variance is alpha^2 / 3 * sum_a G[i, a]^2 * sum_b G[j, b]^2, about
  (alpha / (2 sqrt(3 pi) sigma))^2 away from the edges: 1.38 pixels for alpha 34, sigma 4."""
  alpha, n = 34.0, 4096
  field = np.asarray(augment.elastic_field(jax.random.PRNGKey(0), n, 28, 28, alpha, sigma))
  g = np.asarray(augment.gaussian_matrix(28, sigma))
  expected = alpha * np.sqrt((g ** 2).sum(1)[:, None] * (g ** 2).sum(1)[None, :] / 3)
  assert expected[14, 14] == pytest.approx(alpha / (2 * np.sqrt(3 * np.pi) * sigma), rel=0.03)
  std = field.std(axis=0)  # (2, 28, 28): per axis and pixel, over the images
  np.testing.assert_allclose(std, np.broadcast_to(expected, std.shape), rtol=0.1)
  assert abs(field.mean()) < 0.02 * expected.max()
  # Smooth: neighbouring pixels move together; the two axes are independent.
  centre = field[:, :, 14, 14]
  assert np.corrcoef(centre[:, 0], field[:, 0, 14, 15])[0, 1] > 0.9
  assert abs(np.corrcoef(centre[:, 0], centre[:, 1])[0, 1]) < 0.1
  double = augment.elastic_field(jax.random.PRNGKey(0), n, 28, 28, 2 * alpha, sigma)
  np.testing.assert_allclose(double, 2 * field, rtol=1e-5, atol=1e-6)


def test_per_example_magnitudes_under_vmap():
  """As a population would run it: one magnitude per member, traced by jax.vmap, never read
  in Python. A member with zeros gets its images back; the others match the unbatched call."""
  images = _digits(8)
  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  magnitudes = {k: jnp.array([0.0, v, v / 2], jnp.float32) for k, v in ALL_ON.items()
                if k != "elastic_sigma"}
  magnitudes["elastic_sigma"] = jnp.array([4.0, 4.0, 6.0])
  out = jax.jit(jax.vmap(lambda k, m: augment.random_affine(images, k, **m)))(keys, magnitudes)
  assert out.shape == (3, *images.shape)
  np.testing.assert_allclose(out[0], images, atol=1e-6)
  for i in (1, 2):
    one = augment.random_affine(images, keys[i], **{k: float(v[i]) for k, v in magnitudes.items()})
    np.testing.assert_allclose(out[i], one, atol=1e-5)
  assert not np.allclose(out[1], images)


# --- Test-time augmentation: fixed whole-pixel shifts, the softmax averaged over them ---

def test_shifted_views_move_the_image_by_whole_pixels():
  x = _dot(h=7, w=7, at=(3, 3))
  views = np.asarray(augment.shifted_views(jnp.asarray(x), 2))[:, 0, :, :, 0]
  assert views.shape == (5, 7, 7)
  dots = [tuple(int(i) for i in np.argwhere(v == 1)[0]) for v in views]
  assert dots == [(3, 3), (5, 3), (1, 3), (3, 5), (3, 1)]
  assert all(v.sum() == 1 for v in views)


def test_test_time_logits_are_the_log_of_the_mean_softmax():
  images = _digits(4)
  w = jnp.asarray(np.random.default_rng(0).normal(size=(28 * 28, 10)), jnp.float32)
  apply = lambda x: x.reshape(x.shape[0], -1) @ w
  out = augment.test_time_logits(apply, images, 1)
  views = augment.shifted_views(images, 1)
  expected = np.mean([jax.nn.softmax(apply(v)) for v in views], axis=0)
  np.testing.assert_allclose(np.exp(out), expected, rtol=1e-5, atol=1e-7)
