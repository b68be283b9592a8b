"""On-device data augmentation inside the jitted step: random translation, rotation and zoom,
whole-pixel crops and elastic distortion, all in one resampling of each image.

Each image gets its own warp: output pixel p samples the input at

    R(-angle) (p - shift - crop) / zoom + displacement(p)

about the image centre, resampled bilinearly with `jax.scipy.ndimage.map_coordinates`; pixels
from outside the image are 0, the MNIST background. `crop` is a whole-pixel translation (pad and
crop), so alone it moves pixels without blurring them; `displacement` is the elastic field of
Simard et al. (2003): uniform noise per pixel, smoothed by a Gaussian of `elastic_sigma` pixels
and scaled by `elastic` (alpha) pixels. The smoothing is two (H, H) and (W, W) matrix products
per image, cheap on CPU. Evaluation never augments its inputs at random; with `tta_shift` it
averages the model's outputs over fixed whole-pixel shifts (`test_time_logits`).

Magnitudes may be Python numbers or arrays (one value per population member, traced under
`jax.vmap`): the code never branches on their values, only on `enabled`, which is decided
while tracing.

`warp` gathers each output pixel's 4 neighbours. `warp_matmul` computes the same bilinear warp
(to float rounding) as two small batched matrix products, the form for GPU/TPU matmul units; the
cost of each on CPU is in docs/performance.md ("Train step ablation (CPU)").
`python bench/step_ablation.py --variants='best*aug*'` compares them in the step on any backend.
"""

from __future__ import annotations

import math
import numbers
from typing import Callable

import jax
import jax.numpy as jnp
from jax.scipy import ndimage

Magnitude = float | jax.Array


def enabled(magnitude: Magnitude) -> bool:
  """Whether an augmentation (or another option, e.g. label smoothing) runs at all. A number is
  on when non-zero; an array (one value per member of a population) is always on, since a traced
  one's values are unknown while tracing (a zero then applies nothing: the augmentations are the
  identity at zero magnitude)."""
  return not isinstance(magnitude, numbers.Number) or magnitude != 0


def random_affine(images: jax.Array, rng: jax.Array, *, max_shift: Magnitude = 0.0,
                  max_rotate_deg: Magnitude = 0.0, max_zoom: Magnitude = 0.0,
                  max_crop: Magnitude = 0, elastic: Magnitude = 0.0,
                  elastic_sigma: Magnitude = 4.0) -> jax.Array:
  """Each image of float (N, H, W, C) `images`, warped at random: shifted by up to `max_shift`
  pixels per axis, rotated by up to `max_rotate_deg` degrees, zoomed by a factor in
  [1 - max_zoom, 1 + max_zoom] (uniformly), translated by a whole number of pixels in
  [-max_crop, max_crop] per axis, and distorted by an elastic field of strength `elastic`
  pixels and smoothness `elastic_sigma` pixels. Returns `images` itself when all are off."""
  on = [enabled(m) for m in (max_shift, max_rotate_deg, max_zoom, max_crop, elastic)]
  if not any(on):
    return images
  n, h, w, _ = images.shape
  k_angle, k_shift = jax.random.split(rng)
  angle = jnp.deg2rad(max_rotate_deg) * jax.random.uniform(k_angle, (n,), minval=-1, maxval=1)
  shift = max_shift * jax.random.uniform(k_shift, (n, 2), minval=-1, maxval=1)
  zoom = displacement = None
  if on[2]:
    zoom = 1 + max_zoom * jax.random.uniform(jax.random.fold_in(rng, 2), (n,), minval=-1,
                                             maxval=1)
  if on[3]:
    # floor(u * (2m + 1)) - m for u in [0, 1): each whole offset in [-m, m] equally likely.
    u = jax.random.uniform(jax.random.fold_in(rng, 3), (n, 2))
    shift = shift + jnp.floor(u * (2 * max_crop + 1)) - max_crop
  if on[4]:
    displacement = elastic_field(jax.random.fold_in(rng, 4), n, h, w, elastic, elastic_sigma)
  return warp(images, angle, shift, zoom=zoom, displacement=displacement)


def gaussian_matrix(size: int, sigma: Magnitude) -> jax.Array:
  """(size, size) smoothing matrix: row i is a Gaussian of `sigma` pixels centred on i, scaled
  to sum to 1 over an unbounded line (so rows near the edges, cut off, sum to less)."""
  d = jnp.arange(size, dtype=jnp.float32)
  d = d[:, None] - d[None, :]
  sigma = jnp.asarray(sigma, jnp.float32)
  return jnp.exp(-0.5 * (d / sigma) ** 2) / (math.sqrt(2 * math.pi) * sigma)


def elastic_field(rng: jax.Array, n: int, h: int, w: int, alpha: Magnitude,
                  sigma: Magnitude) -> jax.Array:
  """(n, 2, h, w) random displacements (rows, columns) in pixels: uniform noise in [-1, 1] per
  pixel and axis, smoothed by a separable Gaussian of `sigma` pixels, times `alpha`."""
  noise = jax.random.uniform(rng, (n, 2, h, w), minval=-1, maxval=1)
  smooth = jnp.einsum("ij,nkjl,ml->nkim", gaussian_matrix(h, sigma), noise,
                      gaussian_matrix(w, sigma))
  return alpha * smooth


def sample_points(shape: tuple[int, int, int], angle: jax.Array, shift: jax.Array,
                  zoom: jax.Array | None = None, displacement: jax.Array | None = None
                  ) -> tuple[jax.Array, jax.Array]:
  """(rows, columns), each (n, h, w): where each output pixel of a warped (n, h, w) batch
  samples its input. The inverse map: output pixel p samples R(-a) (p - t) / zoom about the
  centre, plus `displacement` (n, 2, h, w) when given."""
  n, h, w = shape
  cy, cx = (h - 1) / 2, (w - 1) / 2
  y = (jnp.arange(h, dtype=jnp.float32) - cy)[None, :, None] - shift[:, 0, None, None]
  x = (jnp.arange(w, dtype=jnp.float32) - cx)[None, None, :] - shift[:, 1, None, None]
  cos, sin = jnp.cos(angle)[:, None, None], jnp.sin(angle)[:, None, None]
  sy, sx = cos * y + sin * x, -sin * y + cos * x
  if zoom is not None:
    sy, sx = sy / zoom[:, None, None], sx / zoom[:, None, None]
  sy, sx = sy + cy, sx + cx
  if displacement is not None:
    sy, sx = sy + displacement[:, 0], sx + displacement[:, 1]
  return sy, sx


def warp(images: jax.Array, angle: jax.Array, shift: jax.Array, *,
         zoom: jax.Array | None = None, displacement: jax.Array | None = None) -> jax.Array:
  """Rotates image i by angle[i] radians (counter-clockwise as displayed) about its centre,
  zooms it by zoom[i], then shifts it by shift[i] = (rows down, columns right) pixels, and
  moves each output pixel's sample point by `displacement` (n, 2, h, w) (see `sample_points`)."""
  n, h, w, _ = images.shape
  sy, sx = sample_points((n, h, w), angle, shift, zoom, displacement)

  def one(image, rows, cols):
    sample = lambda channel: ndimage.map_coordinates(channel, [rows, cols], order=1,
                                                     mode="constant")
    return jax.vmap(sample, in_axes=-1, out_axes=-1)(image)

  return jax.vmap(one)(images, sy, sx).astype(images.dtype)


def warp_matmul(images: jax.Array, angle: jax.Array, shift: jax.Array, *,
                zoom: jax.Array | None = None, displacement: jax.Array | None = None
                ) -> jax.Array:
  """`warp` as matrix products, no gather: the same output to within float rounding (at most a
  few 1e-6 for pixels in [0, 1]; tests/test_augment.py).

  Bilinear resampling with zeros outside is out[p] = sum_ij hat(sy_p - i) hat(sx_p - j) in[i, j]
  with hat(d) = max(0, 1 - |d|) and (sy_p, sx_p) the point that output pixel p samples: the two
  non-zero weights of each hat are the bilinear weights, and rows/columns outside the image have
  none, so they read as 0. Per image, the sum over columns j is a (H*W, W) x (W, H*C) product and
  the sum over rows i a weighted sum of H terms per output pixel.
  """
  n, h, w, c = images.shape
  sy, sx = sample_points((n, h, w), angle, shift, zoom, displacement)
  sy, sx = sy.reshape(n, h * w, 1), sx.reshape(n, h * w, 1)
  rows = jnp.maximum(0.0, 1.0 - jnp.abs(sy - jnp.arange(h, dtype=jnp.float32)))  # (n, HW, H)
  cols = jnp.maximum(0.0, 1.0 - jnp.abs(sx - jnp.arange(w, dtype=jnp.float32)))  # (n, HW, W)
  # Full float32 products: on GPU the default would round the inputs to TF32 (about 1e-3).
  exact = jax.lax.Precision.HIGHEST
  by_row = jnp.einsum("npj,nijc->npic", cols, images.astype(jnp.float32), precision=exact)
  out = jnp.einsum("npi,npic->npc", rows, by_row, precision=exact)
  return out.reshape(n, h, w, c).astype(images.dtype)


def shifted_views(images: jax.Array, pixels: int) -> jax.Array:
  """(5, N, H, W, C): `images` and their copies moved by `pixels` whole pixels down, up, right
  and left (zeros shifted in), the views of test-time augmentation."""
  _, h, w, _ = images.shape
  p = pixels
  padded = jnp.pad(images, ((0, 0), (p, p), (p, p), (0, 0)))
  moves = ((0, 0), (p, 0), (-p, 0), (0, p), (0, -p))
  return jnp.stack([padded[:, p - dy:p - dy + h, p - dx:p - dx + w] for dy, dx in moves])


def test_time_logits(apply: Callable[[jax.Array], jax.Array], images: jax.Array,
                     pixels: int) -> jax.Array:
  """Test-time augmentation: the log of the mean of the softmax outputs of `apply` (a model in
  evaluation mode) over `shifted_views(images, pixels)`, as (N, classes) logits."""
  views = shifted_views(images, pixels)
  logits = apply(views.reshape(-1, *images.shape[1:])).reshape(views.shape[0], images.shape[0], -1)
  return jax.nn.logsumexp(jax.nn.log_softmax(logits), axis=0) - jnp.log(views.shape[0])
