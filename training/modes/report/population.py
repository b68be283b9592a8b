"""A population's report: its members' learning curves as bands, one per swept setting (the
spread of its seeds), the members' table, and a sweep's test accuracy against each swept value.
"""

from __future__ import annotations

import html
from typing import Any, Sequence

import numpy as np

from training.modes.report.figures import COLORS, figure, plain_log_ticks, png
from training.modes.report.page import html_table


def settings(members: Sequence[dict[str, Any]], swept: Sequence[str]) -> list[tuple[str, list]]:
  """(label, member indices) of each swept setting, in the members' order ("all seeds" without
  a sweep)."""
  groups: dict[tuple, list[int]] = {}
  for m in members:
    groups.setdefault(tuple(m[f] for f in swept), []).append(m["member"])
  return [(", ".join(f"{f}={v:g}" for f, v in zip(swept, key)) or "all seeds", ids)
          for key, ids in groups.items()]


def _band(ax, series: dict[int, list[tuple[int, float]]], ids: list[int], color: str,
          label: str, markers: bool) -> None:
  """The members `ids`' curves as their mean, with their min-max range shaded."""
  steps = sorted(set.intersection(*(set(dict(series[i])) for i in ids if i in series)) or [])
  if not steps:
    return
  values = np.array([[dict(series[i])[s] for s in steps] for i in ids if i in series])
  low, high, mean = values.min(0), values.max(0), values.mean(0)
  ax.fill_between(steps, low, high, color=color, alpha=0.2, lw=0)
  ax.plot(steps, mean, "o-" if markers else "-", color=color, lw=2, ms=5,
          label=f"{label} ({len(values)} member{'s' * (len(values) > 1)}: mean, min-max)")


def plot_members(records: dict[str, Any], groups: list[tuple[str, list[int]]], title: str
                 ) -> bytes:
  """Train loss per log step and validation accuracy per epoch of every swept setting, each a
  band over its seeds; the ensemble's validation accuracy beside them."""
  fig = figure("learning_curves")
  loss, acc = fig.subplots(2, 1, sharex=True)
  per_member = records["members"]
  steps = {k: [(r["step"], r["train/loss"]) for r in v["steps"] if "train/loss" in r]
           for k, v in per_member.items()}
  val = {k: [(r["step"], 100 * r["validation/accuracy"]) for r in v["epochs"]
             if "validation/accuracy" in r] for k, v in per_member.items()}
  for i, (label, ids) in enumerate(groups):
    color = f"C{i % 10}"
    _band(loss, steps, ids, color, label, markers=False)
    _band(acc, val, ids, color, label, markers=True)
  ensemble = [(r["step"], 100 * r["validation/ensemble_accuracy"]) for r in records["epochs"]
              if "validation/ensemble_accuracy" in r]
  if ensemble:
    acc.plot(*zip(*ensemble), "s--", color=COLORS["test"], lw=1.5, ms=5, label="ensemble")
  loss.set(yscale="log", ylabel="train loss (log scale)")
  plain_log_ticks(loss)
  acc.set(ylabel="validation accuracy (%)", xlabel="training step")
  for ax in (loss, acc):
    if ax.lines:
      ax.legend(loc="best", framealpha=0.9, fontsize=9)
  fig.suptitle(title, fontsize=13, fontweight="bold")
  return png(fig)


def plot_sweep(members: Sequence[dict[str, Any]], swept: Sequence[str], title: str) -> bytes:
  """Test accuracy against each swept field's value: every member a point, each value's mean
  +- std over its members as a line with error bars."""
  fig = figure("comparison")
  axes = np.atleast_1d(fig.subplots(1, len(swept), squeeze=False)[0])
  for ax, field in zip(axes, swept):
    values = sorted({m[field] for m in members})
    accuracy = {v: [100 * m["accuracy"] for m in members if m[field] == v] for v in values}
    ax.plot([m[field] for m in members], [100 * m["accuracy"] for m in members], "o",
            color="0.55", ms=5, label="a member")
    means = [np.mean(accuracy[v]) for v in values]
    stds = [np.std(accuracy[v], ddof=1) if len(accuracy[v]) > 1 else 0.0 for v in values]
    ax.errorbar(values, means, yerr=stds, fmt="s-", color=COLORS["validation"], lw=2, ms=7,
                capsize=4, label="mean +- std")
    if len(values) > 2 and min(values) > 0 and max(values) / min(values) >= 10:
      ax.set_xscale("log")
    ax.set(xlabel=field, ylabel="test accuracy (%)")
    ax.legend(loc="best", framealpha=0.9)
  fig.suptitle(title, fontsize=13, fontweight="bold")
  return png(fig)


def members_table(members: Sequence[dict[str, Any]], swept: Sequence[str],
                  ensemble: dict[str, Any] | None) -> str:
  """The members' test scores (end of training) as an HTML table, the ensemble's last."""
  rows = [[m["member"], m["seed"], *(f"{m[f]:g}" for f in swept), f"{m['accuracy']:.2%}",
           f"{m['loss']:.4f}", f"{m['macro_f1']:.4f}"] for m in members]
  accuracy = np.asarray([m["accuracy"] for m in members])
  spread = accuracy.std(ddof=1) if len(accuracy) > 1 else 0.0
  rows.append(["mean +- std", "", *("" for _ in swept),
               f"{accuracy.mean():.2%} +- {spread:.2%}", "", ""])
  if ensemble:
    rows.append(["ensemble", "", *("" for _ in swept), f"{ensemble['accuracy']:.2%}",
                 f"{ensemble['loss']:.4f}", f"{ensemble['macro_f1']:.4f}"])
  header = ["member", "seed", *swept, "test accuracy", "loss", "macro F1"]
  return html_table(header, rows) + (
      "<p class=\"meta\">" + html.escape("At the end of training (test_metrics.json); the "
                                         "ensemble averages its members' probabilities.") + "</p>")
