"""A run's set-up, in one pass from top to bottom: the config and workdir checked, the data, the
task, the plan of steps and devices, the initial state (with `init_from`'s weights), the workdir
lock, a resumed checkpoint, and the outputs. `setup` reads in that order; each step is one call.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from training import data, tasks
from training.console import log
from training.data import Dataset
from training.errors import ConfigError, workdir_write_error
from training.compute import device, optim
from training.compute import mesh as mesh_lib
from training.compute.build import model_error, param_count
from training.modes.train import checks, resume
from training.modes.train.profile import Profiler
from training.members import Member, Population
from training.store.checkpoint import Checkpointer, step_of
from training.store.lock import WorkdirLock
from training.store.records import MetricWriter


@dataclasses.dataclass
class Run:
  """What a run's epochs share, fixed at set-up."""
  config: ml_collections.ConfigDict
  workdir: str | None
  ds: Dataset
  task: tasks.Task
  driver: device.DeviceSteps
  schedule: Callable[[Any], Any]  # the learning rate at a step (optax)
  learning_rates: np.ndarray  # the schedule's value at each step, computed once
  steps_per_epoch: int
  population: Population  # derived once from the config, as the task's
  origin: dict[str, Any] | None = None  # where the first weights came from (init_from), if not
  # from this run's own initialization: saved with each checkpoint, so a resume reads no other run
  shuffle_key: jax.Array | None = None  # each epoch's order is drawn from it (each member's)
  # population_splits: the pool both are drawn from, and each member's (train, validation)
  # positions in it, (members, n) arrays (data.dataset.member_carves); None: the shared splits.
  carves: tuple[data.Split, np.ndarray, np.ndarray] | None = None
  profiler: Profiler = dataclasses.field(default_factory=lambda: Profiler(0, None))
  ckpt: Checkpointer | None = None
  lock: WorkdirLock | None = None  # held for the whole run: one writing run per workdir
  writer: MetricWriter | None = None
  arrays: dict[str, Any] = dataclasses.field(default_factory=dict)  # device-resident splits
  num_params: int = 0  # a model's parameters (each member's), counted once
  start_step: int = 0
  stop_at: int = 0  # the global step where stop_after_steps stops this process (0: none)
  t_train: float = 0.0

  @property
  def members(self) -> tuple[Member, ...]:
    """A population's members; () for a single model."""
    return self.population.members

  @property
  def total_steps(self) -> int:
    return self.config.num_epochs * self.steps_per_epoch

  def lr_scales(self) -> np.ndarray:
    """Each member's learning rate as a multiple of the config's (a sweep may vary it)."""
    lr = self.config.learning_rate
    return np.asarray([m.values.get("learning_rate", lr) / lr for m in self.members])

  def epoch_order(self, epoch: int) -> jax.Array:
    """The order of the training arrays' examples in `epoch` (each member's, for a population):
    a permutation drawn from the shuffle key, within each member's own subset where it has one."""
    if self.carves is None:
      return self.driver.permutation(self.shuffle_key, epoch, len(self.ds.train))
    subsets = self.arrays["subsets"]
    perm = self.driver.permutation(self.shuffle_key, epoch, subsets.shape[1])
    return self.driver.within(subsets, perm)

  @property
  def primary(self) -> bool:  # every process computes the same metrics; process 0 writes them
    return jax.process_index() == 0

  def close(self) -> None:
    try:
      try:
        if self.writer:
          self.writer.close()
      finally:
        if self.ckpt:
          self.ckpt.wait()  # a save in flight completes even when training stops with an error
          self.ckpt.close()
    finally:
      if self.lock:
        self.lock.release()


def setup(config: ml_collections.ConfigDict, workdir: str | None
          ) -> tuple[Any, Run, dict[str, str] | None]:
  """Everything a run needs before its first step: (the state on the devices, the Run, the
  config's changes since the checkpoint it resumes, or None for a fresh run). Nothing is written
  to the workdir until the config, the data and any checkpoint there were accepted."""
  # A resumed fine-tuning run's record of its source: the source need not be there any more.
  origin = resume.recorded_origin(workdir, config)
  population = checks.validate(config, origin)
  if config.stop_after_steps and (workdir is None or not config.checkpoint.enabled):
    raise ConfigError("stop_after_steps needs checkpoints: set --workdir and keep "
                      "--config.checkpoint.enabled=True.")
  if workdir is not None:
    checks.check_workdir(workdir)
  ds = data.from_config(config)
  task = tasks.get(config, ds.num_classes, ds.image_shape, population)
  run = _plan(config, ds, task)
  state = _initial_state(run, origin)
  changes = None
  try:
    if workdir is not None:
      run.lock, run.ckpt, state, changes = resume.take(workdir, state, config,
                                                       run.steps_per_epoch, ds.info(),
                                                       run.primary, run.origin)
    run.workdir, run.start_step = workdir, step_of(state)
    run.stop_at = run.start_step + config.stop_after_steps if config.stop_after_steps else 0
    _open_outputs(run, state, changes)
  except BaseException:
    run.close()
    raise
  return state, run, changes


def _plan(config: ml_collections.ConfigDict, ds: Dataset, task: tasks.Task) -> Run:
  """What the task's evaluation needs, the run's steps, learning rates, mesh and device steps."""
  task.start(ds)  # e.g. the GAN's judge: its errors come before any write
  steps, population = task.device_steps(), task.population
  carves = (data.member_carves(ds, config.validation_fraction,
                               [m.seed for m in population.members])
            if population.splits else None)
  n_train = carves[1].shape[1] if carves else len(ds.train)
  steps_per_epoch = n_train // config.batch_size
  if steps_per_epoch == 0:
    raise ConfigError(f"batch_size={config.batch_size} exceeds the {n_train} training "
                      "examples; lower --config.batch_size.")
  schedule = optim.make_schedule(config, steps_per_epoch)
  # Auto axes: XLA propagates the batch sharding; parameters stay replicated (or, for a
  # population, split by member over a "members" axis).
  mesh = mesh_lib.make_mesh(config.mesh_shape, config.mesh_axes)
  key = jax.random.PRNGKey(0)
  mode = (device.choose_member_map(population.mode, mesh,
                                   lambda: task.init_state(schedule, key, key))
          if population.members else "vmap")
  driver = device.DeviceSteps(mesh, config.batch_size, config.eval_batch_size, ds.num_classes,
                              chunk=device.steps_per_call(config),
                              steps_per_epoch=steps_per_epoch, **steps,
                              members=len(population.members), mode=mode,
                              tta_shift=config.get("tta_shift", 0))
  return Run(config, None, ds, task, driver, schedule,
             _learning_rates(schedule, config.num_epochs * steps_per_epoch), steps_per_epoch,
             population, carves=carves)


def _initial_state(run: Run, origin: dict[str, Any] | None) -> Any:
  """The task's freshly initialized state (with `init_from`'s weights, if set, or where `origin`,
  the record of a run being resumed, says they came from: that run then restores its own
  checkpoint over them), on the devices."""
  config = run.config
  init_key, train_key, run.shuffle_key = run.population.keys()
  try:
    state = run.task.initial_state(run.schedule, init_key, train_key)
  except (ValueError, TypeError, ZeroDivisionError) as e:
    raise ConfigError(model_error(config, run.ds.image_shape, e)) from e
  state, run.origin = run.task.finetune(state, run.ds.info(), run.schedule, origin)
  return run.driver.put_state(state)


def write_file(workdir: str, name: str, text: str) -> None:
  try:
    with open(os.path.join(workdir, name), "w") as f:
      f.write(text)
  except OSError as e:  # a full disk: one clear line, as for checkpoints and metrics
    raise workdir_write_error(name, workdir, e) from e


def _learning_rates(schedule, total_steps: int) -> np.ndarray:
  """The schedule at every step, in one call: the loop then logs it without device work."""
  return np.asarray(jax.jit(jax.vmap(schedule))(np.arange(max(total_steps, 1))))


def _open_outputs(run: Run, state: Any, changes: dict[str, str] | None) -> None:
  """The profiler, config.json, the data on the devices, the metric writer, and the run's
  opening lines."""
  config, ds, workdir = run.config, run.ds, run.workdir
  run.profiler = Profiler(config.get("profile_steps", 0), workdir if run.primary else None)
  if workdir is not None and run.primary:
    if changes is None:
      _keep_aside(workdir)
    write_file(workdir, "config.json", config.to_json_best_effort(indent=2))
  resumed = [] if changes is None else _resume_lines(run, changes)
  _put_data(run)
  mesh, size = run.driver.mesh, len(run.members)
  procs = f" in {jax.process_count()} processes" if jax.process_count() > 1 else ""
  run.num_params = param_count(state.params) // max(size, 1)
  weights = (f"{run.num_params:,} parameters x {size} members ({run.driver.mode} over members)"
             if size else f"{run.num_params:,} parameters")
  n_train, n_val = ((run.carves[1].shape[1], f"{run.carves[2].shape[1]} validation (each "
                      "member its own split)") if run.carves else
                     (len(ds.train), f"{len(ds.validation) if ds.validation else 0} validation"))
  # A resumed run drops what its predecessor logged after the checkpoint: it logs it again.
  run.writer = MetricWriter(workdir, enabled=workdir is not None and run.primary,
                            resume_step=None if changes is None else run.start_step,
                            members=size)
  if workdir is not None and run.primary:
    run.writer.write_text("config", str(config))
  log(f"{config.model.name}: {weights} | {ds.name}: {n_train} train, {n_val}, "
      f"{len(ds.test)} test | {mesh.size} {jax.devices()[0].platform} device(s){procs}, mesh "
      f"{dict(mesh.shape)} | {config.num_epochs} epoch{'s' * (config.num_epochs != 1)} of "
      f"{run.steps_per_epoch} steps")
  if config.dtype == "bfloat16" and jax.default_backend() == "cpu":
    log("Note: bfloat16 compute is slower than float32 on CPU (see docs/performance.md); it is "
        "meant for GPU/TPU. On CPU use --config.dtype=float32.")
  for line in resumed:
    log(line)


def _put_data(run: Run) -> None:
  """The splits on the devices; with population_splits, the pool once, each member's training
  positions in it and each member's own validation examples."""
  ds, driver = run.ds, run.driver
  if run.carves is None:
    run.arrays["train"] = driver.put_train(ds.train.images, ds.train.labels)
    if ds.validation:
      run.arrays["validation"] = driver.put_eval(ds.validation.images, ds.validation.labels)
  else:
    pool, train, validation = run.carves
    run.arrays["train"] = driver.put_train(pool.images, pool.labels)
    run.arrays["subsets"] = driver.put_state(train.astype(np.int32))
    if validation.shape[1]:
      run.arrays["own_validation"] = driver.put_own_eval(pool.images[validation],
                                                         pool.labels[validation])
  run.arrays["test"] = driver.put_eval(ds.test.images, ds.test.labels)


def _keep_aside(workdir: str) -> None:
  """A fresh run in a workdir that holds an earlier run's records (one killed before its first
  checkpoint, or trained without checkpoints) starts records of its own: the earlier ones are
  renamed metrics.jsonl.N and tensorboard.N, with the first free N, never deleted."""
  old = [name for name in ("metrics.jsonl", "tensorboard")
         if os.path.exists(os.path.join(workdir, name))]
  if not old:
    return
  n = 1
  while any(os.path.exists(os.path.join(workdir, f"{name}.{n}")) for name in old):
    n += 1
  try:
    for name in old:
      os.replace(os.path.join(workdir, name), os.path.join(workdir, f"{name}.{n}"))
  except OSError as e:
    raise workdir_write_error(f"{old[0]}.{n}", workdir, e) from e
  log(f"Note: {workdir} held the records of an earlier run that left no checkpoint to resume; "
      f"they were kept as {' and '.join(f'{name}.{n}' for name in old)}, and this run starts "
      "its own.")


def _resume_lines(run: Run, changes: dict[str, str]) -> list[str]:
  """What a resumed run says of its checkpoint, its changed settings and its schedule."""
  config, step = run.config, run.start_step
  lines = [f"Resuming from the checkpoint at step {step} in {run.ckpt.directory}"
           + (f" (config changed: {'; '.join(changes.values())})" if changes else "")]
  if "num_epochs" in changes and config.schedule != "constant" and step < run.total_steps:
    lines.append(f"note: the {config.schedule} learning-rate schedule now spans "
                 f"{config.num_epochs} epochs, so the rate at step {step} is "
                 f"{run.learning_rates[step]:.3g}.")
  if step == run.total_steps:
    lines.append(f"This run is complete ({config.num_epochs} "
                 f"epoch{'s' * (config.num_epochs != 1)}): evaluating only. Raise "
                 "--config.num_epochs to train on, or pass another --workdir for a new run.")
  return lines
