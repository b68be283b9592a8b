"""Classify image files with an exported jax.export artifact and JAX alone (no Flax, no model code).

    python train.py --mode=export --workdir=runs/cnn          # writes runs/cnn/export
    python examples/classify_jax.py runs/cnn/export digit.png [scan.jpg --invert]

Needs jax, flatbuffers (jax.export's file format), numpy and pillow. Images are converted as
`--mode=predict` does, by this repository's training/data/images.py (numpy and PIL only).
Files are read and classified 256 at a time (one shape: compiled once), so memory does not grow
with their number; a file that cannot be read gets an `error:` line and the others go on; the
notes (blank, too small, light background) are those of --mode=predict.
"""

import argparse
import importlib.util
import json
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

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("export_dir", help="what --mode=export wrote (model.jax, model.json)")
parser.add_argument("files", nargs="+", help="PNG or JPEG images")
parser.add_argument("--invert", action="store_true", help="dark ink on a light background")
args = parser.parse_args()

try:
  with open(os.path.join(args.export_dir, "model.json")) as f:
    meta = json.load(f)
  with open(os.path.join(args.export_dir, meta["files"]["jax"] or "model.jax"), "rb") as f:
    model = export.deserialize(bytearray(f.read()))  # runs on this machine's CPU, GPU or TPU
except (OSError, ValueError, KeyError) as e:
  sys.exit(f"error: cannot read the export in {args.export_dir} ({e}); run --mode=export first.")
shape = tuple(meta["input"]["shape"][1:])  # (H, W, C); the batch size is free
call = jax.jit(model.call)
light_matters = not meta["dataset"].startswith("folder:")  # a folder's model learnt its own
failed = 0
for paths, loaded, batch in images.read_batches(args.files, shape, invert=args.invert,
                                                fit=meta["fit"]):
  probs = np.asarray(call(batch))
  for path, item, p in zip(paths, loaded, probs):
    if isinstance(item, images.ImageError):
      failed += 1
      print(f"error: {item}", file=sys.stderr, flush=True)
      continue
    notes = images.notes(item, args.invert, light_matters)
    answer = "-  no class" if item.blank else f"{meta['class_names'][p.argmax()]}  p={p.max():.4f}"
    print(f"{path}  {answer}" + (f"   ({'; '.join(notes)})" if notes else ""), flush=True)
if failed:
  sys.exit(f"error: {failed} of {len(args.files)} files could not be classified.")
