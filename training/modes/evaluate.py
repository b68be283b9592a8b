"""`--mode=evaluate`: a trained workdir's checkpoint scored on a whole split of its dataset."""

from __future__ import annotations

import json
import os
from typing import Any

from training import data
from training.console import log
from training.errors import ConfigError
from training.model import device, mesh as mesh_lib, scores
from training.tasks import restore as restore_lib


SPLITS = ("test", "validation", "train")


def evaluate(workdir: str, which: str = "best", split: str = "test",
             data_dir: str | None = None) -> dict[str, Any]:
  """Full metrics of a checkpoint on `split` (all of it); also written to the workdir."""
  if split not in SPLITS:
    raise ConfigError(f"Unknown split {split!r}; choose one of {', '.join(SPLITS)}.")
  r = restore_lib.restore(workdir, which)
  config = r.config
  config.max_eval_examples = 0  # every example of the split, whatever the training run used
  config.max_train_examples = 0
  if data_dir:
    config.data_dir = data_dir
  ds = data.from_config(config)
  part = {"test": ds.test, "validation": ds.validation, "train": ds.train}[split]
  if part is None:
    raise ConfigError("This run was trained without a validation split "
                      "(validation_fraction=0); evaluate --split=test or train.")
  mesh = mesh_lib.make_mesh((-1,), ("data",))
  n = mesh.shape["data"]
  # .get: configs saved before tta_shift existed evaluated without it.
  driver = device.DeviceSteps(mesh, n, -(-config.eval_batch_size // n) * n, ds.num_classes,
                              tta_shift=config.get("tta_shift", 0))
  state = driver.put(r.state)
  result = scores.summarize(driver.evaluate(state, *driver.put_eval(part.images,
                                                                         part.labels)))
  result.update(checkpoint_step=r.step, checkpoint=r.which, split=split, dataset=ds.name)
  log(f"{config.model.name} from the {r.which} checkpoint (step {r.step}) of {workdir}, on "
      f"{ds.name}/{split}:")
  log(scores.format_report(result, ds.class_names).replace("test:", f"{split}:", 1))
  with open(os.path.join(workdir, f"eval_{split}_step{r.step}.json"), "w") as f:
    json.dump(result, f, indent=2)
  return result
