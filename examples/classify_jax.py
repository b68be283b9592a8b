"""Classify image files with an exported jax.export artifact and JAX alone (no Flax, no model code).

    python train.py --mode=export --workdir=runs/cnn          # writes runs/cnn/export
    python examples/classify_jax.py runs/cnn/export digit.png [scan.jpg --invert]

Needs jax, flatbuffers (jax.export's file format), numpy and pillow. Images are converted as
`--mode=predict` does, by this repository's training/data/images.py (numpy and PIL only; to
deploy, copy it, training/errors.py and examples/export_folder.py along).
Files are read and classified 256 at a time (one shape: compiled once), so memory does not grow
with their number; a file that cannot be read gets an `error:` line and the others go on; the
notes (blank, too small, light background) are those of --mode=predict. A missing or damaged
export (or files of two exports) gets one `error:` line that says to export again.
"""

import argparse
import importlib.util
import os
import sys

import jax
import numpy as np
from jax import export  # a module that `import jax` alone does not load on every release

# This repository's image reader alone, not the training.data package around it (which would
# bring the data sources): it imports numpy, PIL and training/errors.py.
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
spec = importlib.util.spec_from_file_location("images", f"{ROOT}/training/data/images.py")
images = sys.modules["images"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(images)
import export_folder  # noqa: E402  beside this file: model.json, checked

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("export_dir", help="what --mode=export wrote (model.jax, model.json)")
parser.add_argument("files", nargs="+", help="PNG or JPEG images")
parser.add_argument("--invert", action="store_true", help="dark ink on a light background")
args = parser.parse_args()


def damaged(why: str) -> None:
  export_folder.damaged(args.export_dir, why)


shape, class_names, fit, light_matters, path = export_folder.read(
    args.export_dir, "jax", images.FITS, other="classify_onnx.py")
try:
  with open(path, "rb") as f:
    data = f.read()
except OSError as e:
  damaged(f"{path} is missing" if isinstance(e, FileNotFoundError) else f"cannot read {path} ({e})")
try:
  model = export.deserialize(bytearray(data))  # runs on this machine's CPU, GPU or TPU
except Exception:  # a truncated or foreign file fails anywhere in the flatbuffer reader
  damaged(f"{path} is damaged ({len(data):,} bytes that jax.export cannot read)")
signature = [tuple(a.shape[1:]) for a in (*model.in_avals, *model.out_avals)]
if signature != [shape, (len(class_names),)]:  # files of two exports
  damaged(f"{path} does not match model.json (inputs and outputs {signature} in the model, "
          f"{[shape, (len(class_names),)]} in model.json)")
call = jax.jit(model.call)
failed = 0
for paths, loaded, batch in images.read_batches(args.files, shape, invert=args.invert, fit=fit):
  probs = np.asarray(call(batch))
  for path, item, p in zip(paths, loaded, probs):
    if isinstance(item, images.ImageError):
      failed += 1
      print(f"error: {item}", file=sys.stderr, flush=True)
      continue
    notes = images.notes(item, args.invert, light_matters)
    answer = "-  no class" if item.blank else f"{class_names[p.argmax()]}  p={p.max():.4f}"
    print(f"{path}  {answer}" + (f"   ({'; '.join(notes)})" if notes else ""), flush=True)
if failed:
  sys.exit(f"error: {failed} of {len(args.files)} files could not be classified.")
