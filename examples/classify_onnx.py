"""Classify image files with an exported ONNX model and onnxruntime alone (no JAX, no Flax).

    python train.py --mode=export --workdir=runs/cnn          # writes runs/cnn/export
    python examples/classify_onnx.py runs/cnn/export digit.png [scan.jpg --invert]

Needs numpy, pillow and onnxruntime. Images are converted as `--mode=predict` does, by this
repository's training/data/images.py, which imports only numpy and PIL (to deploy, copy it and
training/errors.py along).
"""

import argparse
import json
import os
import sys

import numpy as np
import onnxruntime

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from training.data import images

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("export_dir", help="what --mode=export wrote (model.onnx, model.json)")
parser.add_argument("files", nargs="+", help="PNG or JPEG images")
parser.add_argument("--invert", action="store_true", help="dark ink on a light background")
args = parser.parse_args()

with open(os.path.join(args.export_dir, "model.json")) as f:
  meta = json.load(f)
shape = tuple(meta["input"]["shape"][1:])  # (H, W, C); the batch size is free
loaded = [images.load(path, shape, invert=args.invert, fit=meta["fit"]) for path in args.files]
session = onnxruntime.InferenceSession(os.path.join(args.export_dir, meta["files"]["onnx"]),
                                       providers=["CPUExecutionProvider"])
probs = session.run(None, {"images": np.stack([array for array, _ in loaded])})[0]
for path, p, (_, light) in zip(args.files, probs, loaded):
  note = "   (light background: use --invert)" if light and not args.invert else ""
  print(f"{path}  {meta['class_names'][p.argmax()]}  p={p.max():.4f}{note}")
