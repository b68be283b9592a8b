"""The training loop: `train_and_evaluate(config, workdir)` returns the final state and metrics.

A run is set up once (`_setup`: data, model, state, a resumed checkpoint, the writers), then
trained epoch by epoch (`_train_epoch`), each epoch a series of jitted calls whose metrics are
fetched at log steps only (`_Progress.flush`), and finally evaluated on the test split (`_finish`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from tqdm.auto import tqdm

from training import (builders, checkpoint, data, distributed, errors, finetune,
                      metrics as metrics_lib, optim, steps, tasks)
from training.builders import log, param_count
from training.errors import ConfigError, NonFiniteLossError, Preempted
from training.signals import StopOnSignal
from training.workdir_lock import WorkdirLock


@dataclasses.dataclass
class _Run:
  """What a run's epochs share, fixed at set-up."""
  config: ml_collections.ConfigDict
  workdir: str | None
  ds: data.Dataset
  task: tasks.Task
  driver: steps.DeviceSteps
  learning_rates: np.ndarray  # the schedule's value at each step, computed once
  steps_per_epoch: int
  shuffle_key: jax.Array
  ckpt: checkpoint.Checkpointer | None = None
  lock: WorkdirLock | None = None  # held for the whole run: one writing run per workdir
  writer: metrics_lib.MetricWriter | None = None
  arrays: dict[str, Any] = dataclasses.field(default_factory=dict)  # device-resident splits
  start_step: int = 0
  stop_at: int = 0  # the global step where stop_after_steps stops this process (0: none)
  t_train: float = 0.0

  @property
  def total_steps(self) -> int:
    return self.config.num_epochs * self.steps_per_epoch

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


def _check_finite(metrics: dict[str, np.ndarray], first_step: int,
                  ckpt: checkpoint.Checkpointer | None = None) -> None:
  """Stops on a NaN or infinite train metric, a loss or a gradient norm (an overflowing norm is
  divergence too), naming the first step where one went."""
  bad = []
  for name in sorted(metrics, key=lambda k: ("loss" not in k, k)):  # a loss is named first
    values = metrics[name]
    where = np.flatnonzero(~np.isfinite(values))
    if where.size:
      what = {"grad_norm": "gradient norm"}.get(name, name.replace("_", " "))
      bad.append((int(where[0]), what, values[where[0]]))
  if bad:
    index, what, value = min(bad, key=lambda b: b[0])
    resume = (" To continue this run's last checkpoint with such changes, add "
              "--config.checkpoint.allow_config_changes=True."
              if ckpt is not None and ckpt.latest_step() is not None else "")
    raise NonFiniteLossError(
        f"The training {what} became {value} at step {first_step + index}. Training stopped "
        "there, and no checkpoint from that step on was saved. Try a lower "
        "--config.learning_rate, gradient clipping (--config.grad_clip_norm=1.0), or "
        f"--config.dtype=float32 if you use bfloat16.{resume}")


def _write_file(workdir: str, name: str, text: str) -> None:
  try:
    with open(os.path.join(workdir, name), "w") as f:
      f.write(text)
  except OSError as e:  # a full disk: one clear line, as for checkpoints and metrics
    raise errors.workdir_write_error(name, workdir, e) from e


def _learning_rates(schedule, total_steps: int) -> np.ndarray:
  """The schedule at every step, in one call: the loop then logs it without device work."""
  return np.asarray(jax.jit(jax.vmap(schedule))(np.arange(max(total_steps, 1))))


def _build(config: ml_collections.ConfigDict, ds: data.Dataset
           ) -> tuple[steps.TrainState, _Run]:
  """The model, optimizer, device driver and initial state of `config` on `ds` (with
  `init_from`'s weights, if set: a resumed run then restores its own checkpoint over them)."""
  task = tasks.get(config, ds.num_classes, ds.image_shape)
  steps_per_epoch = len(ds.train) // config.batch_size
  if steps_per_epoch == 0:
    raise ConfigError(f"batch_size={config.batch_size} exceeds the {len(ds.train)} training "
                      "examples; lower --config.batch_size.")
  schedule = optim.make_schedule(config, steps_per_epoch)
  # Auto axes: XLA propagates the batch sharding; parameters stay replicated.
  mesh = distributed.make_mesh(config.mesh_shape, config.mesh_axes)
  driver = steps.DeviceSteps(mesh, config.batch_size, config.eval_batch_size, ds.num_classes,
                             chunk=builders.steps_per_call(config),
                             steps_per_epoch=steps_per_epoch, step=task.train_step)
  init_key, train_key, shuffle_key = jax.random.split(jax.random.PRNGKey(config.seed), 3)
  try:
    state = task.init_state(schedule, init_key, train_key)
  except (ValueError, TypeError, ZeroDivisionError) as e:
    raise ConfigError(builders.model_error(config, ds.image_shape, e)) from e
  state = finetune.initialize(config, state, ds.info(), schedule)
  run = _Run(config, None, ds, task, driver, _learning_rates(schedule, config.num_epochs
                                                       * steps_per_epoch),
             steps_per_epoch, shuffle_key)
  return driver.put(state), run


def _resume(run: _Run, state: steps.TrainState, workdir: str
            ) -> tuple[steps.TrainState, dict[str, str] | None]:
  """Opens the workdir's checkpoints and restores the latest: (state, the config's changes since
  it, or None for a fresh run). Refusals leave the workdir as it was."""
  config = run.config
  run.ckpt = checkpoint.Checkpointer(workdir, config, run.ds.info())
  if run.ckpt.latest_step() is None:
    return state, None
  state, changes = run.ckpt.resume(state)
  if int(state.step) > run.total_steps:
    raise ConfigError(
        f"The checkpoint in {run.ckpt.directory} is at step {int(state.step)}, past the "
        f"{config.num_epochs} epochs ({run.total_steps} steps) of this config. Raise "
        f"--config.num_epochs to at least {-(-int(state.step) // run.steps_per_epoch)}, "
        f"evaluate it with `python train.py --mode=evaluate --workdir={workdir}`, or use "
        "another --workdir.")
  return state, changes


def _open_outputs(run: _Run, state: steps.TrainState, changes: dict[str, str] | None) -> None:
  """The metric writer, config.json, the data on the devices, and the run's opening lines."""
  config, ds, workdir = run.config, run.ds, run.workdir
  # A resumed run drops what its predecessor logged after the checkpoint: it logs it again.
  run.writer = metrics_lib.MetricWriter(workdir, enabled=workdir is not None and run.primary,
                                        resume_step=None if changes is None else run.start_step)
  if workdir is not None and run.primary:
    _write_file(workdir, "config.json", config.to_json_best_effort(indent=2))
    run.writer.write_text("config", str(config))
  run.arrays["train"] = run.driver.put_train(ds.train.images, ds.train.labels)
  if ds.validation:
    run.arrays["validation"] = run.driver.put_eval(ds.validation.images, ds.validation.labels)
  run.arrays["test"] = run.driver.put_eval(ds.test.images, ds.test.labels)
  mesh = run.driver.mesh
  procs = f" in {jax.process_count()} processes" if jax.process_count() > 1 else ""
  log(f"{config.model.name}: {param_count(state.params):,} parameters | {ds.name}: "
      f"{len(ds.train)} train, {len(ds.validation) if ds.validation else 0} validation, "
      f"{len(ds.test)} test | {mesh.size} {jax.devices()[0].platform} device(s){procs}, mesh "
      f"{dict(mesh.shape)} | {config.num_epochs} epoch{'s' * (config.num_epochs != 1)} of "
      f"{run.steps_per_epoch} steps")
  if config.dtype == "bfloat16" and jax.default_backend() == "cpu":
    log("Note: bfloat16 compute is slower than float32 on CPU (see docs/performance.md); it is "
        "meant for GPU/TPU. On CPU use --config.dtype=float32.")
  if changes is not None:
    _log_resume(run, changes)


def _log_resume(run: _Run, changes: dict[str, str]) -> None:
  config, step = run.config, run.start_step
  log(f"Resuming from the checkpoint at step {step} in {run.ckpt.directory}"
      + (f" (config changed: {'; '.join(changes.values())})" if changes else ""))
  if "num_epochs" in changes and config.schedule != "constant" and step < run.total_steps:
    log(f"Note: the {config.schedule} learning-rate schedule now spans {config.num_epochs} "
        f"epochs, so the rate at step {step} is {run.learning_rates[step]:.3g}.")
  if step == run.total_steps:
    log(f"This run is complete ({config.num_epochs} epochs): evaluating only. Raise "
        "--config.num_epochs to train on, or pass another --workdir for a new run.")


def _setup(config: ml_collections.ConfigDict, workdir: str | None
           ) -> tuple[steps.TrainState, _Run, dict[str, str] | None]:
  """Everything a run needs before its first step; nothing is written to the workdir until the
  config, the data and any checkpoint there were accepted."""
  builders.validate(config)
  if config.stop_after_steps and (workdir is None or not config.checkpoint.enabled):
    raise ConfigError("stop_after_steps needs checkpoints: set --workdir and keep "
                      "--config.checkpoint.enabled=True.")
  if workdir is not None:
    builders.check_workdir(workdir)
  state, run = _build(config, builders.load_data(config))
  run.task.start(run)  # e.g. loads what evaluation needs: its errors come before any write
  changes = None
  try:
    if workdir is not None:  # taken before anything in the workdir is read or written
      run.lock = WorkdirLock(workdir, enabled=run.primary).__enter__()
      if run.lock.note:
        log(run.lock.note)
    if workdir is not None and config.checkpoint.enabled:
      state, changes = _resume(run, state, workdir)
    run.workdir, run.start_step = workdir, int(state.step)
    run.stop_at = run.start_step + config.stop_after_steps if config.stop_after_steps else 0
    _open_outputs(run, state, changes)
  except BaseException:
    run.close()
    raise
  return state, run, changes


class _Progress:
  """One epoch between host syncs: the device results not yet fetched, the sums behind the
  epoch's means, and the progress bar."""

  def __init__(self, run: _Run, epoch: int, first: int):
    self.run = run
    self.pending: list[tuple[steps.Metrics, int]] = []  # (a call's metrics, its real steps)
    self.count = 0  # steps trained in this process
    # (steps, means) of each log record of the epoch, those before a resume read back from
    # metrics.jsonl: the epoch's means come out as an uninterrupted run's, to the bit.
    self.logged = _logged_before(run, epoch, first) if first else []
    self.bar = tqdm(total=run.steps_per_epoch, initial=first,
                    desc=f"epoch {epoch}/{run.config.num_epochs}", unit="step", leave=False,
                    disable=not (run.config.progress_bar and run.primary), mininterval=0.5)

  def flush(self, step: int) -> None:
    """The only host sync of the loop: fetches the metrics of the calls since the last one,
    checks them, and logs their means at `step`."""
    fetched = jax.device_get([m for m, _ in self.pending])
    stacked = {k: np.concatenate([np.atleast_1d(m[k])[:n] for m, (_, n)
                                  in zip(fetched, self.pending)]) for k in fetched[0]}
    n = len(stacked[self.run.task.bar_key])
    _check_finite(stacked, step - n + 1, self.run.ckpt)
    self.count += n
    means = {f"train/{k}": float(v.mean()) for k, v in stacked.items()}
    self.logged.append((n, means))
    means["train/learning_rate"] = float(self.run.learning_rates[step - 1])
    self.run.writer.write(step, means)
    key = self.run.task.bar_key
    self.bar.set_postfix({key: f"{means[f'train/{key}']:.4f}"}, refresh=False)
    self.bar.update(n)
    self.pending = []

  def close(self) -> None:
    self.bar.close()

  def epoch_means(self) -> dict[str, float]:
    return tasks.epoch_means(self.logged, self.run.task.epoch_keys)


def _logged_before(run: _Run, epoch: int, first: int) -> list[tuple[int, dict[str, float]]]:
  """The log records of `epoch` up to its step `first`, where this run resumed, with the number
  of steps each covers."""
  epoch_start = (epoch - 1) * run.steps_per_epoch
  records = [r for r in metrics_lib.read_records(run.workdir) if "epoch" not in r
             and f"train/{run.task.bar_key}" in r and epoch_start < r["step"] <= epoch_start + first]
  steps_before = [epoch_start] + [r["step"] for r in records[:-1]]
  return [(r["step"] - before, r) for r, before in zip(records, steps_before)]


def _crossed(before: int, after: int, every: int) -> bool:
  """Whether a multiple of `every` lies in (before, after]."""
  return bool(every) and after // every > before // every


def _train_epoch(run: _Run, state: steps.TrainState, epoch: int, i: int, stop: StopOnSignal
                 ) -> tuple[steps.TrainState, dict[str, float] | None]:
  """Trains steps i.. of `epoch`; returns (state, the epoch's metrics), or (state, None) when a
  stop was requested. Logs and saves fall at multiples of their interval counted from the
  epoch's start, so that every epoch is cut into the same calls (see DeviceSteps.train_steps)."""
  config, spe, t_epoch = run.config, run.steps_per_epoch, time.time()
  epoch_start = (epoch - 1) * spe
  save_every = config.checkpoint.every_steps if run.ckpt else 0
  perm = run.driver.permutation(run.shuffle_key, epoch, len(run.ds.train))
  progress = _Progress(run, epoch, i)
  with contextlib.closing(progress):  # also on errors: their message gets a line of its own
    first = i
    while i < spe:
      n = run.driver.call_length(i, spe, run.stop_at - epoch_start if run.stop_at else None)
      state, step_metrics = run.driver.train_steps(state, *run.arrays["train"], perm, i, n)
      progress.pending.append((step_metrics, n))
      i, step = i + n, epoch_start + i + n
      if step == run.stop_at and step < run.total_steps:
        stop.request("stop_after_steps")
      saving = _crossed(i - n, i, save_every) and i < spe
      # Multi-process runs sync only at steps that every process knows in advance (a process
      # that alone stopped to sync would wait forever); a single process stops at once. A
      # checkpoint is written only after its steps' losses were checked.
      if (_crossed(i - n, i, config.log_every_steps) or i == spe or step == run.stop_at or saving
          or (stop.requested and jax.process_count() == 1)):
        progress.flush(step)
        stop.sync(step, run.ckpt)
      if stop.requested:
        return state, None
      if saving:
        run.ckpt.save(state)
  return state, _end_epoch(run, state, epoch, first, progress, t_epoch)


def _end_epoch(run: _Run, state: steps.TrainState, epoch: int, first: int, progress: _Progress,
               t_epoch: float) -> dict[str, float]:
  """Evaluates after an epoch, logs its line and record, and returns its metrics."""
  config, train_time = run.config, time.time() - t_epoch
  m = progress.epoch_means()
  evaluated, line = run.task.end_epoch(run, state, epoch, m)
  m.update(evaluated)
  line = (f"epoch {epoch:>3}/{config.num_epochs}  {run.task.train_line(m)}"
          + (f" (steps {first + 1}-{run.steps_per_epoch}, after the resume)" if first else "")
          + line)
  epoch_time = time.time() - t_epoch
  m.update({"time/epoch_s": epoch_time, "time/train_epoch_s": train_time,
            "time/elapsed_s": time.time() - run.t_train,
            "time/steps_per_s": progress.count / train_time})
  run.writer.write(epoch * run.steps_per_epoch, m, epoch=epoch)
  log(line + f"  |  {epoch_time:.1f}s ({progress.count / train_time:.1f} steps/s)")
  return m


def _train(run: _Run, state: steps.TrainState, history: list[dict[str, Any]]
           ) -> steps.TrainState:
  """The epochs from the start step on; checkpoints after each `every_epochs`-th. Raises
  Preempted after saving when a stop was requested."""
  config, spe = run.config, run.steps_per_epoch
  with StopOnSignal(enabled=run.ckpt is not None) as stop:
    first_epoch = run.start_step // spe + 1
    for epoch in range(first_epoch, config.num_epochs + 1):
      first = run.start_step - (epoch - 1) * spe if epoch == first_epoch else 0
      state, epoch_metrics = _train_epoch(run, state, epoch, first, stop)
      if epoch_metrics is None:
        run.ckpt.save(state)
        run.ckpt.wait()
        raise Preempted(f"Stopped by {stop.signal_name} at step {int(state.step)}; a "
                        f"checkpoint was saved in {run.ckpt.directory}. Re-run the same command "
                        "to resume.")
      history.append(epoch_metrics)
      if run.ckpt and (epoch % config.checkpoint.every_epochs == 0
                       or epoch == config.num_epochs):
        best = epoch_metrics if checkpoint.BEST_METRIC in epoch_metrics else None
        run.ckpt.save(state, best)
  return state


def _finish(run: _Run, state: steps.TrainState, history: list[dict[str, Any]],
            t_start: float) -> dict[str, Any]:
  """The task's final evaluation; writes its report and test_metrics.json; returns the summary."""
  test, report = run.task.finish(run, state)
  log(report)
  summary = {**(history[-1] if history else {}), "epochs": history, "test": test,
             "time/train_s": time.time() - run.t_train, "time/total_s": time.time() - t_start,
             "num_params": param_count(state.params)}
  if run.workdir is not None and run.primary:
    run.writer.write(run.total_steps, {f"test/{k}": test[k] for k in run.task.final_keys})
    run.writer.write_text("test_report", report)
    _write_file(run.workdir, "test_metrics.json", json.dumps(summary, indent=2))
  return summary


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | None = None
                       ) -> tuple[steps.TrainState, dict[str, Any]]:
  """Trains `config` and evaluates it on the test split.

  Writes `config.json`, `metrics.jsonl`, TensorBoard events and `test_metrics.json` to `workdir`
  (nothing when it is None). Returns the final state and a dict with the last epoch's
  train/validation metrics, the test metrics and timings.
  """
  t_start = time.time()
  state, run, changes = _setup(config, workdir)
  try:
    # A resumed run's summary keeps the epochs trained before the resume.
    history = (metrics_lib.read_epochs(workdir, run.start_step)
               if changes is not None and run.primary else [])
    run.t_train = time.time()
    state = _train(run, state, history)
    summary = _finish(run, state, history, t_start)
    if config.report and run.ckpt is not None and run.primary and jax.process_count() == 1:
      run.ckpt.wait()  # the report reads the last checkpoint
      run.task.write_report(workdir, run.ds)
  finally:
    run.close()
  log(f"done in {summary['time/total_s']:.1f}s: {run.task.headline(summary['test'])}")
  return state, summary
