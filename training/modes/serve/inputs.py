"""A request's images as model inputs, read as --mode=predict reads files (training/data/images.py:
the same fitting and notes), and what is wrong with a bad one, as an HTTP status and a message.
"""

from __future__ import annotations

import io
import re
import warnings
from typing import Any, Sequence

import numpy as np
from PIL import Image

from training.data import images

JSON_FORMAT = ('a JSON body is {{"images": [image, ...]}}, each image an array of {h}x{w} pixels '
               '(rows of numbers 0-255, light ink on a dark background)')


class BadInput(Exception):
  """A request the server cannot use: answered with `status` and {"error": message}."""

  def __init__(self, status: int, message: str):
    super().__init__(message)
    self.status, self.message = status, message


class _Upload(io.BytesIO):
  """An uploaded file's bytes, named by its file name in images.read's messages."""

  def __init__(self, data: bytes, name: str):
    super().__init__(data)
    self.name = name

  def __str__(self) -> str:
    return self.name


def quiet_image_warnings() -> None:
  """Process-wide, once at start-up: PIL's warnings about a request's image (its size over PIL's
  limit, odd metadata) are not the server's to print, its answer says what matters. Its warning
  of an image over its size limit becomes the error `read_upload` refuses, as --mode=predict's
  `images.read` does; a filter for the whole process, since `warnings.catch_warnings` around
  each image is not safe in the threads that decode them."""
  warnings.filterwarnings("ignore", module="PIL")
  warnings.filterwarnings("error", category=Image.DecompressionBombWarning)


def read_upload(name: str, data: bytes, shape: tuple[int, int, int], fit: str, invert: bool,
                max_pixels: int) -> images.Loaded:
  """An uploaded image file; its size is read from its header first, so that an image of too
  many pixels is refused before it is decoded."""
  if not data:
    raise BadInput(400, f"{name}: the file is empty; send an image file (PNG, JPEG, BMP).")
  try:
    with Image.open(io.BytesIO(data)) as img:
      width, height = img.size
  except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
    # PIL refuses an image over its own limit before its size can be asked (see above).
    width = height = 0
    found = re.search(r"\((\d+) pixels\)", str(e))
    pixels = f"{found.group(1) if found else 'more'}, over PIL's limit of {Image.MAX_IMAGE_PIXELS}"
  except Exception as e:  # PIL raises OSError, ValueError, SyntaxError for what is not an image
    raise BadInput(400, f"{name}: cannot be read as an image ({type(e).__name__}: "
                        f"{str(e)[:200]}); send PNG, JPEG or BMP files.") from None
  else:
    pixels = f"{width}x{height} = {width * height}"
  if not width or width * height > max_pixels:
    raise BadInput(413, f"{name}: too many pixels ({pixels}; the limit is {max_pixels}, "
                        "--max_pixels); scale the image down first.")
  try:
    return images.read(_Upload(data, name), shape, invert=invert, fit=fit)
  except images.ImageError as e:  # a truncated or damaged file: its header was fine
    raise BadInput(400, str(e)) from None


def read_arrays(body: Any, shape: tuple[int, int, int], invert: bool,
                max_images: int) -> list[images.Loaded]:
  """A JSON body's pixel arrays, each of the model's size (H, W) or (H, W, C)."""
  h, w, c = shape
  described = JSON_FORMAT.format(h=h, w=w)
  if not isinstance(body, dict) or not isinstance(body.get("images"), list):
    raise BadInput(400, f"no \"images\" list in the JSON body: {described}.")
  if not body["images"]:
    raise BadInput(400, f"\"images\" is empty: {described}.")
  if len(body["images"]) > max_images:
    raise BadInput(413, f"{len(body['images'])} images in one request, over the limit of "
                        f"{max_images} (--max_images); send them in several requests.")
  try:
    a = np.asarray(body["images"], np.float64)
  except (ValueError, TypeError):
    raise BadInput(400, f"\"images\" is not arrays of numbers of one shape: {described}.") from None
  given = list(a.shape)
  if a.ndim == 3 and c == 1:
    a = a[..., None]
  if a.shape[1:] != shape:
    raise BadInput(400, f"\"images\" has shape {given}, not [N, {h}, {w}]"
                        + (f" or [N, {h}, {w}, {c}]" if c == 1 else f", {c}]") + f": {described}.")
  if not np.isfinite(a).all() or a.min() < 0 or a.max() > 255:
    raise BadInput(400, f"\"images\" holds values outside 0-255: {described}.")
  return [_from_array(x.round().astype(np.uint8), shape, invert) for x in a]


def _from_array(pixels: np.ndarray, shape: tuple[int, int, int], invert: bool) -> images.Loaded:
  """A pixel array read as the PNG file it would be: the same notes (blank, light background)
  as an uploaded image's."""
  buffer = io.BytesIO()
  Image.fromarray(pixels[..., 0] if shape[2] == 1 else pixels).save(buffer, "PNG")
  return images.read(buffer, shape, invert=invert)


def answer(name: str, item: images.Loaded, p: np.ndarray, names: Sequence[str], invert: bool,
           light_matters: bool) -> dict[str, Any]:
  """One image's JSON answer: its class and that class's probability (none for a blank image:
  whatever the model says of it is noise), every class's probability, and the notes."""
  best = int(p.argmax())
  return {"file": name,
          "class_name": None if item.blank else names[best],
          "probability": None if item.blank else float(p[best]),
          "probabilities": dict(zip(names, map(float, p))),
          "notes": images.notes(item, invert, light_matters)}
