"""What a run learned, as figures and one HTML page; and several runs compared.

    python train.py --mode=report --workdir=runs/cnn [--checkpoint=best|latest|STEP]
    python train.py --mode=report runs/cnn runs/mlp [--workdir=runs/comparison]

`write_report(workdir)` reads the run's `metrics.jsonl` (and `test_metrics.json` once it has
finished), restores its best checkpoint (the latest when none ranks best), predicts the test
split (as the run evaluated it) and writes into the workdir: `learning_curves.png`,
`confusion_matrix.png`, `per_class.png`, `mistakes.png` and `report.html` (one self-contained
page: the images are embedded), and the same figures as TensorBoard images. It works on a
finished run, one still running, or a killed one. `write_comparison(workdirs, output_dir)`
overlays several runs' curves and tabulates the settings in which they differ and their results;
it needs no checkpoint and no data.

It imports `training.inference` only when called.
matplotlib is imported only when figures are drawn, never with `training`. Figures are drawn on
matplotlib's Agg canvas directly (no pyplot, no display, and the process-wide backend is left
alone, so a notebook that calls this keeps its own). Every failure is a `ReportError`, which
`train.py` prints as one line, and which the training loop can turn into a warning.
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import json
import math
import os
import tempfile
import time
from typing import Any, Sequence

import numpy as np

from training import metrics as metrics_lib
from training.errors import ConfigError

METRICS, TEST_METRICS, CONFIG = "metrics.jsonl", "test_metrics.json", "config.json"
FIGURES = ("learning_curves", "confusion_matrix", "per_class", "mistakes")
DPI = 100  # a figure of (w, h) inches is exactly (100 w, 100 h) pixels
SIZES = {"learning_curves": (11, 8.5), "confusion_matrix": (7.5, 6.5), "per_class": (11, 4.5),
         "mistakes": (12, 7.8), "comparison": (13, 8.5)}
MISTAKES_GRID = (4, 8)  # rows, columns: the 32 most confident mistakes
COLORS = {"train": "#1f77b4", "validation": "#d62728", "test": "#2ca02c"}
STYLE = {"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "legend.fontsize": 10,
         "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False,
         "axes.spines.right": False}
# Settings that say where or how verbosely a run went, not what it trained: left out of the
# comparison table.
NOT_SETTINGS = ("data_dir", "cache_dir", "compilation_cache_dir", "progress_bar",
                "log_every_steps", "eval_batch_size", "steps_per_call", "mesh_shape",
                "mesh_axes", "stop_after_steps", "test_every_epoch", "checkpoint.")


class ReportError(ConfigError):
  """The report or comparison cannot be written; the message says why and what to do."""


# --- Reading a workdir ----------------------------------------------------------------------


def _is_run(path: str) -> bool:
  return any(os.path.exists(os.path.join(path, f)) for f in (METRICS, CONFIG, "checkpoints"))


def check_run_dir(workdir: str, writable: bool = True) -> None:
  """Raises a ReportError unless `workdir` is a training run's directory (and writable)."""
  if not os.path.isdir(workdir):
    what = "a file, not a directory" if os.path.exists(workdir) else "no such directory"
    raise ReportError(f"No run in {workdir!r}: {what}. Pass the --workdir of a training run, "
                      "e.g. runs/cnn.")
  if not _is_run(workdir):
    runs = sorted(d for d in os.listdir(workdir) if os.path.isdir(os.path.join(workdir, d))
                  and _is_run(os.path.join(workdir, d)))
    some = " ".join(os.path.join(workdir, r) for r in runs[:3])
    hint = (f" It holds the runs {', '.join(runs)}: pass one, or several to compare them "
            f"(python train.py --mode=report {some})." if runs
            else " Pass the --workdir of a training run, e.g. runs/cnn.")
    raise ReportError(f"{workdir!r} is not a training run's workdir (it has no {METRICS}, "
                      f"{CONFIG} or checkpoints/).{hint}")
  if not os.path.isfile(os.path.join(workdir, METRICS)):
    raise ReportError(f"{workdir!r} has no {METRICS}: the run logged no metrics yet (or was "
                      "trained without a workdir). Report it once it has trained an epoch.")
  if writable:
    _check_writable(workdir)


def _check_writable(directory: str) -> None:
  try:
    os.makedirs(directory, exist_ok=True)
    with tempfile.TemporaryFile(dir=directory):
      pass
  except OSError as e:
    raise ReportError(f"Cannot write the report into {directory!r} ({e.strerror or e}); make "
                      "it writable, or copy the run to a writable place.") from e


def read_metrics(workdir: str) -> dict[str, Any]:
  """`metrics.jsonl` as {"steps": per-log-step records, "epochs": per-epoch records, "final":
  the last end-of-run record or None}, in step order. A resumed run logs again the steps after
  its checkpoint: a log step that goes back drops the records from it on (the killed attempt's).
  Lines cut short by a kill are skipped."""
  records: list[dict[str, Any]] = []
  last_step = -1
  with open(os.path.join(workdir, METRICS)) as f:
    for line in f:
      try:
        r = json.loads(line)
      except ValueError:
        continue
      if not isinstance(r, dict) or not isinstance(r.get("step"), int):
        continue
      if "epoch" not in r and "train/loss" in r:  # a log step
        if r["step"] <= last_step:
          records = [x for x in records if x["step"] < r["step"]]
        last_step = r["step"]
      records.append(r)
  epochs = {r["epoch"]: r for r in records if "epoch" in r}
  finals = [r for r in records if "epoch" not in r and "train/loss" not in r]
  out = {"steps": [r for r in records if "epoch" not in r and "train/loss" in r],
         "epochs": [epochs[e] for e in sorted(epochs)], "final": finals[-1] if finals else None}
  if not out["steps"] and not out["epochs"]:
    raise ReportError(f"{os.path.join(workdir, METRICS)} holds no training metrics yet; report "
                      "the run once it has logged some steps.")
  return out


def _read_json(path: str) -> dict[str, Any] | None:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


# --- Predictions and the selection of mistakes ------------------------------------------------


def predict_log_probs(state: Any, images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
  """Log class probabilities of uint8 `images` (N, H, W, C) under the state's eval variables, in
  fixed-size batches (one compiled program; the last batch is padded)."""
  import jax
  from training import steps
  apply = jax.jit(lambda v, x: jax.nn.log_softmax(
      state.apply_fn(v, steps.preprocess(x), train=False), axis=-1))
  variables = state.eval_variables()
  batch_size = max(1, min(batch_size, len(images)))
  out = []
  for start in range(0, len(images), batch_size):
    batch = images[start:start + batch_size]
    n = len(batch)
    if n < batch_size:
      batch = np.concatenate([batch, np.zeros((batch_size - n, *batch.shape[1:]), batch.dtype)])
    out.append(np.asarray(apply(variables, batch), np.float64)[:n])
  return np.concatenate(out)


def confident_mistakes(probs: np.ndarray, labels: np.ndarray, k: int = 32
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The misclassified examples, most confident first: (indices, predicted classes, probability
  of the predicted class), at most `k` of them. Ties keep the examples' order."""
  predicted = probs.argmax(axis=1)
  confidence = probs[np.arange(len(probs)), predicted]
  wrong = np.flatnonzero(predicted != labels)
  chosen = wrong[np.argsort(-confidence[wrong], kind="stable")][:k]
  return chosen, predicted[chosen], confidence[chosen]


def scores(log_probs: np.ndarray, labels: np.ndarray, num_classes: int) -> dict[str, Any]:
  """Test metrics as `metrics.summarize` gives them, plus per-class precision, recall and F1."""
  predicted = log_probs.argmax(axis=1)
  cm = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(cm, (labels, predicted), 1)
  result = metrics_lib.summarize({"confusion": cm, "count": len(labels),
                                  "loss_sum": -log_probs[np.arange(len(labels)), labels].sum()})
  tp, support, called = np.diag(cm).astype(float), cm.sum(1), cm.sum(0)
  precision = np.divide(tp, called, out=np.zeros_like(tp), where=called > 0)
  recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
  total = precision + recall
  f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(tp), where=total > 0)
  result.update(precision=precision.tolist(), recall=recall.tolist(), f1=f1.tolist(),
                support=support.tolist())
  return result


# --- Figures ----------------------------------------------------------------------------------


def _figure(name: str, layout: str | None = "constrained"):
  """A matplotlib Figure on the Agg canvas (headless), of the size SIZES[name]."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  fig = Figure(figsize=SIZES[name], dpi=DPI, layout=layout)
  FigureCanvasAgg(fig)
  return fig


def _png(fig) -> bytes:
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=DPI)
  return buf.getvalue()


def _plain_log_ticks(ax) -> None:
  """Tick labels of a log axis as plain numbers (0.05, 0.1, 0.2), not powers of ten; which
  minor ticks get a label is left to matplotlib."""
  from matplotlib.ticker import LogFormatter

  class Plain(LogFormatter):
    def _num_to_string(self, x, vmin, vmax):
      return f"{x:g}"

  ax.yaxis.set_major_formatter(Plain())
  ax.yaxis.set_minor_formatter(Plain(labelOnlyBase=False, minor_thresholds=(2, 0.5)))


def _mark_epochs(axes, epochs: list[dict[str, Any]]) -> None:
  """Dotted lines at the epochs' ends, numbered along the top axis."""
  for ax in axes:
    for r in epochs:
      ax.axvline(r["step"], color="0.6", lw=0.8, ls=":", zorder=0)
  if epochs:
    top = axes[0].secondary_xaxis("top")
    every = max(1, math.ceil(len(epochs) / 20))
    shown = epochs[every - 1::every]
    top.set_xticks([r["step"] for r in shown], [str(r["epoch"]) for r in shown])
    top.set_xlabel("end of epoch")


def _epoch_series(ax, epochs, key: str, scale: float = 1.0) -> list[float]:
  values = []
  for split, color in COLORS.items():
    points = [(r["step"], r[f"{split}/{key}"] * scale) for r in epochs if f"{split}/{key}" in r]
    if points:
      ax.plot(*zip(*points), "o-", color=color, lw=2, ms=6, label=f"{split} (per epoch)")
      values += [v for _, v in points]
  return values


def plot_learning_curves(records: dict[str, Any], title: str) -> bytes:
  """Loss, accuracy and learning rate (with the gradient norm) on one step axis."""
  fig = _figure("learning_curves")
  loss, acc, lr = fig.subplots(3, 1, sharex=True, height_ratios=[3, 3, 1.7])
  steps, epochs = records["steps"], records["epochs"]
  x = [r["step"] for r in steps]
  if steps:
    loss.plot(x, [r["train/loss"] for r in steps], color=COLORS["train"], alpha=0.35, lw=1.2,
              label="train (per log step)")
  _epoch_series(loss, epochs, "loss")
  loss.set(yscale="log", ylabel="loss (log scale)")
  _plain_log_ticks(loss)
  if steps and "train/accuracy" in steps[0]:
    acc.plot(x, [100 * r["train/accuracy"] for r in steps], color=COLORS["train"], alpha=0.35,
             lw=1.2, label="train (per log step)")
  values = _epoch_series(acc, epochs, "accuracy", 100.0)
  if values:  # zoom on the epochs' values; early log steps may fall below
    low, high = min(values), max(values)
    pad = max(0.15 * (high - low), 0.2)
    acc.set_ylim(max(0.0, low - pad), min(100.0, high + pad) + 0.05)
  acc.set(ylabel="accuracy (%)")
  for ax in (loss, acc):
    ax.legend(loc="best", framealpha=0.9)
  if steps and "train/learning_rate" in steps[0]:
    lr.plot(x, [r["train/learning_rate"] for r in steps], color="#9467bd", lw=2)
  lr.set(ylabel="learning rate", xlabel="training step")
  lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
  handles = list(lr.lines)
  if steps and "train/grad_norm" in steps[0]:
    norm = lr.twinx()
    handles += norm.plot(x, [r["train/grad_norm"] for r in steps], color="0.45", lw=1, alpha=0.7)
    norm.set_ylabel("gradient norm", color="0.35")
    norm.spines["right"].set_visible(True)
    norm.grid(False)
  lr.legend(handles, ["learning rate", "gradient norm (right axis)"][:len(handles)],
            loc="upper right", framealpha=0.9)
  _mark_epochs([loss, acc, lr], epochs)
  fig.suptitle(title, fontsize=13, fontweight="bold")
  return _png(fig)


def plot_confusion_matrix(cm: np.ndarray, names: Sequence[str], title: str) -> bytes:
  """Counts of true (rows) against predicted (columns) classes; colour on a log scale, so that
  the off-diagonal mistakes show beside the diagonal's thousands."""
  from matplotlib.colors import LogNorm
  fig = _figure("confusion_matrix")
  ax = fig.subplots()
  cm = np.asarray(cm)
  image = ax.imshow(np.ma.masked_equal(cm, 0), cmap="Blues",
                    norm=LogNorm(vmin=0.5, vmax=max(2, cm.max())))
  k = len(names)
  if k <= 20:
    bright = math.sqrt(max(2, cm.max()))
    for (i, j), v in np.ndenumerate(cm):
      if v:
        ax.text(j, i, str(v), ha="center", va="center", fontsize=9 if k <= 12 else 7,
                color="white" if v > bright else ("#b00000" if i != j else "black"))
  ticks = range(k)
  long = max(len(str(n)) for n in names) > 3
  ax.set_xticks(ticks, [str(n) for n in names], rotation=45 if long else 0,
                ha="right" if long else "center")
  ax.set_yticks(ticks, [str(n) for n in names])
  ax.set(xlabel="predicted class", ylabel="true class", title=title)
  ax.grid(False)
  fig.colorbar(image, ax=ax, shrink=0.85, label="examples (log scale)")
  return _png(fig)


def plot_per_class(result: dict[str, Any], names: Sequence[str], title: str) -> bytes:
  """Precision, recall and F1 of each class as grouped bars, the axis zoomed on their range."""
  fig = _figure("per_class")
  ax = fig.subplots()
  k = len(names)
  x = np.arange(k)
  width = 0.27
  series = (("precision", "#1f77b4"), ("recall", "#ff7f0e"), ("f1", "#2ca02c"))
  for i, (key, color) in enumerate(series):
    ax.bar(x + (i - 1) * width, result[key], width, color=color, label=key.replace("f1", "F1"))
  values = np.concatenate([result[key] for key, _ in series])
  low = math.floor((values.min() - 0.1 * (1 - values.min())) * 100) / 100
  ax.set_ylim(min(max(low, 0.0), 0.99), 1.0)
  long = max(len(str(n)) for n in names) > 3
  ax.set_xticks(x, [str(n) for n in names], rotation=30 if long else 0,
                ha="right" if long else "center")
  ax.axhline(result["macro_f1"], color="#2ca02c", ls="--", lw=1.2, label="macro F1")
  ax.set(xlabel="class", ylabel="score", title=title)
  ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), framealpha=0.9)
  ax.grid(axis="x", visible=False)
  return _png(fig)


def plot_mistakes(images: np.ndarray, labels: np.ndarray, chosen: tuple[np.ndarray, ...],
                  names: Sequence[str], title: str) -> bytes:
  """A grid of the chosen test images, each titled with its index, true and predicted class and
  the predicted class's probability."""
  fig = _figure("mistakes", layout=None)  # a fixed grid: constrained layout would cost 2x
  rows, cols = MISTAKES_GRID
  axes = fig.subplots(rows, cols, gridspec_kw=dict(left=0.01, right=0.99, bottom=0.01,
                                                   top=0.87, wspace=0.15, hspace=0.62))
  indices, predicted, confidence = chosen
  short = lambda n: str(n) if len(str(n)) <= 12 else str(n)[:11] + "."
  for slot, ax in enumerate(axes.flat):
    ax.set_axis_off()
    if slot >= len(indices):
      continue
    i = indices[slot]
    image = images[i]
    ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=255)
    ax.set_title(f"#{i}: true {short(names[labels[i]])}\npredicted {short(names[predicted[slot]])}"
                 f"\np={confidence[slot]:.3f}", fontsize=9, color="#8b0000")
  if not len(indices):
    fig.text(0.5, 0.5, "No misclassified test examples.", ha="center", fontsize=16)
  fig.suptitle(title, fontsize=13, fontweight="bold", y=0.99)
  return _png(fig)


# --- The report -------------------------------------------------------------------------------


def _write(path: str, data: bytes | str) -> None:
  """Writes then renames: a report stopped midway leaves the previous files whole."""
  data = data.encode() if isinstance(data, str) else data
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".report-", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def model_summary(restored: Any) -> str:
  """flax's per-layer table (inputs, outputs, parameter shapes and counts) of the checkpoint's
  model, as `--mode=show` prints it; the parameters' shapes alone if tabulating fails."""
  import jax
  info = restored.dataset_info
  try:
    from training import show
    return show.model_summary(restored.config, tuple(info["image_shape"]), info["num_classes"])
  except Exception as e:  # the table is a convenience: the parameters say the essentials
    lines = [f"(flax's tabulate failed: {type(e).__name__}: {e}; the parameters:)"]
    for path, leaf in jax.tree_util.tree_flatten_with_path(restored.state.params)[0]:
      lines.append(f"{jax.tree_util.keystr(path):60} {str(tuple(leaf.shape)):>20} "
                   f"{int(np.prod(leaf.shape)):>12,}")
    return "\n".join(lines)


def _leaves(tree: Any) -> list[Any]:
  import jax
  return jax.tree_util.tree_leaves(tree)


def _predict_test(restored: Any, data_dir: str | None, dataset: Any = None
                  ) -> tuple[Any, np.ndarray]:
  """The test split as the run evaluated it (all of it unless its max_eval_examples capped it),
  from `dataset` when given, and the log probabilities of its classes."""
  c = restored.config
  if dataset is None:
    from training import data
    dataset = data.load(c.dataset, data_dir=data_dir or c.get("data_dir"),
                        cache_dir=c.get("cache_dir"), validation_fraction=c.validation_fraction,
                        split_seed=c.split_seed, max_eval_examples=c.max_eval_examples)
  test = dataset.test
  return test, predict_log_probs(restored.state, test.images, c.eval_batch_size)


def _status(records: dict[str, Any], config: Any, finished: bool) -> str:
  done = records["epochs"][-1]["epoch"] if records["epochs"] else 0
  last = max([r["step"] for r in records["steps"] + records["epochs"]])
  if finished and done >= config.num_epochs:
    return f"finished: {done} of {config.num_epochs} epochs"
  return (f"unfinished (still running, or stopped): {done} of {config.num_epochs} epochs "
          f"logged, the last log at step {last}")


def _figures(records, restored, test, log_probs) -> tuple[dict[str, bytes], dict[str, Any]]:
  """The four figures as PNG bytes, and the test scores and mistakes they show."""
  import matplotlib
  names = [str(n) for n in restored.dataset_info["class_names"]]
  result = scores(log_probs, test.labels, len(names))
  chosen = confident_mistakes(np.exp(log_probs), test.labels, MISTAKES_GRID[0] * MISTAKES_GRID[1])
  wrong = int(result["count"] - round(result["accuracy"] * result["count"]))
  run = f"{restored.config.model.name} on {restored.dataset_info['name']}"
  ckpt = f"{restored.which} checkpoint, step {restored.step}"
  with matplotlib.rc_context(STYLE):
    pngs = {
        "learning_curves": plot_learning_curves(records, f"{run}: learning curves"),
        "confusion_matrix": plot_confusion_matrix(
            result["confusion_matrix"], names,
            f"Test confusion matrix: {result['accuracy']:.2%} correct\n({ckpt})"),
        "per_class": plot_per_class(result, names, f"{run}: per-class scores on the test split "
                                    f"(macro F1 {result['macro_f1']:.4f}, {ckpt})"),
        "mistakes": plot_mistakes(test.images, test.labels, chosen, names,
                                  f"The {len(chosen[0])} most confident of {wrong} test mistakes "
                                  f"({run}, {ckpt})"),
    }
  mistakes = [{"index": int(i), "label": int(test.labels[i]), "predicted": int(p),
               "probability": float(q)} for i, p, q in zip(*chosen)]
  return pngs, {"test": result, "mistakes": mistakes, "wrong": wrong}


def _tensorboard_images(workdir: str, pngs: dict[str, bytes], step: int) -> None:
  """The figures as TensorBoard images (tag report/<name>) at the checkpoint's step."""
  from PIL import Image
  from tensorboardX import SummaryWriter
  writer = SummaryWriter(os.path.join(workdir, "tensorboard"), filename_suffix=".report")
  try:
    for name, png in pngs.items():
      image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
      writer.add_image(f"report/{name}", image, step, dataformats="HWC")
  finally:
    writer.close()


def _report(workdir: str, which: str, data_dir: str | None, records: dict[str, Any],
            dataset: Any) -> dict[str, Any]:
  from training import inference
  t0 = time.perf_counter()
  restored = inference.restore(workdir, which)
  test, log_probs = _predict_test(restored, data_dir, dataset)
  t1 = time.perf_counter()
  pngs, found = _figures(records, restored, test, log_probs)
  found["params"] = sum(int(np.prod(p.shape)) for p in _leaves(restored.state.params))
  t2 = time.perf_counter()
  summary = model_summary(restored)
  t3 = time.perf_counter()
  final = _read_json(os.path.join(workdir, TEST_METRICS))
  page = report_html(workdir, restored, records, found, final, pngs, summary)
  files = {name: os.path.join(workdir, f"{name}.png") for name in pngs}
  for name, path in files.items():
    _write(path, pngs[name])
  files["report"] = os.path.join(workdir, "report.html")
  _write(files["report"], page)
  _tensorboard_images(workdir, pngs, restored.step)
  t4 = time.perf_counter()
  return {"files": files, "checkpoint": restored.which, "step": restored.step, **found,
          "dataset": restored.dataset_info["name"], "model": restored.config.model.name,
          "status": _status(records, restored.config, final is not None),
          "seconds": {"restore_and_predict": t1 - t0, "figures": t2 - t1,
                      "model_summary": t3 - t2, "write": t4 - t3}}


def write_report(workdir: str, which: str = "best", data_dir: str | None = None,
                 dataset: Any = None) -> dict[str, Any]:
  """Writes the report of the run in `workdir` from its checkpoint `which` ("best", falling back
  to the latest when none ranks best; "latest"; or a step): the figures, `report.html` and the
  figures as TensorBoard images. The test split is loaded as the checkpoint's config says (from
  `data_dir` if given), or taken from `dataset` (a `data.Dataset`: the training loop's own).

  Returns {"files": {name: path}, "checkpoint", "step", "status", "model", "dataset",
  "test": scores of the checkpoint on the test split, "wrong": its number of mistakes,
  "mistakes": the examples shown in mistakes.png, "params", "seconds": each part's time}.

  Raises ReportError (a ConfigError) for a workdir that is not a run, has no metrics or no
  checkpoint, or cannot be written, and for any failure while writing: the run's own files
  (metrics, checkpoints) are never touched, so a caller can take it as a warning.
  """
  from training.errors import DataNotFoundError
  t0, cpu0 = time.perf_counter(), time.process_time()
  check_run_dir(workdir)
  try:
    records = read_metrics(workdir)
    out = _report(workdir, which, data_dir, records, dataset)
  except ReportError:
    raise
  except (ConfigError, DataNotFoundError) as e:  # no checkpoint, or no data to predict
    raise ReportError(f"Cannot write the report of {workdir}: {e}") from e
  except Exception as e:
    raise ReportError(f"Writing the report of {workdir} failed: {type(e).__name__}: {e}") from e
  out["seconds"].update(total=time.perf_counter() - t0, cpu=time.process_time() - cpu0)
  return out


def format_result(result: dict[str, Any]) -> str:
  """What `write_report` did, in a few lines for the terminal."""
  t = result["test"]
  files = result["files"]
  return (f"{result['model']} on {result['dataset']}, {result['checkpoint']} checkpoint (step "
          f"{result['step']}); {result['status']}\n"
          f"test: accuracy {t['accuracy']:.2%}  macro F1 {t['macro_f1']:.4f}  "
          f"({result['wrong']} mistakes; the {len(result['mistakes'])} most confident are shown)\n"
          f"wrote {files['report']} and {', '.join(os.path.basename(files[n]) for n in FIGURES)} "
          f"in {result['seconds']['total']:.1f}s")


# --- HTML -------------------------------------------------------------------------------------

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       max-width: 1180px; margin: 1.5em auto; padding: 0 1em; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.6em; }
.meta { color: #555; margin: 0.2em 0; }
table { border-collapse: collapse; margin: 0.6em 0; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.7em; text-align: right; }
th { background: #f2f2f2; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; height: auto; display: block; margin: 0.5em 0; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 12px;
      line-height: 1.2; }
"""


def _img(name: str, png: bytes) -> str:
  return (f'<img id="{name}" alt="{name.replace("_", " ")}" '
          f'src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">')


def html_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
  body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>"
                 for row in rows)
  return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _page(title: str, body: str) -> str:
  return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
          f'<meta name="viewport" content="width=device-width, initial-scale=1">'
          f"<title>{html.escape(title)}</title><style>{CSS}</style></head>\n"
          f"<body>\n{body}\n</body></html>\n")


def _metrics_tables(found: dict[str, Any], final: dict[str, Any] | None, names, ckpt: str) -> str:
  t = found["test"]
  end = (final or {}).get("test") or {}
  cols = [f"this report: {ckpt}"] + (["end of training (test_metrics.json)"] if end else [])
  rows = [["accuracy", f"{t['accuracy']:.2%}"] + ([f"{end['accuracy']:.2%}"] if end else []),
          ["loss", f"{t['loss']:.4f}"] + ([f"{end['loss']:.4f}"] if end else []),
          ["macro F1", f"{t['macro_f1']:.4f}"] + ([f"{end['macro_f1']:.4f}"] if end else []),
          ["examples", f"{t['count']:,}"] + ([f"{end['count']:,}"] if end else [])]
  rows.append(["parameters", f"{found['params']:,}"] + ([""] if end else []))
  if end and "time/total_s" in final:
    rows.append(["training time (s)", "", f"{final['time/total_s']:.1f}"])
  per_class = [[n, f"{s:,}", f"{p:.4f}", f"{r:.4f}", f"{f:.4f}"] for n, s, p, r, f in zip(
      names, t["support"], t["precision"], t["recall"], t["f1"])]
  return (html_table(["test split", *cols], rows) + "<h3>Per class (this report)</h3>"
          + html_table(["class", "examples", "precision", "recall (accuracy)", "F1"], per_class))


def report_html(workdir, restored, records, found, final, pngs, summary: str) -> str:
  """The self-contained report page: the figures are embedded as data URIs."""
  info, config = restored.dataset_info, restored.config
  names = [str(n) for n in info["class_names"]]
  ckpt = f"{restored.which} checkpoint (step {restored.step})"
  title = f"{config.model.name} on {info['name']}: report"
  now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
  status = _status(records, config, final is not None)
  body = [f"<h1>{html.escape(title)}</h1>",
          f'<p class="meta">workdir <code>{html.escape(os.path.abspath(workdir))}</code></p>',
          f'<p class="meta">{html.escape(status)}; figures of the {html.escape(ckpt)} on the '
          f"test split ({found['test']['count']:,} examples); written {html.escape(now)}</p>",
          "<h2>Test metrics</h2>", _metrics_tables(found, final, names, ckpt),
          "<h2>Learning curves</h2>", _img("learning_curves", pngs["learning_curves"]),
          "<h2>Errors by class</h2>", _img("confusion_matrix", pngs["confusion_matrix"]),
          _img("per_class", pngs["per_class"]),
          "<h2>Most confident mistakes</h2>", _img("mistakes", pngs["mistakes"]),
          "<h2>Model</h2>", f"<pre>{html.escape(summary)}</pre>",
          f"<h2>Config ({html.escape(ckpt)})</h2>",
          f"<pre>{html.escape(json.dumps(config.to_dict(), indent=2, sort_keys=True))}</pre>"]
  return _page(title, "\n".join(body))


# --- Comparing runs ---------------------------------------------------------------------------


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def _checkpoint_params(workdir: str) -> int | None:
  """The parameter count from the latest checkpoint's metadata (no arrays are read)."""
  if not os.path.isdir(os.path.join(workdir, "checkpoints")):
    return None
  try:
    import jax
    from training import checkpoint
    ckpt = checkpoint.Checkpointer.reader(workdir)
    try:
      step = ckpt.latest_step()
      meta = ckpt.manager.item_metadata(step)["state"] if step is not None else None
    finally:
      ckpt.close()
    leaves = jax.tree_util.tree_flatten_with_path(meta)[0] if meta is not None else []
    return sum(int(np.prod(getattr(leaf, "shape", ()))) for path, leaf in leaves
               if "params" in str(path[0])) or None
  except Exception:  # an unreadable checkpoint: the table shows "-"
    return None


def run_summary(workdir: str) -> dict[str, Any]:
  """What the comparison shows of one run: its flattened config.json, metrics and results."""
  check_run_dir(workdir, writable=False)
  records = read_metrics(workdir)
  config = _flat(_read_json(os.path.join(workdir, CONFIG)) or {})
  final = _read_json(os.path.join(workdir, TEST_METRICS)) or {}
  test = final.get("test") or {}
  epochs = records["epochs"]
  last = epochs[-1] if epochs else {}
  return {"workdir": workdir, "config": config, "records": records, "finished": bool(test),
          "accuracy": test.get("accuracy", last.get("test/accuracy")),
          "macro_f1": test.get("macro_f1"),
          "params": final.get("num_params") or _checkpoint_params(workdir),
          "seconds": final.get("time/total_s", last.get("time/elapsed_s")),
          "epochs": f"{last.get('epoch', 0)}/{config.get('num_epochs', '?')}",
          "steps_per_epoch": last["step"] // last["epoch"] if last else None}


def _labels(workdirs: Sequence[str]) -> list[str]:
  """Each run's folder name; paths relative to their common parent where names repeat."""
  names = [os.path.basename(os.path.normpath(w)) for w in workdirs]
  if len(set(names)) == len(names):
    return names
  common = os.path.commonpath([os.path.abspath(w) for w in workdirs])
  return [os.path.relpath(os.path.abspath(w), common) or w for w in workdirs]


def _fmt(v: Any) -> str:
  if isinstance(v, list):
    return "(" + ", ".join(map(str, v)) + ("," if len(v) == 1 else "") + ")"
  return "-" if v is None else str(v)


def comparison_table(runs: Sequence[dict[str, Any]], labels: Sequence[str]
                     ) -> tuple[list[str], list[list[str]]]:
  """(header, rows): one column per run; a row per setting that differs, then the results."""
  configs = [r["config"] for r in runs]
  keys = sorted(set().union(*configs), key=lambda k: (k != "model.name", k))
  differ = [k for k in keys if not k.startswith(NOT_SETTINGS) and len(
      {json.dumps(c.get(k, "(absent)"), sort_keys=True) for c in configs}) > 1]
  rows = [[k, *(_fmt(c.get(k, "(absent)")) for c in configs)] for k in differ]
  pct = lambda v: "-" if v is None else f"{v:.2%}"
  rows += [["epochs", *(r["epochs"] + ("" if r["finished"] else " (unfinished)") for r in runs)],
           ["test accuracy", *(pct(r["accuracy"]) for r in runs)],
           ["macro F1", *("-" if r["macro_f1"] is None else f"{r['macro_f1']:.4f}" for r in runs)],
           ["parameters", *("-" if r["params"] is None else f"{r['params']:,}" for r in runs)],
           ["time (s)", *("-" if r["seconds"] is None else f"{r['seconds']:.1f}" for r in runs)]]
  return ["", *labels], rows


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
  line = lambda cells: "  ".join(f"{c:<{w}}" if i == 0 else f"{c:>{w}}"
                                 for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
  return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def plot_comparison(runs: Sequence[dict[str, Any]], labels: Sequence[str]) -> bytes:
  """The runs' curves overlaid, on an epoch axis (runs of other batch sizes line up)."""
  fig = _figure("comparison")
  (loss, val_loss), (val_acc, lr) = fig.subplots(2, 2, sharex=True)
  accuracies = []
  for i, (run, label) in enumerate(zip(runs, labels)):
    color, spe = f"C{i % 10}", run["steps_per_epoch"]
    steps, epochs = run["records"]["steps"], run["records"]["epochs"]
    if spe and steps:
      x = [r["step"] / spe for r in steps]
      loss.plot(x, [r["train/loss"] for r in steps], color=color, lw=1.3, alpha=0.85, label=label)
      if "train/learning_rate" in steps[0]:
        lr.plot(x, [r["train/learning_rate"] for r in steps], color=color, lw=2, label=label)
    for ax, key, scale in ((val_loss, "validation/loss", 1), (val_acc, "validation/accuracy", 100)):
      points = [(r["epoch"], r[key] * scale) for r in epochs if key in r]
      if points:
        ax.plot(*zip(*points), "o-", color=color, lw=2, ms=6, label=label)
        accuracies += [v for _, v in points] if key.endswith("accuracy") else []
  if accuracies:
    low, high = min(accuracies), max(accuracies)
    pad = max(0.15 * (high - low), 0.2)
    val_acc.set_ylim(max(0.0, low - pad), min(100.0, high + pad) + 0.05)
  loss.set(yscale="log", title="train loss (per log step)", ylabel="loss (log scale)")
  val_loss.set(yscale="log", title="validation loss (per epoch)", ylabel="loss (log scale)")
  _plain_log_ticks(loss)
  _plain_log_ticks(val_loss)
  val_acc.set(title="validation accuracy (per epoch)", ylabel="accuracy (%)", xlabel="epoch")
  lr.set(title="learning rate", xlabel="epoch")
  lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
  for ax in (loss, val_loss, val_acc, lr):
    if ax.lines:
      ax.legend(loc="best", framealpha=0.9)
  fig.suptitle(f"{len(runs)} runs compared", fontsize=13, fontweight="bold")
  return _png(fig)


def write_comparison(workdirs: Sequence[str], output_dir: str) -> str:
  """Writes `comparison.png` (the runs' curves overlaid) and `comparison.html` (that figure and
  a table of the settings in which the runs differ, their test accuracy, macro F1, parameters
  and time) into `output_dir`; returns the table as text. Reads only the runs' metrics,
  config.json and test_metrics.json (and, for a killed run, its checkpoint's metadata)."""
  import matplotlib
  if not workdirs:
    raise ReportError("Name the runs to compare: python train.py --mode=report runs/a runs/b")
  runs = [run_summary(w) for w in workdirs]
  _check_writable(output_dir)
  labels = _labels(workdirs)
  header, rows = comparison_table(runs, labels)
  text = text_table(header, rows)
  try:
    with matplotlib.rc_context(STYLE):
      png = plot_comparison(runs, labels)
    body = ["<h1>Runs compared</h1>",
            "<p class=\"meta\">" + ", ".join(f"<code>{html.escape(os.path.abspath(w))}</code>"
                                            for w in workdirs) + "</p>",
            "<p class=\"meta\">Rows: the settings that differ, then the results (test accuracy "
            "and macro F1 at the end of training).</p>",
            html_table(header, rows), _img("comparison", png)]
    _write(os.path.join(output_dir, "comparison.png"), png)
    _write(os.path.join(output_dir, "comparison.html"), _page("Runs compared", "\n".join(body)))
  except Exception as e:
    raise ReportError(f"Writing the comparison into {output_dir} failed: "
                      f"{type(e).__name__}: {e}") from e
  return text
