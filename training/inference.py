"""Use a trained workdir without training: evaluate a split, or classify image files.

Everything comes from the checkpoint: the config that trained it (to rebuild the model) and the
dataset's image shape and class names, so prediction needs no dataset at all.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Any, Iterator, Sequence, TextIO

import jax
import ml_collections
import numpy as np

from training import (builders, checkpoint, distributed, images, metrics as metrics_lib, optim,
                      steps, tasks)
from training.errors import ConfigError

SPLITS = ("test", "validation", "train")


@dataclasses.dataclass
class Restored:
  state: steps.TrainState
  config: ml_collections.ConfigDict
  dataset_info: dict[str, Any]
  step: int
  which: str  # "best", "latest" or "step"


def _tuples(x: Any) -> Any:
  """JSON turned the config's tuples into lists; the models' fields want tuples back."""
  if isinstance(x, dict):
    return {k: _tuples(v) for k, v in x.items()}
  if isinstance(x, list):
    return tuple(_tuples(v) for v in x)
  return x


def choose_step(ckpt: checkpoint.Checkpointer, which: str = "best") -> tuple[int, str]:
  """(step, "best" | "latest" | "step") of the checkpoint `which` names (see `restore`)."""
  available = ckpt.all_steps()
  if not available:
    raise ConfigError(f"No complete checkpoint in {ckpt.directory}; train first (or let the "
                      "run reach its first checkpoint).")
  if which == "latest":
    return ckpt.latest_step(), which
  if which == "best":
    step = ckpt.best_step()
    if step is None:  # trained without a validation split: nothing ranks the checkpoints
      return ckpt.latest_step(), "latest"
    return step, which
  if which.isdigit() and int(which) in available:
    return int(which), "step"
  raise ConfigError(f"No checkpoint {which!r} in {ckpt.directory}; use best, latest or one "
                    f"of the steps {sorted(available)}.")


def restore(workdir: str, which: str = "best", task: str = "classify") -> Restored:
  """The checkpoint `which` ("best" by validation accuracy, "latest", or a step number) of a
  run of `task` (another task's run is refused: its state and uses differ)."""
  ckpt = checkpoint.Checkpointer.reader(workdir)
  try:
    step, which = choose_step(ckpt, which)
    config = ml_collections.ConfigDict(_tuples(ckpt.read_json(step, "config")))
    if tasks.name_of(config) != task:
      use = "--mode=sample" if tasks.name_of(config) == "gan" else "--mode=evaluate or predict"
      raise ConfigError(f"{workdir} holds a {tasks.name_of(config)} run ({config.model.name}), "
                        f"and a {task} run is needed here; for that run use {use}.")
    info = ckpt.read_json(step, "dataset")
    key = jax.random.PRNGKey(0)
    state = tasks.get(config, info["num_classes"], info["image_shape"]).init_state(
        optim.make_schedule(config, steps_per_epoch=1), key, key)
    state = ckpt.restore(state, step)
  finally:
    ckpt.close()
  return Restored(state, config, info, step, which)


def evaluate(workdir: str, which: str = "best", split: str = "test",
             data_dir: str | None = None) -> dict[str, Any]:
  """Full metrics of a checkpoint on `split` (all of it); also written to the workdir."""
  if split not in SPLITS:
    raise ConfigError(f"Unknown split {split!r}; choose one of {', '.join(SPLITS)}.")
  r = restore(workdir, which)
  config = r.config
  config.max_eval_examples = 0  # every example of the split, whatever the training run used
  config.max_train_examples = 0
  if data_dir:
    config.data_dir = data_dir
  ds = builders.load_data(config)
  part = {"test": ds.test, "validation": ds.validation, "train": ds.train}[split]
  if part is None:
    raise ConfigError("This run was trained without a validation split "
                      "(validation_fraction=0); evaluate --split=test or train.")
  mesh = distributed.make_mesh((-1,), ("data",))
  n = mesh.shape["data"]
  driver = steps.DeviceSteps(mesh, n, -(-config.eval_batch_size // n) * n, ds.num_classes)
  state = driver.put(r.state)
  result = metrics_lib.summarize(driver.evaluate(state, *driver.put_eval(part.images,
                                                                         part.labels)))
  result.update(checkpoint_step=r.step, checkpoint=r.which, split=split, dataset=ds.name)
  builders.log(f"{config.model.name} from the {r.which} checkpoint (step {r.step}) of {workdir}, "
           f"on {ds.name}/{split}:")
  builders.log(metrics_lib.format_report(result, ds.class_names).replace("test:", f"{split}:", 1))
  with open(os.path.join(workdir, f"eval_{split}_step{r.step}.json"), "w") as f:
    json.dump(result, f, indent=2)
  return result


PREDICT_BATCH = 256  # files read and scored at a time: memory does not grow with their number


def iter_predictions(workdir: str, paths: Sequence[str], which: str = "best",
                     invert: bool = False, fit: str | None = None, top: int = 3,
                     batch_size: int = PREDICT_BATCH) -> Iterator[dict[str, Any]]:
  """For each image file, in order, as soon as its batch is scored: its label and class
  probabilities, or {"file", "error"} for a file that cannot be used (missing, unreadable, over
  PIL's size limit); the others go on. "warnings" lists why a label may mean nothing (a blank
  or tiny image, dark ink on a light background without `invert`)."""
  if not paths:
    raise ConfigError("Give the image files to classify, e.g. `python train.py --mode=predict "
                      "--workdir=runs/cnn digit.png`.")
  r = restore(workdir, which)
  info = r.dataset_info
  shape = tuple(info["image_shape"])
  if fit is None:  # objects fill the frame in fashion_mnist & co; digits were boxed and centred
    fit = "digit" if info["name"] == "mnist" else "resize"
  if fit not in images.FITS:
    raise ConfigError(f"Unknown fit {fit!r}; choose one of {', '.join(images.FITS)}.")
  names = [str(n) for n in info["class_names"]]
  # A folder's images keep their own background, which the model learnt: no --invert note.
  ink_note = not str(info["name"]).startswith("folder:")
  apply = jax.jit(lambda s, x: jax.nn.softmax(
      s.apply_fn(s.eval_variables(), steps.preprocess(x), train=False), axis=-1))
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
            fit: str | None = None, top: int = 3) -> list[dict[str, Any]]:
  """`iter_predictions` as a list: one entry per file, failures ({"file", "error"}) included."""
  return list(iter_predictions(workdir, paths, which, invert, fit, top))


def predict_command(workdir: str, paths: Sequence[str], which: str = "best",
                    invert: bool = False, fit: str | None = None, out: TextIO | None = None,
                    err: TextIO | None = None) -> list[dict[str, Any]]:
  """--mode=predict: prints each file's prediction as its batch is scored (stdout), and each file
  that cannot be used as an `error:` line (stderr), then goes on; returns those failures."""
  out, err = out or sys.stdout, err or sys.stderr
  width = max(len(p) for p in paths) if paths else 0
  failures = []
  for p in iter_predictions(workdir, paths, which, invert, fit):
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
