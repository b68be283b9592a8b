"""Deploy a trained workdir: files that classify images without this project's code.

    python train.py --mode=export --workdir=runs/cnn [--checkpoint=best|latest|STEP]
                    [--output=DIR] [--overwrite]

writes into DIR (default `<workdir>/export`):

  model.jax   a `jax.export` artifact (serialized StableHLO, for CPU, CUDA, ROCm and TPU):
              `jax.export.deserialize(data).call(images)` with jax (and flatbuffers) alone;
  model.onnx  the same function as an ONNX model (converted by jax2onnx; written when the
              `export` extra is installed), for onnxruntime and other ONNX runtimes;
  model.json  what a caller needs to know: the input's shape and dtype, the class names, the
              background convention and image fitting, the source checkpoint, its test accuracy.

Both models take the raw input, uint8 pixels of shape (N, H, W, C) for any batch size N (what
`training.data.images.load` returns), and return float32 class probabilities (N, classes): the scaling
to [0, 1] and the softmax are inside. The weights are the checkpoint's evaluation weights (the
moving average when the run kept one), as `--mode=evaluate` and `--mode=predict` use. The ONNX
conversion is onnx_convert.py's.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import json
import os
from typing import Any, Sequence

import jax
import numpy as np
# jax.export is a module that `import jax` does not load on every release (not on 0.7.1).
from jax import export as jax_export

from training.errors import unsaved
from training.compute import device
from training.modes import ensemble as ensemble_lib, triton
from training.modes.onnx_convert import (ONNX_OPSET, ExportError, Probabilities, export_onnx,
                                           input_spec, version)
from training.store.checkpoint import read_latest
from training.tasks.restore import Restored

JAX_FILE, ONNX_FILE, META_FILE = "model.jax", "model.onnx", "model.json"
FILES = (JAX_FILE, ONNX_FILE, META_FILE)
FORMATS = {"jax": JAX_FILE, "onnx": ONNX_FILE}  # --formats
TRITON = "triton"  # --formats=onnx,triton: also a Triton repository of the ONNX model (triton.py)
# The jax.export artifact carries a lowering for each; a machine runs the one of its backend.
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")
# An exported model's probabilities may differ from the in-process model's by this much (they
# agree to about 1e-7: the same operations, in another order); more is a converter bug.
TOLERANCE = 1e-5

class OutputExistsError(ExportError):
  """The output directory already holds an export."""


def export(workdir: str, which: str = "best", output: str | None = None,
           overwrite: bool = False, formats: Sequence[str] = ("jax", "onnx"),
           member: int | None = None, ensemble: Sequence[str] = ()) -> dict[str, Any]:
  """Exports checkpoint `which` of `workdir` into `output` in `formats` (of FORMATS); returns
  model.json's content, plus "directory" (where the files go), "sizes" ({file: bytes}) and
  "unsaved" (None, or why the files could not be written there). A population exports its
  ensemble (its members' probabilities averaged, in one function), or member `member` alone;
  with `ensemble` (other workdirs), the ensemble of every model of them all (modes/ensemble.py).

  A format that cannot be made is left out, and model.json says why ("not_written"): ONNX
  without jax2onnx and onnxruntime, an operation its converter cannot express (the LSTM), a
  model whose probabilities differ from the trained one's. Raises ExportError only when none of
  `formats` can be made. No file is written unless all of them are checked."""
  formats = _check_formats(formats)
  output = os.path.abspath(output or os.path.join(workdir, "export"))
  _check_output(output, overwrite)
  runs = ensemble_lib.restore_all(workdir, ensemble, which, member)
  probabilities = probabilities_fn(runs)
  shape = tuple(runs[0].dataset_info["image_shape"])
  files, missing = _convert([f for f in formats if f in FORMATS], probabilities, shape,
                            runs[0].config.model.name)
  differences = verify(probabilities, shape, files)
  for fmt, difference in list(differences.items()):
    if not difference <= TOLERANCE:  # a converter bug: that file would give other answers
      del files[FORMATS[fmt]], differences[fmt]
      missing[fmt] = (f"its probabilities differ from the trained model's by {difference:.2g}, "
                      f"over {TOLERANCE:g} (a converter bug)")
  if not files:
    raise ExportError(f"Nothing could be exported to {', '.join(formats)}: "
                      + "; ".join(f"{fmt}: {why}" for fmt, why in missing.items()) + ".")
  meta = {**metadata(runs, [workdir, *ensemble], files), "max_abs_difference": differences}
  if TRITON in formats:  # Triton serves the ONNX model: without it there is no repository
    if ONNX_FILE in files:
      files.update(triton.repository(files[ONNX_FILE], meta))
    else:
      missing[TRITON] = "its repository holds the ONNX model, which was not made"
  if missing:
    meta["not_written"] = missing
  files[META_FILE] = (json.dumps(meta, indent=2) + "\n").encode()
  try:
    _write(output, files)
    not_saved = None
  except OSError as e:  # a read-only workdir: the summary says what was made and checked
    not_saved = (unsaved(", ".join(files), output, e, place="that directory")
                 + " Pass --output=DIR (a writable directory) to write them there.")
  return {**meta, "directory": output, "sizes": {k: len(v) for k, v in files.items()},
          "unsaved": not_saved}


def _check_formats(formats: Sequence[str]) -> tuple[str, ...]:
  unknown = sorted(set(formats) - set(FORMATS) - {TRITON})
  if unknown or not formats:
    raise ExportError(f"Unknown export format(s) {', '.join(unknown) or '(none)'}; give some of "
                      f"{', '.join(FORMATS)}, {TRITON}, e.g. --formats=jax,onnx.")
  return tuple(dict.fromkeys(["onnx"] * (TRITON in formats) + list(formats)))


def _convert(formats: Sequence[str], probabilities: Probabilities, shape: tuple[int, ...],
             model_name: str) -> tuple[dict[str, bytes], dict[str, str]]:
  """({file: bytes} of the formats made, {format: why not} of the others)."""
  files, missing = {}, {}
  for fmt in formats:
    try:
      files[FORMATS[fmt]] = (export_jax(probabilities, shape) if fmt == "jax" else
                             export_onnx(probabilities, shape, model_name))
    except ExportError as e:
      missing[fmt] = str(e).rstrip(".")
  return files, missing


def probabilities_fn(runs: Sequence[Restored]) -> Probabilities:
  """uint8 images (N, H, W, C) -> class probabilities (N, classes), with the checkpoints'
  evaluation weights as constants: the exported function. A population's is its ensemble's, its
  members one after another: ONNX's converter has no batched form of a convolution. Several
  runs: the ensemble of all their models."""
  states = [jax.device_get(r.state) for r in runs]
  return lambda images: ensemble_lib.probabilities(runs, states, images, device.unrolled)


def export_jax(probabilities: Probabilities, shape: tuple[int, ...]) -> bytes:
  """The serialized `jax.export` artifact of `probabilities` (needs the flatbuffers package)."""
  if importlib.util.find_spec("flatbuffers") is None:  # jax.export's serialization format
    raise ExportError("Serializing a jax.export artifact needs the flatbuffers package: "
                      "pip install flatbuffers.")
  exported = jax_export.export(jax.jit(probabilities), platforms=PLATFORMS)(input_spec(shape))
  return bytes(exported.serialize())


def verify(probabilities: Probabilities, shape: tuple[int, ...],
           files: dict[str, bytes]) -> dict[str, float]:
  """Runs the exported models on a few images (noise, and a blank one): {format: the largest
  difference of their probabilities from the in-process model's}."""
  images = np.random.default_rng(0).integers(0, 256, (4, *shape), dtype=np.uint8)
  images[0] = 0
  expected = np.asarray(jax.jit(probabilities)(images))
  got = {}
  if JAX_FILE in files:
    got["jax"] = np.asarray(jax_export.deserialize(bytearray(files[JAX_FILE])).call(images))
  if ONNX_FILE in files:
    import onnxruntime
    session = onnxruntime.InferenceSession(files[ONNX_FILE], providers=["CPUExecutionProvider"])
    got["onnx"] = session.run(None, {"images": images})[0]
  return {k: float(np.abs(v - expected).max()) for k, v in got.items()}


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


def _check_output(output: str, overwrite: bool) -> None:
  if os.path.exists(output) and not os.path.isdir(output):
    raise ExportError(f"The output {output} is a file; give a directory with --output.")
  existing = [f for f in FILES if os.path.exists(os.path.join(output, f))]
  if existing and not overwrite:
    raise OutputExistsError(f"{output} already holds an export ({', '.join(existing)}); pass "
                            "--overwrite to replace it, or another --output.")


def _write(output: str, files: dict[str, bytes]) -> None:
  """Writes all files under temporary names, then renames them (and removes an older export's
  file that this one lacks): a failed write (an OSError) leaves the previous export whole."""
  try:
    for name, data in files.items():
      os.makedirs(os.path.dirname(os.path.join(output, name)), exist_ok=True)
      with open(os.path.join(output, name + ".tmp"), "wb") as f:
        f.write(data)
    for name in files:
      os.replace(os.path.join(output, name + ".tmp"), os.path.join(output, name))
  finally:
    for name in files:
      with contextlib.suppress(OSError):
        os.remove(os.path.join(output, name + ".tmp"))
  for name in set(FILES) - set(files):
    with contextlib.suppress(FileNotFoundError):
      os.remove(os.path.join(output, name))


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
