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


SHORT = 30  # a series of at most this many log steps gets a marker on each point


def _per_step(ax, x: list[int], y: list[float], alpha: float = 0.35, marker: str = "o",
              **style) -> list:
  """A per-log-step series: a faint line, with markers and stronger when short (one point
  draws no line at all)."""
  short = len(x) <= SHORT
  return ax.plot(x, y, marker=marker if short else None, ms=5,
                 alpha=max(alpha, 0.8) if short else alpha, **style)


def _zoom_accuracy(ax, values: list[float], x: list[int], steps: list[float]) -> None:
  """Zooms on the epochs' accuracies; log steps that fall below get an arrow and a note."""
  low, high = min(values), max(values)
  pad = max(0.15 * (high - low), 0.2)
  bottom = max(0.0, low - pad)
  ax.set_ylim(bottom, min(100.0, high + pad) + 0.05)
  below = [(s, v) for s, v in zip(x, steps) if v < bottom]
  if below:
    ax.annotate(f"{len(below)} log step{'s' * (len(below) > 1)} below the axis (lowest "
                f"{min(v for _, v in below):.1f}%)", xy=(below[-1][0], 0.0),
                xycoords=("data", "axes fraction"), xytext=(below[-1][0], 0.16),
                textcoords=("data", "axes fraction"), fontsize=9, color="0.3", ha="left",
                arrowprops=dict(arrowstyle="->", color="0.4"))


def learning_curves_figure(records: dict[str, Any], title: str):
  """Loss, accuracy and learning rate (with the gradient norm) on one step axis, as a Figure."""
  from matplotlib.ticker import MaxNLocator
  fig = figure("learning_curves")
  loss, acc, lr = fig.subplots(3, 1, sharex=True, height_ratios=[3, 3, 1.7])
  steps, epochs = records["steps"], records["epochs"]
  x = [r["step"] for r in steps]
  if steps:
    _per_step(loss, x, [r["train/loss"] for r in steps], color=COLORS["train"], lw=1.2,
              label="train (per log step)")
  _epoch_series(loss, epochs, "loss")
  loss.set(yscale="log", ylabel="loss (log scale)")
  plain_log_ticks(loss)
  train_acc = [100 * r["train/accuracy"] for r in steps] if (
      steps and "train/accuracy" in steps[0]) else []
  if train_acc:
    _per_step(acc, x, train_acc, color=COLORS["train"], lw=1.2, label="train (per log step)")
  values = _epoch_series(acc, epochs, "accuracy", 100.0)
  if values:
    _zoom_accuracy(acc, values, x, train_acc)
  acc.set(ylabel="accuracy (%)")
  for ax in (loss, acc):
    ax.legend(loc="best", framealpha=0.9)
  _learning_rate_panel(lr, steps, x)
  lr.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps: no 22.5
  every = [r["step"] for r in steps + epochs]
  if every and max(every) - min(every) < 4:  # a few steps: room around them
    lr.set_xlim(min(every) - 1, max(every) + 1)
  _mark_epochs([loss, acc, lr], epochs)
  fig.suptitle(title, fontsize=13, fontweight="bold")
  return fig


def _learning_rate_panel(lr, steps: list[dict[str, Any]], x: list[int]) -> None:
  handles = []
  if steps and "train/learning_rate" in steps[0]:
    handles += _per_step(lr, x, [r["train/learning_rate"] for r in steps], color="#9467bd",
                         lw=2, alpha=1.0)
  lr.set(ylabel="learning rate", xlabel="training step")
  lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
  if steps and "train/grad_norm" in steps[0]:
    norm = lr.twinx()
    handles += _per_step(norm, x, [r["train/grad_norm"] for r in steps], color="0.45", lw=1,
                         alpha=0.7, marker="x")
    norm.set_ylabel("gradient norm", color="0.35")
    norm.spines["right"].set_visible(True)
    norm.grid(False)
  lr.legend(handles, ["learning rate", "gradient norm (right axis)"][:len(handles)],
            loc="upper right", framealpha=0.9)


def plot_learning_curves(records: dict[str, Any], title: str) -> bytes:
  """`learning_curves_figure` as PNG bytes."""
  return png(learning_curves_figure(records, title))


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

