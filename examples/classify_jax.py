"""Classify image files with an exported jax.export artifact and JAX alone (no Flax, no model code).

    python train.py --mode=export --workdir=runs/cnn          # writes runs/cnn/export
    python examples/classify_jax.py runs/cnn/export digit.png [scan.jpg --invert]

Needs jax, flatbuffers (jax.export's file format), numpy and pillow. Images are converted as
`--mode=predict` does, by this repository's training/data/images.py (numpy and PIL only).
"""

import argparse
import json
import os
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from training.data import images

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("export_dir", help="what --mode=export wrote (model.jax, model.json)")
parser.add_argument("files", nargs="+", help="PNG or JPEG images")
parser.add_argument("--invert", action="store_true", help="dark ink on a light background")
args = parser.parse_args()

with open(os.path.join(args.export_dir, "model.json")) as f:
  meta = json.load(f)
shape = tuple(meta["input"]["shape"][1:])  # (H, W, C); the batch size is free
loaded = [images.load(path, shape, invert=args.invert, fit=meta["fit"]) for path in args.files]
with open(os.path.join(args.export_dir, meta["files"]["jax"]), "rb") as f:
  model = jax.export.deserialize(bytearray(f.read()))  # runs on this machine's CPU, GPU or TPU
probs = np.asarray(model.call(np.stack([array for array, _ in loaded])))
for path, p, (_, light) in zip(args.files, probs, loaded):
  note = "   (light background: use --invert)" if light and not args.invert else ""
  print(f"{path}  {meta['class_names'][p.argmax()]}  p={p.max():.4f}{note}")
