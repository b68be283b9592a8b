"""On-device data augmentation: random translation and small rotation, inside the jitted step.

Each image gets its own affine warp (rotation about the centre, then a shift), resampled
bilinearly with `jax.scipy.ndimage.map_coordinates`; pixels from outside the image are 0, the
MNIST background. Evaluation never augments.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy import ndimage


def random_affine(images: jax.Array, rng: jax.Array, *, max_shift: float = 0.0,
                  max_rotate_deg: float = 0.0) -> jax.Array:
  """Shifts each image by up to `max_shift` pixels per axis and rotates it by up to
  `max_rotate_deg` degrees, uniformly at random. `images`: float (N, H, W, C)."""
  if not max_shift and not max_rotate_deg:
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
