"""Whether a run may go on from its workdir's checkpoint: the policy over what the store holds.

The store (training/store/checkpoint.py) reads and writes checkpoints and refuses a state of
other shapes; what such shapes mean (another model, another optimizer) the tasks' restore says
(`check_shapes`). Which settings may change between a checkpoint and the config that resumes it
is decided here, by the layer that trains. `take` is the one call a run's set-up makes: the
refusals read before the run takes the workdir's lock (`refuse_early`: a refused run writes
nothing), the lock, and the checkpoint restored under it (`resume`, which reads the refusals
again).
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import ml_collections
from flax import traverse_util

from training.console import log
from training.errors import ConfigError
from training.store.checkpoint import CheckpointMismatchError, Checkpointer
from training.store.lock import WorkdirLock
from training.tasks.restore import check_shapes

# Config fields that may differ when a run resumes: where things are and how often they are
# logged or saved, the devices, and the length of the run (a longer or shorter schedule). Any
# other change would continue one run with another's settings, or hand back a finished run's
# result for a config that never trained (a seed sweep into the default workdir).
RESUMABLE_CHANGES = ("num_epochs", "stop_after_steps", "data_dir", "data_url", "cache_dir",
                     "compilation_cache_dir", "eval_batch_size", "max_eval_examples", "mesh_shape",
                     "mesh_axes", "steps_per_call", "log_every_steps", "progress_bar",
                     "test_every_epoch", "report", "population_mode", "profile_steps",
                     "tta_shift")  # and checkpoint.*


class ConfigChangedError(CheckpointMismatchError):
  """The workdir's checkpoint was trained with other settings than the config's."""


def take(workdir: str, state: Any, config: ml_collections.ConfigDict, steps_per_epoch: int,
         dataset_info: dict[str, Any], primary: bool, origin: dict[str, Any] | None = None
         ) -> tuple[WorkdirLock, Checkpointer | None, Any, dict[str, str] | None]:
  """The workdir taken for a run: (its lock, its Checkpointer (saving `origin` with each
  checkpoint) or None without checkpoints, the state to train on, the config's changes as
  `resume` gives them). A refusal raises with the workdir as it was: nothing taken, nothing
  written."""
  # Alone only: orbax's readers synchronize the processes of a multi-process run, which could
  # each see the checkpoints directory differently here; `resume` checks the same together.
  if config.checkpoint.enabled and jax.process_count() == 1:
    refuse_early(workdir, state, config, steps_per_epoch, primary)
  lock = WorkdirLock(workdir, enabled=primary).__enter__()  # before anything there is read
  ckpt = None
  try:
    if lock.note:
      log(lock.note)
    if not config.checkpoint.enabled:
      return lock, None, state, None
    ckpt = Checkpointer(workdir, config, dataset_info, origin=origin)
    return lock, ckpt, *resume(ckpt, state, config, steps_per_epoch, workdir)
  except BaseException:
    try:
      if ckpt:
        ckpt.close()
    finally:
      lock.release()
    raise


def resume(ckpt: Checkpointer, state: Any, config: ml_collections.ConfigDict,
           steps_per_epoch: int, workdir: str) -> tuple[Any, dict[str, str] | None]:
  """Restores the latest checkpoint to train on: (state, {field: "field: saved -> now"} for
  each config field that differs from the checkpoint's), or (state, None) where there is none
  yet (a fresh run). Refuses changes of settings and a checkpoint past the config's end."""
  step = ckpt.latest_step()
  if step is None:
    return state, None
  changes = check(ckpt, state, config, steps_per_epoch, workdir)
  return ckpt.restore(state, step), changes


def recorded_origin(workdir: str | None, config: ml_collections.ConfigDict
                    ) -> dict[str, Any] | None:
  """The `origin` saved with the workdir's latest checkpoint (where a fine-tuning run's first
  weights came from), read before the run takes the lock: a resumed run then needs no other
  run. None for a fresh run, a checkpoint without one (an earlier version), and a run of several
  processes, which reads its source again (the early read is for one process, as `take`'s)."""
  if (workdir is None or not config.get("init_from") or not config.checkpoint.enabled
      or jax.process_count() > 1 or not os.path.isdir(os.path.join(workdir, "checkpoints"))):
    return None
  with Checkpointer.reader(workdir) as ckpt:
    step = ckpt.latest_step()
    return (ckpt.read_item(step, "origin") or None) if step is not None else None


def refuse_early(workdir: str, state: Any, config: ml_collections.ConfigDict,
                 steps_per_epoch: int, primary: bool) -> None:
  """The refusals of `resume` (another model, other settings, past this config's end), read
  before the run takes the workdir's lock: a refused run writes nothing there, not even that."""
  WorkdirLock(workdir, enabled=primary).check_free()  # "in use" comes before any other
  if not os.path.isdir(os.path.join(workdir, "checkpoints")):
    return
  with Checkpointer.reader(workdir) as ckpt:
    if ckpt.latest_step() is not None:
      check(ckpt, state, config, steps_per_epoch, workdir)


def check(ckpt: Checkpointer, state: Any, config: ml_collections.ConfigDict,
          steps_per_epoch: int, workdir: str) -> dict[str, str]:
  """The refusals of `resume`, read from the latest checkpoint's metadata and config alone (a
  reader can check them before the run takes the workdir); its changes, if none refuses."""
  step = ckpt.latest_step()
  _check_within_the_run(step, config.num_epochs, steps_per_epoch, ckpt.directory, workdir)
  saved = traverse_util.flatten_dict(ckpt.read_json(step, "config"), sep=".")
  # Through JSON, so that tuples compare as the saved lists.
  now = traverse_util.flatten_dict(json.loads(json.dumps(config.to_dict())), sep=".")
  for side in (saved, now):
    side.pop("checkpoint.allow_config_changes", None)
  changes = {k: f"{k}: {saved.get(k, '(absent)')!r} -> {now.get(k, '(absent)')!r}"
             for k in sorted(saved.keys() | now.keys()) if saved.get(k) != now.get(k)}
  # A field that only one side has was added or removed by a newer version of this code.
  refused = [line for k, line in changes.items() if k in saved and k in now
             and k not in RESUMABLE_CHANGES and not k.startswith("checkpoint.")]
  try:
    check_shapes(ckpt, state, step, config.model.name)
  except CheckpointMismatchError as e:  # other arrays, from settings (freeze: the optimizer's)
    if not refused:
      raise
    raise CheckpointMismatchError(f"{e}\nThe settings that changed (checkpoint -> now):\n  "
                                  + "\n  ".join(refused)) from e
  if refused and not config.checkpoint.get("allow_config_changes", False):
    raise ConfigChangedError(
        f"The checkpoint at step {step} in {ckpt.directory} was trained with other settings; "
        "changed (checkpoint -> now):\n  " + "\n  ".join(refused) + "\n"
        "Resuming would continue that run with these settings. Start a new run with another "
        "--workdir, or run again with the checkpoint's values, or pass "
        "--config.checkpoint.allow_config_changes=True to continue it with the new ones.")
  return changes


def _check_within_the_run(step: int, num_epochs: int, steps_per_epoch: int, directory: str,
                          workdir: str) -> None:
  """A checkpoint past the config's last step would be reported as a model it is not."""
  if step > num_epochs * steps_per_epoch:
    raise ConfigError(
        f"The checkpoint in {directory} is at step {step}, past the {num_epochs} epochs "
        f"({num_epochs * steps_per_epoch} steps) of this config. Raise --config.num_epochs to at "
        f"least {-(-step // steps_per_epoch)}, evaluate it with `python train.py --mode=evaluate "
        f"--workdir={workdir}`, or use another --workdir.")
