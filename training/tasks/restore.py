"""A task's train state restored from a workdir's checkpoint, with the config and dataset
description saved beside it: what every mode (evaluate, predict, report, export, sample), the
GAN's judge and fine-tuning start from. Nothing is initialized or compiled for it: the checkpoint
is read into the state's shapes alone. Also what a checkpoint of other shapes means for a run
(`check_shapes`: another model, or another optimizer), which the store, knowing no model, leaves
to its callers: the modes through `restore`, and a resuming run."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import ml_collections

from training import members, settings
from training.errors import ConfigError
from training.compute import device, optim
from training.store.checkpoint import CheckpointGoneError, CheckpointMismatchError, Checkpointer
from training.store.state_tree import state_shapes
from training.tasks import base


READ_ATTEMPTS = 5  # a training run rotates a checkpoint away at most once per save


@dataclasses.dataclass
class Restored:
  state: Any  # the task's train state (a population's: its members' stacked)
  config: ml_collections.ConfigDict  # the config that trained it
  dataset_info: dict[str, Any]  # image_shape, num_classes, class_names, name
  step: int
  which: str  # "best", "latest" or "step"
  population: members.Population  # of `config`, derived once as the checkpoint is read
  member: members.Member | None = None  # the member taken out of a population, if one was

  @property
  def members(self) -> tuple[members.Member, ...]:
    """The members stacked in `state`: () for a single model (or a member taken out)."""
    return self.population.members

  def describe(self) -> str:
    """What the state is: "the ensemble of 5 members", "member 2 (seed 2) of 5", or ""."""
    if self.members:
      return f"the ensemble of {len(self.members)} members"
    if self.member is not None:
      return f"member {self.member.index} ({self.member.label()})"
    return ""


def abstract_state(config: ml_collections.ConfigDict, population: members.Population,
                   dataset_info: dict[str, Any]) -> Any:
  """The train state that `config`'s task would start from (a population's: its members'
  stacked), as shapes and dtypes on the first local device: a restore target that costs no
  initialization."""
  task = base.get(config, dataset_info["num_classes"], tuple(dataset_info["image_shape"]),
                  population)
  schedule = optim.make_schedule(config, steps_per_epoch=1)
  init_key, train_key, _ = population.keys()
  shapes = jax.eval_shape(lambda: task.initial_state(schedule, init_key, train_key))
  first = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=first), shapes)


def restore(workdir: str, which: str = "best", task: str | None = "classify",
            member: int | None = None) -> Restored:
  """The checkpoint `which` ("best" by validation accuracy, "latest", or a step number) of a
  run of `task` (None: any task; another task's run is refused: its state and uses differ).
  Of a population, its members' states stacked, or member `member` alone. A "best" or "latest"
  checkpoint that a run training in the workdir rotates away while it is read is chosen again."""
  for attempt in range(READ_ATTEMPTS):
    try:
      restored = _restore(workdir, which, task)
      break
    except CheckpointGoneError:
      if which not in ("best", "latest") or attempt == READ_ATTEMPTS - 1:
        raise
  return restored if member is None else take_member(restored, member, workdir)


def _restore(workdir: str, which: str, task: str | None) -> Restored:
  with Checkpointer.reader(workdir) as ckpt:
    step, which = ckpt.choose(which)
    config = settings.from_json(ckpt.read_json(step, "config"))
    found = settings.task_name(config)
    if task is not None and found != task:
      use = "--mode=sample" if found == "gan" else "--mode=evaluate or predict"
      raise ConfigError(f"{workdir} holds a {found} run ({config.model.name}), and a {task} "
                        f"run is needed here; for that run use {use}.")
    info = ckpt.read_json(step, "dataset")
    population = members.Population.of(config)
    target = abstract_state(config, population, info)
    check_shapes(ckpt, target, step)
    state = ckpt.restore(target, step)
  return Restored(state, config, info, step, which, population)


def check_shapes(ckpt: Checkpointer, state: Any, step: int, model: str | None = None) -> None:
  """Refuses checkpoint `step` if its arrays differ from `state`'s, read from its metadata alone:
  the model's parameters that differ, or else the state's other arrays (the optimizer's, the
  moving average's). Where `state` is of `model` and the checkpoint of another model, the
  refusal names both first: the parameters follow from it."""
  have, want = ckpt.shapes(step), state_shapes(state)
  why = ""
  if model is not None and (old := _model_name(ckpt.read_json(step, "config"))) != model:
    why = f"The checkpoint was trained with another model: {old} -> {model} (checkpoint -> now).\n"
  lines = [f"  {k}: checkpoint {have.get(k, 'missing')} vs config {want.get(k, 'missing')}"
           for k in sorted(set(have) | set(want))
           if k.startswith("params/") and have.get(k) != want.get(k)]
  other = sorted(k for k in set(have) | set(want)
                 if not k.startswith("params/") and have.get(k) != want.get(k))
  if other and not lines:
    raise CheckpointMismatchError(
        f"{why}The checkpoint at step {step} in {ckpt.directory} holds a training state of "
        f"another structure than the config's (the optimizer, its settings or ema_decay on/off "
        f"differ); first differences: {', '.join(other[:5])}.\nResume with the config that "
        "wrote the checkpoint (saved beside it), or use another --workdir.")
  if lines:
    raise CheckpointMismatchError(
        f"{why}The checkpoint at step {step} in {ckpt.directory} was written by a model of other "
        f"shapes than the config's; mismatching parameters:\n"
        + "\n".join(lines[:20]) + ("\n  ..." if len(lines) > 20 else "")
        + "\nUse another --workdir for this config, or the config that wrote the checkpoint "
        "(its config is saved beside it).")


def _model_name(saved: dict[str, Any]) -> str | None:
  return saved["model"].get("name") if "model" in saved else None


def take_member(restored: Restored, k: int, workdir: str) -> Restored:
  """Member `k` of a restored population, as one model."""
  size = len(restored.members)
  if not 0 <= k < size:
    raise ConfigError(f"--member={k}: {workdir} holds " + (
        f"a population of {size} members: choose 0 to {size - 1}." if size else
        "a single model, not a population: leave out --member."))
  return dataclasses.replace(restored, state=device.take(restored.state, k),
                             population=restored.population.alone(k), member=restored.members[k])
