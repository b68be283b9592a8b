"""`--mode=evaluate`: a trained workdir's checkpoint scored on a whole split of its dataset."""

from __future__ import annotations

import json
import os
from typing import Any

from training import data
from training.console import log
from training.data import sources
from training.errors import ConfigError, DataNotFoundError, unsaved
from training.model import device, mesh as mesh_lib, scores
from training.tasks import restore as restore_lib


SPLITS = ("test", "validation", "train")
# The data options as the modes that read a trained run's data (evaluate, report) spell them.
MODE_FLAGS = {"--config.data_dir": "--data_dir", "--config.data_url": "--data_url"}


def load_data(config, data_dir: str | None, data_url: str | None) -> data.Dataset:
  """The dataset of a checkpoint's `config`, from `data_dir`/`data_url` when given; a data error
  names this mode's flags, not the training run's --config options."""
  config = config.copy_and_resolve_references()  # the checkpoint's own stays as it was
  if data_dir:
    config.data_dir = data_dir
  if data_url:
    config.data_url = data_url
  try:
    return data.from_config(config)
  except (DataNotFoundError, ConfigError) as e:
    raise sources.with_flags(e, MODE_FLAGS) from e


def evaluate(workdir: str, which: str = "best", split: str = "test",
             data_dir: str | None = None, data_url: str | None = None) -> dict[str, Any]:
  """Full metrics of a checkpoint on `split` (all of it); also written to the workdir."""
  if split not in SPLITS:
    raise ConfigError(f"Unknown split {split!r}; choose one of {', '.join(SPLITS)}.")
  r = restore_lib.restore(workdir, which)
  config = r.config
  config.max_eval_examples = 0  # every example of the split, whatever the training run used
  config.max_train_examples = 0
  ds = load_data(config, data_dir, data_url)
  part = {"test": ds.test, "validation": ds.validation, "train": ds.train}[split]
  if part is None:
    raise ConfigError("This run was trained without a validation split "
                      "(validation_fraction=0); evaluate --split=test or train.")
  mesh = mesh_lib.make_mesh((-1,), ("data",))
  n = mesh.shape["data"]
  driver = device.DeviceSteps(mesh, n, -(-config.eval_batch_size // n) * n, ds.num_classes)
  state = driver.put(r.state)
  result = scores.summarize(driver.evaluate(state, *driver.put_eval(part.images,
                                                                         part.labels)))
  result.update(checkpoint_step=r.step, checkpoint=r.which, split=split, dataset=ds.name)
  log(f"{config.model.name} from the {r.which} checkpoint (step {r.step}) of {workdir}, on "
      f"{ds.name}/{split}:")
  log(scores.format_report(result, ds.class_names).replace("test:", f"{split}:", 1))
  name = f"eval_{split}_step{r.step}.json"
  try:
    with open(os.path.join(workdir, name), "w") as f:
      json.dump(result, f, indent=2)
  except OSError as e:  # a read-only workdir: the metrics above are the result
    log("note: " + unsaved(name, workdir, e))
  return result
