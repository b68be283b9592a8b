"""`--mode=predict`: classify image files with a trained workdir's checkpoint.

Everything comes from the checkpoint: the config that trained it (to rebuild the model) and the
dataset's image shape and class names, so prediction needs no dataset at all.
"""

from __future__ import annotations

import csv
import functools
import json
import os
import sys
from typing import Any, Callable, Iterator, Sequence, TextIO

import jax
import numpy as np

from training.data import folder, images
from training.errors import ConfigError, os_reason
from training.modes import ensemble as ensemble_lib

PREDICT_BATCH = 256  # files read and scored at a time: memory does not grow with their number


def iter_predictions(workdir: str, paths: Sequence[str], which: str = "best",
                     invert: bool = False, fit: str | None = None, top: int = 3,
                     batch_size: int = PREDICT_BATCH,
                     on_start: Callable[[list[str]], None] | None = None,
                     member: int | None = None, ensemble: Sequence[str] = ()
                     ) -> Iterator[dict[str, Any]]:
  """For each image file, in order, as soon as its batch is scored: its label and class
  probabilities, or {"file", "error"} for a file that cannot be used (missing, unreadable, over
  PIL's size limit); the others go on. "warnings" lists why a label may mean nothing (a blank
  or tiny image, dark ink on a light background without `invert`); a blank image ("blank")
  gets no label, class_name or probability (None), only the model's raw "probabilities".
  `on_start` is called with the class names once the checkpoint is read, before any file. A
  population's ensemble predicts (its members' probabilities averaged), or member `member`;
  with `ensemble` (other workdirs), the ensemble of every model of them all."""
  if not paths:
    raise ConfigError("Give the image files to classify, e.g. `python train.py --mode=predict "
                      "--workdir=runs/cnn digit.png`.")
  runs = ensemble_lib.restore_all(workdir, ensemble, which, member)
  info = runs[0].dataset_info
  shape = tuple(info["image_shape"])
  if fit is None:  # objects fill the frame in fashion_mnist & co; digits were boxed and centred
    fit = "digit" if info["name"] == "mnist" else "resize"
  if fit not in images.FITS:
    raise ConfigError(f"Unknown fit {fit!r}; choose one of {', '.join(images.FITS)}.")
  names = [str(n) for n in info["class_names"]]
  if on_start:
    on_start(names)
  # A folder's images keep their own background, which the model learnt: no --invert note.
  ink_note = not str(info["name"]).startswith(folder.PREFIX)
  apply = jax.jit(functools.partial(ensemble_lib.probabilities, runs))
  states = [r.state for r in runs]
  for chunk, loaded, batch in images.read_batches(paths, shape, batch_size, invert=invert,
                                                  fit=fit):
    probs = np.asarray(apply(states, batch), np.float64)  # one shape: compiled once
    for path, item, p in zip(chunk, loaded, probs):
      if isinstance(item, images.ImageError):
        yield {"file": path, "error": str(item)}
      else:
        yield _prediction(path, item, p, names, images.notes(item, invert, ink_note), top)


def _prediction(path: str, item: images.Loaded, p: np.ndarray, names: list[str],
                notes: list[str], top: int) -> dict[str, Any]:
  """A file's entry: a blank image gets no class (whatever the model says of it is noise)."""
  order = np.argsort(-p)[:top]
  label = None if item.blank else int(order[0])
  return {"file": path, "label": label, "class_name": None if item.blank else names[label],
          "probability": None if item.blank else float(p[label]), "blank": item.blank,
          "top": [(names[i], float(p[i])) for i in order],
          "probabilities": p.tolist(),
          "light_background": images.LIGHT_NOTE in notes,
          "warnings": notes}


def predict(workdir: str, paths: Sequence[str], which: str = "best", invert: bool = False,
            fit: str | None = None, top: int = 3, member: int | None = None,
            ensemble: Sequence[str] = ()) -> list[dict[str, Any]]:
  """`iter_predictions` as a list: one entry per file, failures ({"file", "error"}) included."""
  return list(iter_predictions(workdir, paths, which, invert, fit, top, member=member,
                               ensemble=ensemble))


def predict_command(workdir: str, paths: Sequence[str], which: str = "best",
                    invert: bool = False, fit: str | None = None, out: TextIO | None = None,
                    err: TextIO | None = None, output: str | None = None,
                    member: int | None = None, ensemble: Sequence[str] = ()
                    ) -> list[dict[str, Any]]:
  """--mode=predict: prints each file's prediction as its batch is scored (stdout), and each file
  that cannot be used as an `error:` line (stderr), then goes on; ends with a summary line;
  `output`: also a .csv or .jsonl file of them. Returns the failures."""
  out, err = out or sys.stdout, err or sys.stderr
  width = max(len(p) for p in paths) if paths else 0
  failures, counts, done = [], {"classified": 0, "flagged": 0, "blank": 0}, False
  saved = OutputFile(output) if output else None
  try:
    for p in iter_predictions(workdir, paths, which, invert, fit,
                              on_start=saved.start if saved else None, member=member,
                              ensemble=ensemble):
      if saved:
        saved.write(p)
      if "error" in p:
        failures.append(p)
        out.flush()
        print(f"error: {p['error']}", file=err, flush=True)
      else:
        counts["blank" if p["blank"] else "classified"] += 1
        counts["flagged"] += bool(p["warnings"]) and not p["blank"]
        print(format_prediction(p, width), file=out)
    done = True
  finally:
    if saved:
      saved.close(done)
  flagged = f" ({counts['flagged']} of them flagged: see the notes)" if counts["flagged"] else ""
  print(f"{len(paths)} file{'s' * (len(paths) != 1)}: {counts['classified']} classified{flagged}, "
        f"{counts['blank']} blank (no class), {len(failures)} could not be read"
        + (f"; written to {output}" if saved else ""), file=out, flush=True)
  return failures


class OutputFile:
  """--output=FILE.csv or FILE.jsonl: one row per file, in order (file, class, probability, each
  class's probability, notes, error), written as they come into FILE.tmp, which becomes FILE
  when all are in. The csv module quotes paths with commas, quotes or spaces."""

  def __init__(self, path: str):
    self.path, self.kind = path, os.path.splitext(path)[1].lower()
    if self.kind not in (".csv", ".jsonl"):
      raise ConfigError(f"--output={path}: give a .csv or .jsonl file for the predictions.")
    self.tmp, self.names, self.count = f"{path}.tmp", [], 0
    try:  # before the checkpoint is read: a bad path costs nothing
      self.file = open(self.tmp, "w", newline="", encoding="utf-8")
    except OSError as e:
      raise ConfigError(f"Cannot write --output={path}: {os_reason(e)}; pass a file in a "
                        "writable directory.") from e
    self.rows = csv.writer(self.file)

  def start(self, names: list[str]) -> None:
    self.names = names
    if self.kind == ".csv":
      self.rows.writerow(["file", "class", "probability", *(f"p_{n}" for n in names), "notes",
                          "error"])

  def write(self, p: dict[str, Any]) -> None:
    probabilities = (dict(zip(self.names, p["probabilities"]))
                     if "probabilities" in p and not p["blank"] else None)
    row = {"file": p["file"], "class": p.get("class_name"), "probability": p.get("probability"),
           "probabilities": probabilities, "notes": p.get("warnings", []),
           "error": p.get("error")}
    if self.kind == ".jsonl":
      self.file.write(json.dumps(row) + "\n")
    else:
      self.rows.writerow([p["file"], row["class"] or "", _number(row["probability"]),
                          *(_number((probabilities or {}).get(n)) for n in self.names),
                          "; ".join(row["notes"]), row["error"] or ""])
    self.count += 1

  def close(self, done: bool) -> None:
    """FILE once every file has its row (`done`); else the rows of an interrupted run stay in
    FILE.tmp, and a file without any is removed."""
    self.file.close()
    if done:
      os.replace(self.tmp, self.path)
    elif not self.count:
      os.remove(self.tmp)


def _number(x: float | None) -> str:
  return "" if x is None else f"{x:.6g}"


def format_prediction(p: dict[str, Any], width: int = 0) -> str:
  if "error" in p:
    return f"{p['file']:<{width}}  error: {p['error']}"
  notes = p.get("warnings")
  if notes is None:  # a prediction made before warnings were listed
    notes = [images.LIGHT_NOTE] if p.get("light_background") else []
  if p.get("blank"):  # no class: the model's answer for an empty image would be noise
    return f"{p['file']:<{width}}  {'-':>6}  no class   ({'; '.join(notes)})"
  return (f"{p['file']:<{width}}  {p['class_name']:>6}  p={p['probability']:.4f}   top: "
          + ", ".join(f"{name} {_percent(prob)}" for name, prob in p["top"])
          + (f"   ({'; '.join(notes)})" if notes else ""))


def format_predictions(predictions: Sequence[dict[str, Any]]) -> str:
  width = max(len(p["file"]) for p in predictions)
  return "\n".join(format_prediction(p, width) for p in predictions)


def _percent(p: float) -> str:
  return f"{p:.2%}" if p >= 5e-5 else "<0.01%"
