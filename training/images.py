"""Image files -> model inputs: any size PNG/JPEG, converted the way MNIST was made.

MNIST digits are white on black, scaled so their bounding box fits 20x20 pixels (keeping the
aspect ratio) and centred by their centre of mass in a 28x28 frame. A photo or a drawing of a
digit classifies well only after the same treatment, so `fit="digit"` repeats it;
`fit="resize"` simply resizes the whole image (right for datasets whose objects fill the frame,
such as fashion_mnist).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

from training.errors import ConfigError

FITS = ("digit", "resize")


def load(path: str, shape: tuple[int, int, int], *, invert: bool = False,
         fit: str = "digit") -> tuple[np.ndarray, bool]:
  """uint8 array of `shape` (H, W, C) from an image file, and whether the file's border is mostly
  light: dark ink on paper, which needs `invert` (a transparent background counts as dark: it
  takes the colour `invert` implies).

  `invert`: the file is dark ink on a light background (a scan, a drawing); the model expects
  light on dark. Images already of the model's size are used as they are (after `invert`).
  """
  if fit not in FITS:
    raise ConfigError(f"Unknown fit {fit!r}; choose one of {', '.join(FITS)}.")
  h, w, c = shape
  try:
    with Image.open(path) as img:
      img = ImageOps.exif_transpose(img)
      transparent = img.mode in ("RGBA", "LA", "PA") or (
          img.mode == "P" and "transparency" in img.info)
      if transparent:
        # Transparent pixels are background: white under dark ink, black under light ink.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255) if invert else
                               (0, 0, 0, 255))
        img = Image.alpha_composite(background, rgba)
      img = img.convert("L" if c == 1 else "RGB")
  except (OSError, ValueError) as e:  # PIL's UnidentifiedImageError is an OSError
    raise ConfigError(f"Cannot read {path!r} as an image ({e}); give PNG or JPEG files.") from e
  grey = np.asarray(img if c == 1 else img.convert("L"), np.float32)
  border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
  light = not transparent and bool(np.median(border) > 127)
  if invert:
    img = ImageOps.invert(img)
  if img.size == (w, h):
    return np.asarray(img, np.uint8).reshape(shape), light
  if fit == "digit" and c == 1:
    return _fit_digit(np.asarray(img, np.float32), h, w).reshape(shape), light
  return np.asarray(img.resize((w, h), Image.Resampling.LANCZOS), np.uint8).reshape(shape), light


def _fit_digit(a: np.ndarray, h: int, w: int) -> np.ndarray:
  """MNIST's normalization: ink bounding box into 20/28 of the frame, centred by mass."""
  a = a - np.median(a)  # the background (most of the image) becomes 0
  a = np.clip(a, 0, None)
  if a.max() <= 0:
    return np.zeros((h, w), np.uint8)
  rows, cols = np.nonzero(a > 0.25 * a.max())
  a = a[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
  box = 20 / 28 * min(h, w)
  scale = box / max(a.shape)
  size = (max(1, round(a.shape[1] * scale)), max(1, round(a.shape[0] * scale)))
  digit = np.asarray(Image.fromarray(a / a.max() * 255).resize(size, Image.Resampling.LANCZOS),
                     np.float32).clip(0, 255)
  ys, xs = np.indices(digit.shape)
  mass = digit.sum()
  cy, cx = (ys * digit).sum() / mass, (xs * digit).sum() / mass
  top = int(round((h - 1) / 2 - cy))
  left = int(round((w - 1) / 2 - cx))
  top = min(max(top, 0), h - digit.shape[0])
  left = min(max(left, 0), w - digit.shape[1])
  out = np.zeros((h, w), np.float32)
  out[top:top + digit.shape[0], left:left + digit.shape[1]] = digit
  return out.round().astype(np.uint8)
