"""`--mode=predict`: classify image files with a trained workdir's checkpoint.

Everything comes from the checkpoint: the config that trained it (to rebuild the model) and the
dataset's image shape and class names, so prediction needs no dataset at all.
"""

from __future__ import annotations

import sys
from typing import Any, Iterator, Sequence, TextIO

import jax
import jax.numpy as jnp
import numpy as np

from training.data import folder, images
from training.errors import ConfigError
from training.model import steps
from training.tasks import restore as restore_lib

PREDICT_BATCH = 256  # files read and scored at a time: memory does not grow with their number


def iter_predictions(workdir: str, paths: Sequence[str], which: str = "best",
                     invert: bool = False, fit: str | None = None, top: int = 3,
                     batch_size: int = PREDICT_BATCH, member: int | None = None
                     ) -> Iterator[dict[str, Any]]:
  """For each image file, in order, as soon as its batch is scored: its label and class
  probabilities, or {"file", "error"} for a file that cannot be used (missing, unreadable, over
  PIL's size limit); the others go on. "warnings" lists why a label may mean nothing (a blank
  or tiny image, dark ink on a light background without `invert`). A population's ensemble
  predicts (its members' probabilities averaged), or member `member` alone."""
  if not paths:
    raise ConfigError("Give the image files to classify, e.g. `python train.py --mode=predict "
                      "--workdir=runs/cnn digit.png`.")
  r = restore_lib.restore(workdir, which, member=member)
  info = r.dataset_info
  shape = tuple(info["image_shape"])
  if fit is None:  # objects fill the frame in fashion_mnist & co; digits were boxed and centred
    fit = "digit" if info["name"] == "mnist" else "resize"
  if fit not in images.FITS:
    raise ConfigError(f"Unknown fit {fit!r}; choose one of {', '.join(images.FITS)}.")
  names = [str(n) for n in info["class_names"]]
  # A folder's images keep their own background, which the model learnt: no --invert note.
  ink_note = not str(info["name"]).startswith(folder.PREFIX)
  population = bool(r.members)
  apply = jax.jit(lambda s, x: jnp.exp(steps.log_probabilities(s, steps.preprocess(x),
                                                               population)))
  batch = np.zeros((batch_size, *shape), np.uint8)  # one shape: compiled once
  for start in range(0, len(paths), batch_size):
    chunk = paths[start:start + batch_size]
    loaded: list[images.Loaded | images.ImageError] = []
    for i, path in enumerate(chunk):
      try:
        loaded.append(images.read(path, shape, invert=invert, fit=fit))
        batch[i] = loaded[-1].array
      except images.ImageError as e:
        loaded.append(e)
    probs = np.asarray(apply(r.state, batch), np.float64)
    for path, item, p in zip(chunk, loaded, probs):
      if isinstance(item, images.ImageError):
        yield {"file": path, "error": str(item)}
        continue
      order = np.argsort(-p)[:top]
      notes = list(item.warnings)
      light = item.light and not invert and ink_note
      if light:
        notes.append("light background: dark ink on paper needs --invert")
      yield {"file": path, "label": int(order[0]), "class_name": names[order[0]],
             "probability": float(p[order[0]]),
             "top": [(names[i], float(p[i])) for i in order],
             "probabilities": p.tolist(),
             "light_background": light,
             "warnings": notes}


def predict(workdir: str, paths: Sequence[str], which: str = "best", invert: bool = False,
            fit: str | None = None, top: int = 3, member: int | None = None
            ) -> list[dict[str, Any]]:
  """`iter_predictions` as a list: one entry per file, failures ({"file", "error"}) included."""
  return list(iter_predictions(workdir, paths, which, invert, fit, top, member=member))


def predict_command(workdir: str, paths: Sequence[str], which: str = "best",
                    invert: bool = False, fit: str | None = None, out: TextIO | None = None,
                    err: TextIO | None = None, member: int | None = None) -> list[dict[str, Any]]:
  """--mode=predict: prints each file's prediction as its batch is scored (stdout), and each file
  that cannot be used as an `error:` line (stderr), then goes on; returns those failures."""
  out, err = out or sys.stdout, err or sys.stderr
  width = max(len(p) for p in paths) if paths else 0
  failures = []
  for p in iter_predictions(workdir, paths, which, invert, fit, member=member):
    if "error" in p:
      failures.append(p)
      out.flush()
      print(f"error: {p['error']}", file=err, flush=True)
    else:
      print(format_prediction(p, width), file=out)
  return failures


def format_prediction(p: dict[str, Any], width: int = 0) -> str:
  if "error" in p:
    return f"{p['file']:<{width}}  error: {p['error']}"
  notes = p.get("warnings")
  if notes is None:  # a prediction made before warnings were listed
    notes = ["light background: dark ink on paper needs --invert"] if p.get(
        "light_background") else []
  return (f"{p['file']:<{width}}  {p['class_name']:>6}  p={p['probability']:.4f}   top: "
          + ", ".join(f"{name} {_percent(prob)}" for name, prob in p["top"])
          + (f"   ({'; '.join(notes)})" if notes else ""))


def format_predictions(predictions: Sequence[dict[str, Any]]) -> str:
  width = max(len(p["file"]) for p in predictions)
  return "\n".join(format_prediction(p, width) for p in predictions)


def _percent(p: float) -> str:
  return f"{p:.2%}" if p >= 5e-5 else "<0.01%"
