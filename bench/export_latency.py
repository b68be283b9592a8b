"""Single-image latency of the exported models (--mode=export) against the training code's own.

    python bench/export_latency.py runs/cnn [runs/mlp ...] [--repeats=300] [--markdown]

For each trained workdir: exports its best checkpoint into a temporary directory, then classifies
one 28x28 PNG digit, medians over --repeats (milliseconds):

  onnxruntime    session.run on one image (CPUExecutionProvider; session made once)
  jax artifact   jax.jit(jax.export.deserialize(...).call) on one image (compiled once)
  in-process     the training code's jitted model (restored state) on one image
  predict()      training.modes.predict.predict(workdir, [png]): what each --mode=predict process
                 does after its imports: restore the checkpoint, compile, read the image, score
                 (a batch of 256: it scores files 256 at a time); fewer repeats
  load           the start-up of each: session creation; deserialize + first call; restore +
                 first call
  cold process   a whole new Python process classifying the PNG: examples/classify_onnx.py,
                 examples/classify_jax.py, train.py --mode=predict (medians of 3)

Image reading (training.data.images.load, the same in every path) is outside the first three. The
ONNX columns need the `export` extra (jax2onnx, onnxruntime), else they read n/a.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import jax
from PIL import Image, ImageDraw

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from training.modes import export
from training.data import images
from training.compute import runtime
from training.modes import predict
from training.tasks import restore
from training.tasks.classify import steps

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def median_ms(fn, repeats: int) -> float:
  fn()  # warm
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return 1e3 * statistics.median(times)


def timed_ms(fn) -> float:
  start = time.perf_counter()
  fn()
  return 1e3 * (time.perf_counter() - start)


def digit_png(path: str) -> str:
  """A hand-drawn-like '7', light on dark, 28x28 (latency does not depend on the content)."""
  img = Image.new("L", (28, 28))
  ImageDraw.Draw(img).line([(7, 7), (21, 7), (12, 23)], fill=255, width=3)
  img.save(path)
  return path


def measure(workdir: str, out: str, png: str, repeats: int) -> dict[str, float | None]:
  meta = export.export(workdir, output=out, overwrite=True)
  x = images.load(png, tuple(meta["input"]["shape"][1:]), fit=meta["fit"])[0][None]
  row: dict[str, float | None] = {"onnxruntime": None, "onnx load": None}
  if meta["files"]["onnx"]:
    import onnxruntime
    session = None

    def make_session():
      nonlocal session
      session = onnxruntime.InferenceSession(os.path.join(out, "model.onnx"),
                                             providers=["CPUExecutionProvider"])
    row["onnx load"] = timed_ms(make_session)
    row["onnxruntime"] = median_ms(lambda: session.run(None, {"images": x}), repeats)
  call = None

  def load_jax():
    nonlocal call
    with open(os.path.join(out, "model.jax"), "rb") as f:
      call = jax.jit(jax.export.deserialize(bytearray(f.read())).call)
    call(x).block_until_ready()
  row["jax load"] = timed_ms(load_jax)
  row["jax artifact"] = median_ms(lambda: call(x).block_until_ready(), repeats)
  restored = None
  apply = jax.jit(lambda s, b: jax.nn.softmax(
      s.apply_fn(s.eval_variables(), steps.preprocess(b), train=False), axis=-1))

  def load_state():
    nonlocal restored
    restored = restore.restore(workdir)
    apply(restored.state, x).block_until_ready()
  row["in-process load"] = timed_ms(load_state)
  row["in-process"] = median_ms(lambda: apply(restored.state, x).block_until_ready(), repeats)
  row["predict()"] = median_ms(lambda: predict.predict(workdir, [png]), max(3, repeats // 100))
  return row


def cold_ms(workdir: str, out: str, png: str, have_onnx: bool) -> dict[str, float | None]:
  commands = {"cold classify_onnx.py": ["examples/classify_onnx.py", out, png] if have_onnx
              else None,
              "cold classify_jax.py": ["examples/classify_jax.py", out, png],
              "cold --mode=predict": ["train.py", "--mode=predict", f"--workdir={workdir}", png]}
  return {name: None if cmd is None else statistics.median(
      timed_ms(lambda: subprocess.run([sys.executable, *cmd], cwd=REPO, check=True,
                                      capture_output=True)) for _ in range(3))
          for name, cmd in commands.items()}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("workdirs", nargs="+")
  parser.add_argument("--repeats", type=int, default=300)
  parser.add_argument("--markdown", action="store_true", help="print a markdown table")
  args = parser.parse_args()
  runtime.setup(None)
  rows = {}
  with tempfile.TemporaryDirectory() as tmp:
    png = digit_png(os.path.join(tmp, "digit.png"))
    for workdir in args.workdirs:
      out = os.path.join(tmp, os.path.basename(os.path.normpath(workdir)))
      rows[workdir] = measure(workdir, out, png, args.repeats)
      rows[workdir].update(
          {f"{name} MB": os.path.getsize(os.path.join(out, name)) / 1e6
           for name in ("model.onnx", "model.jax") if os.path.exists(os.path.join(out, name))})
      rows[workdir].update(cold_ms(workdir, out, png, rows[workdir]["onnxruntime"] is not None))
      print(workdir, {k: None if v is None else round(v, 3) for k, v in rows[workdir].items()},
            flush=True)
  if args.markdown:
    columns = list(next(iter(rows.values())))
    print("| workdir | " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for workdir, row in rows.items():
      print(f"| {workdir} | " + " | ".join("n/a" if row.get(c) is None else f"{row[c]:.3g}"
                                          for c in columns) + " |")


if __name__ == "__main__":
  main()
