"""Image files -> model inputs: any size PNG/JPEG, converted the way MNIST was made.

MNIST digits are white on black: each NIST digit (binary, at a higher resolution) was scaled so
that its bounding box fits 20x20 pixels (keeping the aspect ratio), anti-aliased as it was
scaled down, and placed in a 28x28 frame so that its centre of mass falls on pixel (14, 14).
A photo or a drawing of a digit classifies well only after the same treatment, so
`fit="digit"` repeats it; `fit="resize"` simply resizes the whole image (right for datasets
whose objects fill the frame, such as fashion_mnist).
"""

from __future__ import annotations

import dataclasses
import re
import warnings

import numpy as np
from PIL import Image, ImageOps

from training.errors import ConfigError

FITS = ("digit", "resize")
MIN_SIDE = 8  # pixels: a smaller image cannot hold a recognizable digit
# Larger images are first reduced (averaging blocks of pixels) to at most this side, which
# bounds the memory and time of the fitting and changes nothing at the 20-pixel scale.
WORK_SIDE = 1024
# Ink is what lies above the background by at least this share of the darkest-to-lightest
# range: low enough to keep a stroke's anti-aliased ends, high enough to skip JPEG's noise.
# (On enlarged test digits, 0.15-0.5 were all within 0.1 point of the originals with the CNN,
# but a less forgiving MLP lost 0.2-0.5 point above 0.25.)
INK_THRESHOLD = 0.25
# Lanczos: anti-aliased like an area average, and a little sharper, which undoes some of the
# blur of an enlarged image (on 10,000 enlarged test digits it lost at most 0.05 point to the
# originals, against 0.11 for a box filter; see docs/reliability.md).
DOWNSCALE = Image.Resampling.LANCZOS
BLANK_RANGE = 24  # grey levels (of 255): an image whose pixels span fewer has no ink


class ImageError(ConfigError):
  """An image file that cannot be used: missing, unreadable, or too large to decode."""


@dataclasses.dataclass
class Loaded:
  array: np.ndarray  # uint8 of the model's shape (H, W, C)
  light: bool  # the border is mostly light: dark ink on paper, which needs `invert`
  warnings: list[str]  # why the prediction may mean nothing (a blank or tiny image)


def load(path: str, shape: tuple[int, int, int], *, invert: bool = False,
         fit: str = "digit") -> tuple[np.ndarray, bool]:
  """uint8 array of `shape` (H, W, C) from an image file, and whether the file's border is mostly
  light: dark ink on paper, which needs `invert` (a transparent background counts as dark: it
  takes the colour `invert` implies). See `read`."""
  loaded = read(path, shape, invert=invert, fit=fit)
  return loaded.array, loaded.light


def read(path, shape: tuple[int, int, int], *, invert: bool = False,
         fit: str = "digit") -> Loaded:
  """The image file `path` as a model input (see `Loaded`); raises ImageError for a file that
  cannot be used, naming it and why.

  `invert`: the file is dark ink on a light background (a scan, a drawing); the model expects
  light on dark. Images already of the model's size are used as they are (after `invert`).
  Images over PIL's size limit (`Image.MAX_IMAGE_PIXELS`, about 89 megapixels) are refused:
  decoding one could exhaust the memory (a "decompression bomb").
  """
  if fit not in FITS:
    raise ConfigError(f"Unknown fit {fit!r}; choose one of {', '.join(FITS)}.")
  h, w, c = shape
  img, size, transparent = _open(path, c, invert)
  notes = []
  if min(size) < MIN_SIDE:
    notes.append(f"{size[0]}x{size[1]} pixels: too small to hold a digit")
  if max(img.size) > WORK_SIDE:
    img = img.reduce(-(-max(img.size) // WORK_SIDE))  # block averages: bounded memory
  grey = np.asarray(img if c == 1 else img.convert("L"), np.float32)
  blank = float(grey.max() - grey.min()) < BLANK_RANGE
  if blank:
    notes.append("blank: no ink found")
  border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
  light = not (transparent or blank) and bool(np.median(border) > 127)
  if invert:
    img = ImageOps.invert(img)
  if img.size == (w, h):
    array = np.asarray(img, np.uint8).reshape(shape)
  elif fit == "digit" and c == 1:
    array = _fit_digit(np.asarray(img, np.float32), h, w).reshape(shape)
  else:
    array = np.asarray(img.resize((w, h), Image.Resampling.LANCZOS), np.uint8).reshape(shape)
  return Loaded(array, light, notes)


def _open(path, channels: int, invert: bool) -> tuple[Image.Image, tuple[int, int], bool]:
  """(the image as "L" or "RGB", its size in the file, whether it had transparency), upright
  (EXIF); raises ImageError for a file that cannot be used."""
  try:
    with warnings.catch_warnings():
      # PIL warns of images over its limit and refuses those over twice as large.
      warnings.simplefilter("error", Image.DecompressionBombWarning)
      with Image.open(path) as img:
        size = img.size
        img = ImageOps.exif_transpose(img)
        transparent = img.mode in ("RGBA", "LA", "PA") or (
            img.mode == "P" and "transparency" in img.info)
        if transparent:
          # Transparent pixels are background: white under dark ink, black under light ink.
          rgba = img.convert("RGBA")
          background = Image.new("RGBA", rgba.size, (255, 255, 255, 255) if invert else
                                 (0, 0, 0, 255))
          img = Image.alpha_composite(background, rgba)
        return img.convert("L" if channels == 1 else "RGB"), size, transparent
  except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
    found = re.search(r"\((\d+) pixels\)", str(e))
    raise ImageError(f"{path}: too large to read safely ({found.group(1) if found else 'too many'}"
                     f" pixels, over PIL's limit of {Image.MAX_IMAGE_PIXELS}); scale it down "
                     "first.") from None
  except FileNotFoundError:
    raise ImageError(f"{path}: no such file.") from None
  except IsADirectoryError:
    raise ImageError(f"{path}: is a directory, not an image file.") from None
  except Exception as e:  # PIL raises OSError, ValueError, SyntaxError, EOFError, struct.error
    raise ImageError(f"{path}: cannot be read as an image ({type(e).__name__}: "
                     f"{str(e)[:200]}); give PNG or JPEG files.") from None


def _fit_digit(a: np.ndarray, h: int, w: int) -> np.ndarray:
  """MNIST's normalization: the ink's bounding box scaled (anti-aliased) to fit 20/28 of the
  frame, keeping its aspect ratio, then moved by whole pixels so that its centre of mass falls
  on pixel (h // 2, w // 2), where MNIST's digits have theirs (their centres of mass lie within
  half a pixel of (14, 14), in row and column indices)."""
  a = a - np.median(a)  # the background (most of the image) becomes 0
  a = np.clip(a, 0, None)
  if a.max() <= 0:
    return np.zeros((h, w), np.uint8)
  rows, cols = np.nonzero(a > INK_THRESHOLD * a.max())
  a = a[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
  scale = 20 / 28 * min(h, w) / max(a.shape)
  size = (max(1, round(a.shape[1] * scale)), max(1, round(a.shape[0] * scale)))
  resample = DOWNSCALE if scale < 1 else Image.Resampling.BILINEAR
  digit = np.asarray(Image.fromarray(a).resize(size, resample), np.float32).clip(0, None)
  digit *= 255 / max(float(digit.max()), 1e-6)
  ys, xs = np.indices(digit.shape)
  mass = digit.sum()
  cy, cx = (ys * digit).sum() / mass, (xs * digit).sum() / mass
  top = int(round(h // 2 - cy))
  left = int(round(w // 2 - cx))
  top = min(max(top, 0), h - digit.shape[0])
  left = min(max(left, 0), w - digit.shape[1])
  out = np.zeros((h, w), np.float32)
  out[top:top + digit.shape[0], left:left + digit.shape[1]] = digit
  return out.round().clip(0, 255).astype(np.uint8)
