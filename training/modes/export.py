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
conversion is onnx_convert.py's; model.json and the summary printed, export_meta.py's.
"""

from __future__ import annotations

import contextlib
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
from training.modes.export_meta import (FILES, FORMATS, JAX_FILE, META_FILE, ONNX_FILE,
                                        PLATFORMS, TRITON, metadata)
from training.modes.onnx_convert import ExportError, Probabilities, export_onnx, input_spec
from training.tasks.restore import Restored

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
