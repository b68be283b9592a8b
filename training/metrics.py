"""Classification metrics from a confusion matrix, and the metric writers (JSON lines + TensorBoard)."""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Sequence

import numpy as np


def summarize(totals: Mapping[str, Any]) -> dict[str, Any]:
  """Loss, accuracy, macro F1 and per-class accuracy from summed eval outputs."""
  cm = np.asarray(totals["confusion"], np.int64)  # rows: true class, columns: predicted
  count = float(totals["count"])
  tp = np.diag(cm).astype(np.float64)
  support, predicted = cm.sum(1), cm.sum(0)
  with np.errstate(divide="ignore", invalid="ignore"):
    recall = np.where(support > 0, tp / support, 0.0)
    precision = np.where(predicted > 0, tp / predicted, 0.0)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
  present = support > 0
  return {"loss": float(totals["loss_sum"]) / max(count, 1.0),
          "accuracy": float(tp.sum() / max(count, 1.0)),
          "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
          "per_class_accuracy": recall.tolist(),
          "confusion_matrix": cm.tolist(),
          "count": int(count)}


def format_report(m: Mapping[str, Any], class_names: Sequence[str]) -> str:
  """Human-readable test report: headline metrics, per-class accuracy, confusion matrix."""
  names = [str(n) for n in class_names]
  width = max(6, *(len(n) for n in names))
  lines = [f"test: loss {m['loss']:.4f}  accuracy {m['accuracy']:.2%}  macro F1 "
           f"{m['macro_f1']:.4f}  ({m['count']} examples)",
           "per-class accuracy: " + "  ".join(
               f"{n}: {a:.2%}" for n, a in zip(names, m["per_class_accuracy"])),
           "confusion matrix (rows: true, columns: predicted):",
           " " * width + "".join(f"{n:>{width}}" for n in names)]
  for n, row in zip(names, m["confusion_matrix"]):
    lines.append(f"{n:>{width}}" + "".join(f"{v:>{width}}" for v in row))
  return "\n".join(lines)


def read_epochs(workdir: str, up_to_step: int) -> list[dict[str, Any]]:
  """The per-epoch records that `MetricWriter` wrote to `workdir` up to `up_to_step`, the last
  one of each epoch (a run killed after logging an epoch logs it again when it resumes)."""
  epochs: dict[int, dict[str, Any]] = {}
  try:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      for line in f:
        try:
          record = json.loads(line)
        except ValueError:
          continue  # a line cut short by a kill
        if "epoch" in record and record["step"] <= up_to_step:
          epochs[record["epoch"]] = record
  except FileNotFoundError:
    return []
  return [{k: v for k, v in epochs[e].items() if k not in ("step", "epoch")}
          for e in sorted(epochs)]


class MetricWriter:
  """Writes scalars to `metrics.jsonl` and TensorBoard event files in the workdir."""

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    self._jsonl = None
    self._tb = None
    if enabled:
      os.makedirs(workdir, exist_ok=True)
      self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a", buffering=1)
      from tensorboardX import SummaryWriter  # writes event files without TensorFlow
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, scalars: Mapping[str, float], **extra: Any) -> None:
    if not self.enabled:
      return
    self._jsonl.write(json.dumps({"step": step, **extra, **scalars}) + "\n")
    for k, v in scalars.items():
      self._tb.add_scalar(k, v, step)

  def write_text(self, tag: str, text: str, step: int = 0) -> None:
    if self.enabled:
      self._tb.add_text(tag, f"```\n{text}\n```", step)

  def close(self) -> None:
    if self.enabled:
      self._jsonl.close()
      self._tb.close()
