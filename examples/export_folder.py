"""What both classify examples read of an export folder: model.json, checked, and the path of the
model file of one format. A missing or damaged export is one `error:` line that says to export
again. Imports nothing but the standard library (to deploy, copy it along with the example)."""

import json
import os
import sys
from typing import NamedTuple


class Export(NamedTuple):
  shape: tuple  # (H, W, C) of an image; the batch size is free
  class_names: list
  fit: str  # how images of another size are fitted (training/data/images.py's FITS)
  light_matters: bool  # whether a light background is worth a note (not for a folder's model)
  path: str  # the model file of the format asked for


def damaged(export_dir: str, why: str) -> None:
  """Exits with one `error:` line: the export is unusable (`why`), and how to make it again."""
  sys.exit(f"error: {why}; export it again: python train.py --mode=export --workdir=RUN "
           f"--output={export_dir} --overwrite")


def read(export_dir: str, fmt: str, fits: tuple, other: str) -> Export:
  """model.json of `export_dir` and its `fmt` ("jax", "onnx") model file's path; `other` is the
  example to use where the export has no such file."""
  try:
    with open(os.path.join(export_dir, "model.json")) as f:
      meta = json.load(f)
  except OSError as e:
    sys.exit(f"error: cannot read {export_dir}/model.json ({e}); run --mode=export first.")
  except ValueError as e:
    damaged(export_dir, f"{export_dir}/model.json is damaged ({e})")
  try:
    shape = tuple(meta["input"]["shape"][1:])
    class_names, fit = meta["class_names"], meta["fit"]
    file = meta["files"].get(fmt)
    why = meta.get("not_written", {}).get(fmt, "not asked for")  # when there is no file
    light_matters = not meta["dataset"].startswith("folder:")  # a folder's model learnt its own
    if len(shape) != 3 or fit not in fits or not class_names:
      raise TypeError
  except (KeyError, TypeError, AttributeError):
    damaged(export_dir, f"{export_dir}/model.json is damaged (not what --mode=export writes)")
  if not file:
    what = {"jax": "jax.export", "onnx": "ONNX"}.get(fmt, fmt)
    sys.exit(f"error: {export_dir} holds no {what} model ({why}); use {other}.")
  return Export(shape, class_names, fit, light_matters, os.path.join(export_dir, file))
