"""An export's files and model.json, what a caller of the exported models needs to know (the
input, the classes, the source checkpoint and its measured test accuracy), and the summary that
--mode=export prints of them. The files themselves are made in export.py."""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

import jax
import numpy as np

from training.modes import ensemble as ensemble_lib
from training.modes.onnx_convert import ONNX_OPSET, version
from training.store.checkpoint import read_latest
from training.tasks.restore import Restored

JAX_FILE, ONNX_FILE, META_FILE = "model.jax", "model.onnx", "model.json"
FILES = (JAX_FILE, ONNX_FILE, META_FILE)
FORMATS = {"jax": JAX_FILE, "onnx": ONNX_FILE}  # --formats
TRITON = "triton"  # --formats=onnx,triton: also a Triton repository of the ONNX model (triton.py)
# The jax.export artifact carries a lowering for each; a machine runs the one of its backend.
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")


def metadata(runs: Sequence[Restored], workdirs: Sequence[str], files: dict[str, bytes]
             ) -> dict[str, Any]:
  """model.json: what a caller of the exported models needs to know."""
  r, workdir = runs[0], workdirs[0]
  info = r.dataset_info
  accuracy, accuracy_source = _test_accuracy(workdirs, runs)
  meta = {
      "format": "mnist-flax model export 1",
      "model": "+".join(dict.fromkeys(run.config.model.name for run in runs)),
      "parameters": int(sum(np.size(x) for run in runs
                            for x in jax.tree_util.tree_leaves(run.state.params))),
      # A population's export averages its members' probabilities; else one member's, or None.
      "members": sum(ensemble_lib.weights(runs)) if len(runs) > 1 or r.members else None,
      # An ensemble across runs: the other runs (their checkpoints: the same `which`).
      "ensemble": [{"workdir": os.path.abspath(w), "step": run.step}
                   for w, run in zip(workdirs[1:], runs[1:])] or None,
      "member": None if r.member is None else {"member": r.member.index, "seed": r.member.seed,
                                               **r.member.values},
      "files": {fmt: file if file in files else None for fmt, file in FORMATS.items()},
      "input": {"name": "images", "shape": [None, *info["image_shape"]], "dtype": "uint8",
                "layout": "NHWC: (batch, height, width, channels); pixels 0-255, scaled to "
                          "[0, 1] inside the model"},
      "output": {"name": "probabilities", "shape": [None, info["num_classes"]],
                 "dtype": "float32"},
      "class_names": [str(n) for n in info["class_names"]],
      "dataset": info["name"],
      "background": "light_on_dark",
      "background_note": "Light ink on a dark background, as in MNIST. Invert dark-on-light "
                         "images (scans, drawings on paper) first: images.load(..., "
                         "invert=True), --invert in --mode=predict and in examples/.",
      # How training.images fits an image of another size: MNIST's box-and-centre or a resize.
      "fit": "digit" if info["name"] == "mnist" else "resize",
      "source": {"workdir": os.path.abspath(workdir), "checkpoint": r.which, "step": r.step,
                 "weights": "ema" if r.state.ema else "params"},
      "test_accuracy": accuracy,
      "test_accuracy_source": accuracy_source,
      "jax_platforms": list(PLATFORMS) if JAX_FILE in files else None,
      "onnx_opset": ONNX_OPSET if ONNX_FILE in files else None,
      "versions": {name: version(name) for name in ("jax", "jaxlib", "flax", "jax2onnx", "onnx")
                   if name in ("jax", "jaxlib", "flax") or ONNX_FILE in files},
  }
  return meta


def _test_accuracy(workdirs: Sequence[str], runs: Sequence[Restored]
                   ) -> tuple[float | None, str]:
  """The test accuracy of the exported checkpoint if it was measured (of a population's
  ensemble, of the member exported, or of an ensemble across runs), and where the figure is
  from."""
  workdir, r = workdirs[0], runs[0]
  step, member = r.step, None if r.member is None else r.member.index
  evaluated = ensemble_lib.result_name("test", runs, workdirs, member)
  if os.path.isfile(os.path.join(workdir, evaluated)):
    return (_read_accuracy(os.path.join(workdir, evaluated)),
            f"{evaluated}: --mode=evaluate of this checkpoint")
  measure = f"--mode=evaluate --checkpoint={step} measures it; export again to record it"
  if len(runs) > 1:
    return None, ("not measured: --mode=evaluate with the same --workdir, --ensemble and "
                  "--checkpoint measures it; export again to record it")
  final = os.path.join(workdir, "test_metrics.json")
  if not os.path.isfile(final):
    return None, f"not measured: no test_metrics.json in the workdir ({measure})"
  keys = (("members", member) if member is not None else ("ensemble",) if r.members
          else ("test",))
  accuracy = _read_accuracy(final, *keys)
  latest, _ = read_latest(workdir)
  shown = "unreadable" if accuracy is None else f"{accuracy:.2%}"
  if step == latest:
    return accuracy, "test_metrics.json: the end of training, which is this checkpoint (the latest)"
  return None, (f"not measured for this checkpoint: test_metrics.json holds the end of "
                f"training's (the latest checkpoint, step {latest}: {shown}); {measure}")


def _read_accuracy(path: str, *keys: str | int) -> float | None:
  """The "accuracy" of a JSON file's entry under `keys` (none: the top level)."""
  try:
    with open(path) as f:
      result = json.load(f)
    for key in keys:
      result = result[key]
    return float(result["accuracy"])
  except (OSError, ValueError, KeyError, TypeError, IndexError):
    return None


def format_summary(meta: dict[str, Any]) -> str:
  """What --mode=export prints: where the files went, their sizes, the check, what was left
  out and why."""
  source = meta["source"]
  accuracy = meta["test_accuracy"]
  lines = [f"{meta['model']} from the {source['checkpoint']} checkpoint (step {source['step']}, "
           f"{'EMA' if source['weights'] == 'ema' else 'live'} weights"
           + (f", test accuracy {accuracy:.2%}" if accuracy is not None else "")
           + f") {'made for' if meta.get('unsaved') else 'exported to'} {meta['directory']}:"]
  described = {
      JAX_FILE: f"jax.export (StableHLO) for {', '.join(meta['jax_platforms'] or [])}",
      ONNX_FILE: f"ONNX opset {meta['onnx_opset']}",
      META_FILE: "input uint8 (N, {}), class probabilities (N, {})".format(
          ", ".join(str(d) for d in meta["input"]["shape"][1:]), meta["output"]["shape"][1])}
  for name, what in described.items():
    if name in meta["sizes"]:
      size = meta["sizes"][name]
      shown = f"{size / 1e6:.2f} MB" if size >= 1e5 else f"{size / 1e3:.1f} kB"
      lines.append(f"  {name:<11} {shown:>9}  {what}")
  repository = sorted({"/".join(n.split("/")[:2]) for n in meta["sizes"] if n.startswith(TRITON)})
  lines += [f"  {d}/  a Triton model repository (config.pbtxt, labels.txt, 1/model.onnx)"
            for d in repository]
  for fmt, why in meta.get("not_written", {}).items():
    lines.append(f"  {FORMATS.get(fmt, fmt + '/'):<11} not written: {why}")
  checked = meta["max_abs_difference"]
  lines.append("checked: " + ", ".join(f"{k} within {v:.1g}" for k, v in checked.items())
               + " of the in-process model's probabilities")
  return "\n".join(lines)
