"""Use a trained workdir without training: evaluate a split, or classify image files.

Everything comes from the checkpoint: the config that trained it (to rebuild the model) and the
dataset's image shape and class names, so prediction needs no dataset at all.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np

from training import checkpoint, distributed, images, loop, metrics as metrics_lib, optim, steps
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


def restore(workdir: str, which: str = "best") -> Restored:
  """The checkpoint `which` ("best" by validation accuracy, "latest", or a step number)."""
  ckpt = checkpoint.Checkpointer(workdir)
  try:
    available = ckpt.all_steps()
    if not available:
      raise ConfigError(f"No complete checkpoint in {ckpt.directory}; train first (or let the "
                        "run reach its first checkpoint).")
    if which == "latest":
      step = ckpt.latest_step()
    elif which == "best":
      step = ckpt.best_step()
      if step is None:  # trained without a validation split: nothing ranks the checkpoints
        step, which = ckpt.latest_step(), "latest"
    elif which.isdigit() and int(which) in available:
      step, which = int(which), "step"
    else:
      raise ConfigError(f"No checkpoint {which!r} in {ckpt.directory}; use best, latest or one "
                        f"of the steps {sorted(available)}.")
    config = ml_collections.ConfigDict(_tuples(ckpt.read_json(step, "config")))
    info = ckpt.read_json(step, "dataset")
    model = loop.build_model(config, info["num_classes"])
    tx = optim.make_optimizer(config, optim.make_schedule(config, steps_per_epoch=1))
    key = jax.random.PRNGKey(0)
    state = steps.create_train_state(model, tx, tuple(info["image_shape"]), key, key,
                                     ema=config.ema_decay > 0)
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
  ds = loop.load_data(config)
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
  loop.log(f"{config.model.name} from the {r.which} checkpoint (step {r.step}) of {workdir}, "
           f"on {ds.name}/{split}:")
  loop.log(metrics_lib.format_report(result, ds.class_names).replace("test:", f"{split}:", 1))
  with open(os.path.join(workdir, f"eval_{split}_step{r.step}.json"), "w") as f:
    json.dump(result, f, indent=2)
  return result


def predict(workdir: str, paths: Sequence[str], which: str = "best", invert: bool = False,
            fit: str | None = None, top: int = 3) -> list[dict[str, Any]]:
  """Label and class probabilities for each image file."""
  if not paths:
    raise ConfigError("Give the image files to classify, e.g. `python train.py --mode=predict "
                      "--workdir=runs/cnn digit.png`.")
  missing = [p for p in paths if not os.path.isfile(p)]
  if missing:
    raise ConfigError(f"No such file(s): {', '.join(missing)}.")
  r = restore(workdir, which)
  info = r.dataset_info
  shape = tuple(info["image_shape"])
  if fit is None:  # objects fill the frame in fashion_mnist & co; digits were boxed and centred
    fit = "digit" if info["name"] == "mnist" else "resize"
  loaded = [images.load(p, shape, invert=invert, fit=fit) for p in paths]
  batch = np.stack([array for array, _ in loaded])
  logits = jax.jit(lambda s, x: s.apply_fn(s.eval_variables(), steps.preprocess(x),
                                           train=False))(r.state, batch)
  probs = np.asarray(jax.nn.softmax(logits, axis=-1), np.float64)
  names = [str(n) for n in info["class_names"]]
  out = []
  for path, p, (_, light) in zip(paths, probs, loaded):
    order = np.argsort(-p)[:top]
    out.append({"file": path, "label": int(order[0]), "class_name": names[order[0]],
                "probability": float(p[order[0]]),
                "top": [(names[i], float(p[i])) for i in order],
                "probabilities": p.tolist(),
                "light_background": light and not invert})
  return out


def format_predictions(predictions: Sequence[dict[str, Any]]) -> str:
  width = max(len(p["file"]) for p in predictions)
  return "\n".join(
      f"{p['file']:<{width}}  {p['class_name']:>6}  p={p['probability']:.4f}   top: "
      + ", ".join(f"{name} {_percent(prob)}" for name, prob in p["top"])
      + ("   (light background: dark ink on paper needs --invert)"
         if p["light_background"] else "") for p in predictions)


def _percent(p: float) -> str:
  return f"{p:.2%}" if p >= 5e-5 else "<0.01%"
