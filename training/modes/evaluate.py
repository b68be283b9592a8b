"""`--mode=evaluate`: a trained workdir's checkpoint scored on a whole split of its dataset."""

from __future__ import annotations

import json
import os
from typing import Any

from training import data, members
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
             data_dir: str | None = None, data_url: str | None = None,
             member: int | None = None) -> dict[str, Any]:
  """Full metrics of a checkpoint on `split` (all of it); also written to the workdir. Of a
  population: its ensemble's, with each member's under "members" (or member `member`'s alone)."""
  if split not in SPLITS:
    raise ConfigError(f"Unknown split {split!r}; choose one of {', '.join(SPLITS)}.")
  r = restore_lib.restore(workdir, which, member=member)
  config = r.config
  capped = config.get("max_eval_examples", 0)  # what the run itself was tested on (and report)
  config.max_eval_examples = 0  # every example of the split, whatever the training run used
  config.max_train_examples = 0
  ds = load_data(config, data_dir, data_url)
  part = {"test": ds.test, "validation": ds.validation, "train": ds.train}[split]
  if part is None:
    raise ConfigError("This run was trained without a validation split "
                      "(validation_fraction=0); evaluate --split=test or train.")
  mesh = mesh_lib.make_mesh((-1,), ("data",))
  n = mesh.shape["data"]
  # .get: configs saved before tta_shift existed evaluated without it.
  driver = device.DeviceSteps(mesh, n, -(-config.eval_batch_size // n) * n, ds.num_classes,
                              members=len(r.members), tta_shift=config.get("tta_shift", 0))
  totals = driver.evaluate(driver.put_state(r.state), *driver.put_eval(part.images, part.labels))
  result, lines = _result(r, totals, split)
  result.update(checkpoint_step=r.step, checkpoint=r.which, split=split, dataset=ds.name)
  whose = f" ({r.describe()})" if r.describe() else ""
  log(f"{config.model.name} from the {r.which} checkpoint (step {r.step}) of {workdir}{whose}, "
      f"on {ds.name}/{split}, all {len(part):,} examples"
      + (f" (the run and its report use the first {capped:,}: max_eval_examples):" if capped
         and split != "train" else ":"))
  log("\n".join(lines + [scores.format_report(result, ds.class_names).replace(
      "test:", "ensemble:" if r.members else f"{split}:", 1)]))
  name = f"eval_{split}_step{r.step}{'' if member is None else f'_member{member}'}.json"
  try:
    with open(os.path.join(workdir, name), "w") as f:
      json.dump(result, f, indent=2)
  except OSError as e:  # a read-only workdir: the metrics above are the result
    log("note: " + unsaved(name, workdir, e))
  return result


def _result(r: restore_lib.Restored, totals: dict[str, Any], split: str
            ) -> tuple[dict[str, Any], list[str]]:
  """The scores of one model, or a population's ensemble's with its members' (and their lines)."""
  if not r.members:
    result = scores.summarize(totals)
    if r.member is not None:
      result["member"] = {"member": r.member.index, "seed": r.member.seed, **r.member.values}
    return result, []
  result = scores.summarize(totals["ensemble"])
  each = [scores.summarize(members.take(totals["members"], k)) for k in range(len(r.members))]
  result["members"] = [{"member": m.index, "seed": m.seed, **m.values,
                        **{k: e[k] for k in ("accuracy", "loss", "macro_f1")}}
                       for m, e in zip(r.members, each)]
  result["mean"], result["std"] = members.summary([e["accuracy"] for e in each])
  lines = [f"{split}: member {m.index} ({m.label()}): loss {e['loss']:.4f}  accuracy "
           f"{e['accuracy']:.2%}  macro F1 {e['macro_f1']:.4f}" for m, e in zip(r.members, each)]
  lines.append(f"{split}: members {result['mean'] * 100:.2f} +- {result['std'] * 100:.2f}%")
  return result, lines
