"""Image files -> model inputs: any size PNG/JPEG, converted the way MNIST was made.

MNIST digits are white on black: each NIST digit (binary, at a higher resolution) was scaled so
that its bounding box fits 20x20 pixels (keeping the aspect ratio), anti-aliased as it was
scaled down, and placed in a 28x28 frame so that its centre of mass falls on pixel (14, 14).
A photo or a drawing of a digit classifies well only after the same treatment, so
`fit="digit"` repeats it; `fit="resize"` simply resizes the whole image (right for datasets
whose objects fill the frame, such as fashion_mnist).

Pixels deeper than 8 bits are scaled to 0-255, never clipped: integer images by their bit depth
(16-bit PNGs and TIFFs: 65535 is white; a TIFF's own bits per sample where it gives them, and
for 32-bit ones, which PIL reads as signed, 2**31 - 1), float images as [0, 1] when their values
lie there, else by the smallest of 255 and 65535 that holds their maximum, else from their
minimum to their maximum.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from typing import Any, Iterator, Sequence

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


BLANK_NOTE = "blank: no ink found"
LIGHT_NOTE = "light background: dark ink on paper needs --invert"


@dataclasses.dataclass
class Loaded:
  array: np.ndarray  # uint8 of the model's shape (H, W, C)
  light: bool  # the border is mostly light: dark ink on paper, which needs `invert`
  warnings: list[str]  # why the prediction may mean nothing (a blank or tiny image)
  blank: bool = False  # no ink at all: any class a model gives it means nothing


def notes(item: Loaded, invert: bool, light_matters: bool = True) -> list[str]:
  """Why a model's answer for this image may mean nothing, as --mode=predict and the examples
  print it: blank, too small, or dark ink on a light background read without `invert` (when
  `light_matters`: the model learnt light ink on dark, as MNIST's)."""
  return item.warnings + ([LIGHT_NOTE] if item.light and not invert and light_matters else [])


def load(path: str, shape: tuple[int, int, int], *, invert: bool = False,
         fit: str = "digit") -> tuple[np.ndarray, bool]:
  """uint8 array of `shape` (H, W, C) from an image file, and whether the file's border is mostly
  light: dark ink on paper, which needs `invert` (a transparent background counts as dark: it
  takes the colour `invert` implies). See `read`."""
  loaded = read(path, shape, invert=invert, fit=fit)
  return loaded.array, loaded.light


def read_batches(paths: Sequence[str], shape: tuple[int, int, int], batch_size: int = 256, *,
                 invert: bool = False, fit: str = "digit"
                 ) -> Iterator[tuple[Sequence[str], list[Loaded | ImageError], np.ndarray]]:
  """The image files `batch_size` at a time, so that memory does not grow with their number:
  (the batch's paths, each one's `Loaded` or `ImageError`, their arrays as one uint8 array of
  (batch_size, H, W, C)). The array is the same one each time, refilled: one shape, so that a
  jitted model compiles once; the rows of files that failed and past a short last batch hold
  nothing of use."""
  batch = np.zeros((batch_size, *shape), np.uint8)
  for start in range(0, len(paths), batch_size):
    chunk = paths[start:start + batch_size]
    loaded: list[Loaded | ImageError] = []
    for i, path in enumerate(chunk):
      try:
        loaded.append(read(path, shape, invert=invert, fit=fit))
        batch[i] = loaded[-1].array
      except ImageError as e:
        loaded.append(e)
    yield chunk, loaded, batch


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
  found = []
  if min(size) < MIN_SIDE:
    found.append(f"{size[0]}x{size[1]} pixels: too small to hold a digit")
  if max(img.size) > WORK_SIDE:
    img = img.reduce(-(-max(img.size) // WORK_SIDE))  # block averages: bounded memory
  grey = np.asarray(img if c == 1 else img.convert("L"), np.float32)
  blank = float(grey.max() - grey.min()) < BLANK_RANGE
  if blank:
    found.append(BLANK_NOTE)
  border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
  light = not (transparent or blank) and _median(border) > 127
  if invert:
    img = ImageOps.invert(img)
  if img.size == (w, h):
    array = np.asarray(img, np.uint8).reshape(shape)
  elif fit == "digit" and c == 1:
    array = _fit_digit(np.asarray(img, np.float32), h, w).reshape(shape)
  else:
    array = np.asarray(img.resize((w, h), Image.Resampling.LANCZOS), np.uint8).reshape(shape)
  return Loaded(array, light, found, blank)


def _median(values: np.ndarray) -> float:
  """np.median of a small 1-D array, without its general machinery (a twentieth of a served
  request's time)."""
  ordered, middle = np.sort(values), len(values) // 2
  return float(ordered[middle] if len(values) % 2 else (ordered[middle - 1] + ordered[middle]) / 2)


def _open(path, channels: int, invert: bool) -> tuple[Image.Image, tuple[int, int], bool]:
  """(the image as "L" or "RGB", its size in the file, whether it had transparency), upright
  (EXIF); raises ImageError for a file that cannot be used."""
  try:
    with warnings.catch_warnings():
      # PIL warns of images over its limit and refuses those over twice as large.
      warnings.simplefilter("error", Image.DecompressionBombWarning)
      with Image.open(path) as img:
        size, bits = img.size, getattr(img, "tag_v2", {}).get(258)  # a TIFF's bits per sample
        # In place: otherwise every upright image (most of them) is copied once more.
        ImageOps.exif_transpose(img, in_place=True)
        if img.mode in DEEP_MODES:
          img = _to_8bit(img, bits)
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


# PIL's modes of grey pixels deeper than 8 bits, which its convert("L") would clip at 255.
DEEP_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def _to_8bit(img: Image.Image, bits: Any) -> Image.Image:
  """A grey image of more than 8 bits as "L", scaled by the rule in the module's docstring
  (`bits`: the file's bits per sample, where it gives them)."""
  a = np.asarray(img, np.float64)
  if img.mode == "F":
    low, high = (0.0, next((top for top in (1.0, 255.0, 65535.0) if a.max() <= top), a.max()))
    if a.min() < 0:
      low, high = a.min(), a.max()
  else:  # PIL holds 16-bit PNGs in "I;16" (older Pillows: "I"), 32-bit TIFFs as signed ints
    bits = bits[0] if isinstance(bits, tuple) else bits
    bits = bits if isinstance(bits, int) and 8 < bits < 32 else 31 if bits == 32 else 16
    low, high = 0.0, 2.0 ** bits - 1
  a = (a - low) / max(high - low, 1e-12) * 255
  return Image.fromarray(np.nan_to_num(a).round().clip(0, 255).astype(np.uint8), "L")


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
