"""Classification scores from the evaluation step's sums: loss, accuracy, macro F1, per-class
accuracy and the confusion matrix; and the report a run prints of them."""

from __future__ import annotations

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
