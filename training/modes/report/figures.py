"""The report's figures, drawn on matplotlib's Agg canvas (no pyplot, no display, and the
process-wide backend left alone): learning curves, confusion matrix, per-class scores, mistakes."""

from __future__ import annotations

import io
import math
from typing import Any, Sequence

import numpy as np


FIGURES = ("learning_curves", "confusion_matrix", "per_class", "mistakes")


DPI = 100  # a figure of (w, h) inches is exactly (100 w, 100 h) pixels


SIZES = {"learning_curves": (11, 8.5), "confusion_matrix": (7.5, 6.5), "per_class": (11, 4.5),
         "mistakes": (12, 7.8), "comparison": (13, 8.5)}


MISTAKES_GRID = (4, 8)  # rows, columns: the 32 most confident mistakes


COLORS = {"train": "#1f77b4", "validation": "#d62728", "test": "#2ca02c"}


STYLE = {"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "legend.fontsize": 10,
         "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False,
         "axes.spines.right": False}


def figure(name: str, layout: str | None = "constrained"):
  """A matplotlib Figure on the Agg canvas (headless), of the size SIZES[name]."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  fig = Figure(figsize=SIZES[name], dpi=DPI, layout=layout)
  FigureCanvasAgg(fig)
  return fig


def png(fig) -> bytes:
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=DPI)
  return buf.getvalue()


def plain_log_ticks(ax) -> None:
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
  fig = figure("learning_curves")
  loss, acc, lr = fig.subplots(3, 1, sharex=True, height_ratios=[3, 3, 1.7])
  steps, epochs = records["steps"], records["epochs"]
  x = [r["step"] for r in steps]
  if steps:
    loss.plot(x, [r["train/loss"] for r in steps], color=COLORS["train"], alpha=0.35, lw=1.2,
              label="train (per log step)")
  _epoch_series(loss, epochs, "loss")
  loss.set(yscale="log", ylabel="loss (log scale)")
  plain_log_ticks(loss)
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
  return png(fig)


def plot_confusion_matrix(cm: np.ndarray, names: Sequence[str], title: str) -> bytes:
  """Counts of true (rows) against predicted (columns) classes; colour on a log scale, so that
  the off-diagonal mistakes show beside the diagonal's thousands."""
  from matplotlib.colors import LogNorm
  fig = figure("confusion_matrix")
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
  return png(fig)


def plot_per_class(result: dict[str, Any], names: Sequence[str], title: str) -> bytes:
  """Precision, recall and F1 of each class as grouped bars, the axis zoomed on their range."""
  fig = figure("per_class")
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
  return png(fig)


def plot_mistakes(images: np.ndarray, labels: np.ndarray, chosen: tuple[np.ndarray, ...],
                  names: Sequence[str], title: str, numbers: np.ndarray | None = None) -> bytes:
  """A grid of the chosen test images (positions in `images`), each titled with its number
  (`numbers[position]`, the source's index; else the position), true and predicted class and the
  predicted class's probability."""
  fig = figure("mistakes", layout=None)  # a fixed grid: constrained layout would cost 2x
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
    ax.set_title(f"#{i if numbers is None else numbers[i]}: true {short(names[labels[i]])}\npredicted {short(names[predicted[slot]])}"
                 f"\np={confidence[slot]:.3f}", fontsize=9, color="#8b0000")
  if not len(indices):
    fig.text(0.5, 0.5, "No misclassified test examples.", ha="center", fontsize=16)
  fig.suptitle(title, fontsize=13, fontweight="bold", y=0.99)
  return png(fig)

