"""On-device data augmentation: random translation and small rotation, inside the jitted step.

Each image gets its own affine warp (rotation about the centre, then a shift), resampled
bilinearly with `jax.scipy.ndimage.map_coordinates`; pixels from outside the image are 0, the
MNIST background. Evaluation never augments.

`warp` gathers each output pixel's 4 neighbours. `warp_matmul` computes the same bilinear warp
(to float rounding) as two small batched matrix products, the form for GPU/TPU matmul units. On
the 2-core CPU, `warp` took 1.9-2.6 ms per batch of 128 on its own, `warp_matmul` 22-29 ms; in
`configs/best.py`'s train step augmentation was within the noise of none (CPU time 1.03x of the
step without it) in either form (docs/performance.md, "Train step ablation (CPU)").
`python bench/step_ablation.py --variants='best*aug*'` compares the two in the step on any backend.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy import ndimage


def enabled(value) -> bool:
  """Whether an augmentation (or another option) of magnitude `value` is on: a number that is not
  0, or an array, which is one value per member of a population (decided inside the step)."""
  return not isinstance(value, (int, float)) or value != 0


def random_affine(images: jax.Array, rng: jax.Array, *, max_shift: float = 0.0,
                  max_rotate_deg: float = 0.0) -> jax.Array:
  """Shifts each image by up to `max_shift` pixels per axis and rotates it by up to
  `max_rotate_deg` degrees, uniformly at random. `images`: float (N, H, W, C)."""
  if not (enabled(max_shift) or enabled(max_rotate_deg)):
    return images
  n = images.shape[0]
  k_angle, k_shift = jax.random.split(rng)
  angle = jnp.deg2rad(max_rotate_deg) * jax.random.uniform(k_angle, (n,), minval=-1, maxval=1)
  shift = max_shift * jax.random.uniform(k_shift, (n, 2), minval=-1, maxval=1)
  return warp(images, angle, shift)


def warp(images: jax.Array, angle: jax.Array, shift: jax.Array) -> jax.Array:
  """Rotates image i by angle[i] radians (counter-clockwise as displayed) about its centre,
  then shifts it by shift[i] = (rows down, columns right) pixels."""
  _, h, w, _ = images.shape
  cy, cx = (h - 1) / 2, (w - 1) / 2
  ys, xs = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32) - cy,
                        jnp.arange(w, dtype=jnp.float32) - cx, indexing="ij")

  def warp(image, a, t):
    # Inverse map: the output pixel p samples the input at R(-a) (p - t).
    y, x = ys - t[0], xs - t[1]
    cos, sin = jnp.cos(a), jnp.sin(a)
    coords = [cos * y + sin * x + cy, -sin * y + cos * x + cx]
    sample = lambda channel: ndimage.map_coordinates(channel, coords, order=1, mode="constant")
    return jax.vmap(sample, in_axes=-1, out_axes=-1)(image)

  return jax.vmap(warp)(images, angle, shift).astype(images.dtype)


def warp_matmul(images: jax.Array, angle: jax.Array, shift: jax.Array) -> jax.Array:
  """`warp` as matrix products, no gather: the same output to within float rounding (at most a
  few 1e-6 for pixels in [0, 1]; tests/test_augment.py).

  Bilinear resampling with zeros outside is out[p] = sum_ij hat(sy_p - i) hat(sx_p - j) in[i, j]
  with hat(d) = max(0, 1 - |d|) and (sy_p, sx_p) the point that output pixel p samples: the two
  non-zero weights of each hat are the bilinear weights, and rows/columns outside the image have
  none, so they read as 0. Per image, the sum over columns j is a (H*W, W) x (W, H*C) product and
  the sum over rows i a weighted sum of H terms per output pixel.
  """
  n, h, w, c = images.shape
  cy, cx = (h - 1) / 2, (w - 1) / 2
  # Inverse map, as in `warp`: the output pixel p samples the input at R(-a) (p - t).
  y = (jnp.arange(h, dtype=jnp.float32) - cy)[None, :, None] - shift[:, 0, None, None]
  x = (jnp.arange(w, dtype=jnp.float32) - cx)[None, None, :] - shift[:, 1, None, None]
  cos, sin = jnp.cos(angle)[:, None, None], jnp.sin(angle)[:, None, None]
  sy = (cos * y + sin * x + cy).reshape(n, h * w, 1)
  sx = (-sin * y + cos * x + cx).reshape(n, h * w, 1)
  rows = jnp.maximum(0.0, 1.0 - jnp.abs(sy - jnp.arange(h, dtype=jnp.float32)))  # (n, HW, H)
  cols = jnp.maximum(0.0, 1.0 - jnp.abs(sx - jnp.arange(w, dtype=jnp.float32)))  # (n, HW, W)
  # Full float32 products: on GPU the default would round the inputs to TF32 (about 1e-3).
  exact = jax.lax.Precision.HIGHEST
  by_row = jnp.einsum("npj,nijc->npic", cols, images.astype(jnp.float32), precision=exact)
  out = jnp.einsum("npi,npic->npc", rows, by_row, precision=exact)
  return out.reshape(n, h, w, c).astype(images.dtype)
