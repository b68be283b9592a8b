"""Several runs compared: their curves overlaid, and a table of the settings in which they
differ and their results. Needs no checkpoint arrays and no data."""

from __future__ import annotations

import html
import json
import os
from typing import Any, Sequence

import numpy as np

from training.modes.report.figures import STYLE, figure, plain_log_ticks, png
from training.modes.report.page import html_table, img, page
from training.modes.report.records import (CONFIG, ReportError, TEST_METRICS, check_run_dir,
                                           check_writable, read_json, read_metrics, write_file)
from training.store.checkpoint import Checkpointer


# Settings that say where or how verbosely a run went, not what it trained: left out of the
# comparison table.
NOT_SETTINGS = ("data_dir", "data_url", "cache_dir", "compilation_cache_dir", "progress_bar",
                "log_every_steps", "eval_batch_size", "steps_per_call", "mesh_shape",
                "mesh_axes", "stop_after_steps", "test_every_epoch", "checkpoint.")


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
    with Checkpointer.reader(workdir) as ckpt:
      step = ckpt.latest_step()
      meta = ckpt.manager.item_metadata(step)["state"] if step is not None else None
    leaves = jax.tree_util.tree_flatten_with_path(meta)[0] if meta is not None else []
    return sum(int(np.prod(getattr(leaf, "shape", ()))) for path, leaf in leaves
               if "params" in str(path[0])) or None
  except Exception:  # an unreadable checkpoint: the table shows "-"
    return None


def run_summary(workdir: str) -> dict[str, Any]:
  """What the comparison shows of one run: its flattened config.json, metrics and results."""
  check_run_dir(workdir, writable=False)
  records = read_metrics(workdir)
  config = _flat(read_json(os.path.join(workdir, CONFIG)) or {})
  final = read_json(os.path.join(workdir, TEST_METRICS)) or {}
  test = final.get("test") or {}
  epochs = records["epochs"]
  last = epochs[-1] if epochs else {}
  return {"workdir": workdir, "config": config, "records": records, "finished": bool(test),
          "accuracy": test.get("accuracy", last.get("test/accuracy")),
          "macro_f1": test.get("macro_f1"),
          "params": final.get("num_params") or _checkpoint_params(workdir),
          # Every epoch's time, resumed ones included: a process's own time is one part of it.
          "seconds": (sum(e.get("time/epoch_s", 0.0) for e in epochs) if last.get("time/epoch_s")
                      else final.get("time/total_s", last.get("time/elapsed_s"))),
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
  fig = figure("comparison")
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
  plain_log_ticks(loss)
  plain_log_ticks(val_loss)
  val_acc.set(title="validation accuracy (per epoch)", ylabel="accuracy (%)", xlabel="epoch")
  lr.set(title="learning rate", xlabel="epoch")
  lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
  for ax in (loss, val_loss, val_acc, lr):
    if ax.lines:
      ax.legend(loc="best", framealpha=0.9)
  fig.suptitle(f"{len(runs)} runs compared", fontsize=13, fontweight="bold")
  return png(fig)


def write_comparison(workdirs: Sequence[str], output_dir: str) -> str:
  """Writes `comparison.png` (the runs' curves overlaid) and `comparison.html` (that figure and
  a table of the settings in which the runs differ, their test accuracy, macro F1, parameters
  and time) into `output_dir`; returns the table as text. Reads only the runs' metrics,
  config.json and test_metrics.json (and, for a killed run, its checkpoint's metadata)."""
  import matplotlib
  if not workdirs:
    raise ReportError("Name the runs to compare: python train.py --mode=report runs/a runs/b")
  runs = [run_summary(w) for w in workdirs]
  check_writable(output_dir)
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
            html_table(header, rows), img("comparison", png)]
    write_file(os.path.join(output_dir, "comparison.png"), png)
    write_file(os.path.join(output_dir, "comparison.html"), page("Runs compared", "\n".join(body)))
  except Exception as e:
    raise ReportError(f"Writing the comparison into {output_dir} failed: "
                      f"{type(e).__name__}: {e}") from e
  return text


def format_comparison(table: str, output_dir: str) -> str:
  """What `--mode=report A B ...` prints: the table, and where the page and figure went."""
  return (f"{table}\nwrote {os.path.join(output_dir, 'comparison.html')} and comparison.png "
          "(the runs' curves overlaid)")

