"""`--mode=evaluate`: a trained workdir's checkpoint scored on a whole split of its dataset."""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

import jax
import numpy as np

from training import data
from training.console import log
from training.data import folder, sources
from training.errors import ConfigError, DataNotFoundError, unsaved
from training.compute import device, mesh as mesh_lib
from training.tasks.classify import scores, steps
from training.modes import ensemble as ensemble_lib
from training.tasks import base, restore as restore_lib


SPLITS = ("test", "validation", "train")
# The data options as the modes that read a trained run's data (evaluate, report) spell them.
MODE_FLAGS = {"--config.data_dir": "--data_dir", "--config.data_url": "--data_url"}


def load_data(config, data_dir: str | None, data_url: str | None,
              classes: Sequence[str] | None = None) -> data.Dataset:
  """The dataset of a checkpoint's `config`, from `data_dir`/`data_url` when given (for an image
  folder's run, `data_dir` is the folder, e.g. moved since training); a data error names this
  mode's flags, not the training run's --config options. `classes`: the run's class names, which
  an image folder must still have (it may have changed since)."""
  config = config.copy_and_resolve_references()  # the checkpoint's own stays as it was
  if data_dir:
    config.data_dir = data_dir
  if data_url:
    config.data_url = data_url
  is_folder = config.dataset.startswith(folder.PREFIX)
  if is_folder:
    root = _folder_root(config.dataset[len(folder.PREFIX):], data_dir, classes)
    config.dataset = folder.PREFIX + root
  try:
    ds = data.from_config(config)
  except (DataNotFoundError, ConfigError) as e:
    raise sources.with_flags(e, MODE_FLAGS) from e
  if is_folder and classes is not None and list(map(str, ds.class_names)) != list(
      map(str, classes)):
    raise folder.FolderError(_other_classes(root, ds.class_names, classes))
  return ds


def _folder_root(trained: str, data_dir: str | None, classes: Sequence[str] | None) -> str:
  """The image folder to read (`data_dir` if given, else the run's), checked to exist and to
  have the run's class folders before anything is decoded."""
  root = os.path.expanduser(data_dir) if data_dir else trained
  if not os.path.isdir(root):
    raise folder.FolderError(
        f"No image folder {root!r} (given as --data_dir={data_dir}): give the new path of the "
        f"folder this run was trained on ({trained}): --data_dir=NEW_PATH." if data_dir else
        f"No image folder {root!r}, the folder this run was trained on: if it has moved, give "
        "its new path: --data_dir=NEW_PATH.")
  found = folder.class_names(root)
  if classes is not None and any(str(c) not in found for c in classes):
    raise folder.FolderError(_other_classes(root, found, classes))
  return root


def _other_classes(root: str, found: Sequence[str], classes: Sequence[str]) -> str:
  return (f"The image folder {root} has the classes {', '.join(map(str, found))}, but this run "
          f"was trained on {', '.join(map(str, classes))}: point --data_dir=PATH at the folder "
          "the run was trained on (its class folders unchanged).")


def evaluate(workdir: str, which: str = "best", split: str = "test",
             data_dir: str | None = None, data_url: str | None = None,
             member: int | None = None, ensemble: Sequence[str] = ()) -> dict[str, Any]:
  """Full metrics of a checkpoint on `split` (all of it); also written to the workdir. Of a
  population: its ensemble's, with each member's under "members" (or member `member`'s alone).
  With `ensemble` (other workdirs): the ensemble of all their models (modes/ensemble.py), each
  run's own scores under "runs"."""
  if split not in SPLITS:
    raise ConfigError(f"Unknown split {split!r}; choose one of {', '.join(SPLITS)}.")
  runs = ensemble_lib.restore_all(workdir, ensemble, which, member)
  r, config = runs[0], runs[0].config
  capped = config.get("max_eval_examples", 0)  # what the run itself was tested on (and report)
  ds, part = _split_of(config, split, data_dir, data_url, r.dataset_info.get("class_names"))
  if split == "validation" and any(run.population.splits for run in runs):
    log("note: members trained with population_splits each held out their own validation "
        "examples; this split (split_seed's carve) holds examples that some of them trained on.")
  if len(runs) > 1:
    return _evaluate_runs(runs, [workdir, *ensemble], ds, part, split)
  mesh = mesh_lib.make_mesh((-1,), ("data",))
  n = mesh.shape["data"]
  # .get: configs saved before tta_shift existed evaluated without it.
  driver = device.DeviceSteps(mesh, n, -(-config.eval_batch_size // n) * n, ds.num_classes,
                              members=len(r.members), tta_shift=config.get("tta_shift", 0),
                              **steps.device_steps())
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
  _write(workdir, ensemble_lib.result_name(split, runs, [workdir], member), result)
  return result


def _split_of(config, split: str, data_dir: str | None, data_url: str | None,
              classes: Sequence[str] | None) -> tuple[data.Dataset, data.Split]:
  """The dataset of a run's `config` (of its `classes`), every example (whatever the training run
  used), and its `split`."""
  config.max_eval_examples = 0
  config.max_train_examples = 0
  ds = load_data(config, data_dir, data_url, classes)
  part = {"test": ds.test, "validation": ds.validation, "train": ds.train}[split]
  if part is None:
    raise ConfigError("This run was trained without a validation split "
                      "(validation_fraction=0); evaluate --split=test or train.")
  return ds, part


def _write(workdir: str, name: str, result: dict[str, Any]) -> None:
  try:
    with open(os.path.join(workdir, name), "w") as f:
      json.dump(result, f, indent=2)
  except OSError as e:  # a read-only workdir: the metrics above are the result
    log("note: " + unsaved(name, workdir, e))


def _evaluate_runs(runs: list[restore_lib.Restored], workdirs: list[str], ds: data.Dataset,
                   part: data.Split, split: str) -> dict[str, Any]:
  """The ensemble across runs on `part`: every run's probabilities (each its own function, on
  the same batches), their mean over all the models, and the scores of each and of the mean."""
  size = runs[0].config.eval_batch_size
  each = []
  for r in runs:
    apply = jax.jit(lambda s, x, r=r: ensemble_lib.probabilities([r], [s], x))
    each.append(np.concatenate([np.asarray(apply(r.state, part.images[i:i + size]), np.float64)
                                for i in range(0, len(part), size)]))
  mean = np.average(np.stack(each), axis=0, weights=ensemble_lib.weights(runs))
  result = scores.summarize(_totals(mean, part.labels, ds.num_classes))
  result["runs"] = [{"workdir": w, "checkpoint_step": r.step, "models": n,
                     **{k: v for k, v in scores.summarize(_totals(p, part.labels, ds.num_classes)
                                                          ).items() if k in ("accuracy", "loss")}}
                    for w, r, n, p in zip(workdirs, runs, ensemble_lib.weights(runs), each)]
  result.update(checkpoint=runs[0].which, split=split, dataset=ds.name)
  log(f"{ensemble_lib.describe(runs, workdirs)}, {runs[0].which} checkpoints, on "
      f"{ds.name}/{split}:")
  lines = [f"{split}: {e['workdir']} ({e['models']} model{'s' * (e['models'] > 1)}, step "
           f"{e['checkpoint_step']}): loss {e['loss']:.4f}  accuracy {e['accuracy']:.2%}"
           for e in result["runs"]]
  log("\n".join(lines + [scores.format_report(result, ds.class_names).replace(
      "test:", "ensemble:", 1)]))
  _write(workdirs[0], ensemble_lib.result_name(split, runs, workdirs), result)
  return result


def _totals(p: np.ndarray, labels: np.ndarray, num_classes: int) -> dict[str, Any]:
  """The evaluation's sums (as steps' evaluation adds them up) of class probabilities `p`."""
  confusion = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(confusion, (labels, np.argmax(p, -1)), 1)
  picked = np.maximum(p[np.arange(len(labels)), labels], np.finfo(np.float64).tiny)
  return {"loss_sum": float(-np.log(picked).sum()), "count": len(labels), "confusion": confusion}


def _result(r: restore_lib.Restored, totals: dict[str, Any], split: str
            ) -> tuple[dict[str, Any], list[str]]:
  """The scores of one model, or a population's ensemble's with its members' (and their lines)."""
  if not r.members:
    result = scores.summarize(totals)
    if r.member is not None:
      result["member"] = {"member": r.member.index, "seed": r.member.seed, **r.member.values}
    return result, []
  result = scores.summarize(totals["ensemble"])
  each = [scores.summarize(device.take(totals["members"], k)) for k in range(len(r.members))]
  result["members"] = [{"member": m.index, "seed": m.seed, **m.values,
                        **{k: e[k] for k in ("accuracy", "loss", "macro_f1")}}
                       for m, e in zip(r.members, each)]
  result["mean"], result["std"] = base.mean_std([e["accuracy"] for e in each])
  lines = [f"{split}: member {m.index} ({m.label()}): loss {e['loss']:.4f}  accuracy "
           f"{e['accuracy']:.2%}  macro F1 {e['macro_f1']:.4f}" for m, e in zip(r.members, each)]
  lines.append(f"{split}: members {result['mean'] * 100:.2f} +- {result['std'] * 100:.2f}%")
  return result, lines
