"""A batch of images as one PNG grid (the GAN's samples each epoch)."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image


def tile(images: np.ndarray, nrow: int, pad: int = 2) -> np.ndarray:
  """uint8 (N, H, W, C) -> one uint8 (rows*(H+pad)+pad, nrow*(W+pad)+pad, C) image, row-major,
  on a black background; a last row that is not full stays black."""
  images = np.asarray(images)
  if images.dtype != np.uint8 or images.ndim != 4:
    raise ValueError(f"Expected uint8 images (N, H, W, C), got {images.dtype} {images.shape}.")
  n, h, w, c = images.shape
  ncol = max(1, min(nrow, n))
  rows = -(-n // ncol)
  grid = np.zeros((rows * (h + pad) + pad, ncol * (w + pad) + pad, c), np.uint8)
  for i, image in enumerate(images):
    top, left = pad + (i // ncol) * (h + pad), pad + (i % ncol) * (w + pad)
    grid[top:top + h, left:left + w] = image
  return grid


def save_grid(images: np.ndarray, path: str, nrow: int = 10, scale: int = 2) -> str:
  """Writes `images` (uint8 (N, H, W, C), C = 1 or 3) as one PNG grid of `nrow` images a row,
  enlarged `scale` times (nearest neighbour); returns `path`."""
  grid = tile(images, nrow)
  if scale > 1:
    grid = grid.repeat(scale, 0).repeat(scale, 1)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(path)
  return path
