"""The training loop: `train_and_evaluate(config, workdir)` returns the final state and metrics.

A run is set up once (setup.py), then trained epoch by epoch (`_train_epoch`), each epoch a
series of jitted calls whose metrics are fetched at log steps and saves only (`Progress.flush`
in progress.py) and ended by the task's evaluation, whose scores the epoch's record and line
carry (`Progress.end_epoch`). Finally the task evaluates the state on the test split, and
`_finish` writes what it found. The state goes only where it is trained, evaluated or saved.
What follows a run that keeps a report (the report itself, a mode of its own) is its caller's:
training/cli.py chains the two.
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from training.console import log
from training.errors import Preempted
from training.modes.train.progress import Progress
from training.modes.train.setup import Run, setup, write_file
from training.modes.train.signals import StopOnSignal
from training.store import checkpoint
from training.store import records as records_lib


def _crossed(before: int, after: int, every: int) -> bool:
  """Whether a multiple of `every` lies in (before, after]."""
  return bool(every) and after // every > before // every


def _train_epoch(run: Run, state: Any, epoch: int, i: int, stop: StopOnSignal
                 ) -> tuple[Any, dict[str, float] | None]:
  """Trains steps i.. of `epoch`; returns (state, the epoch's metrics), or (state, None) when a
  stop came before its last step (a stop at the last step still ends the epoch: its evaluation
  and record, as an uninterrupted run has them). Logs and saves fall at multiples of their
  interval counted from the epoch's start, so that every epoch is cut into the same calls (see
  DeviceSteps.train_steps)."""
  config, spe = run.config, run.steps_per_epoch
  epoch_start = (epoch - 1) * spe
  save_every = config.checkpoint.every_steps if run.ckpt else 0
  perm = run.epoch_order(epoch)
  progress = Progress(run, epoch, i)
  with contextlib.closing(progress):  # also on errors: their message gets a line of its own
    while i < spe:
      n = run.driver.call_length(i, spe, run.stop_at - epoch_start if run.stop_at else None)
      state, step_metrics = run.driver.train_steps(state, *run.arrays["train"], perm, i, n)
      progress.add(step_metrics, n)
      run.profiler.after_call(state, n)
      i, step = i + n, epoch_start + i + n
      if step == run.stop_at and step < run.total_steps:
        stop.request("stop_after_steps")
      saving = _crossed(i - n, i, save_every) and i < spe
      record = _crossed(i - n, i, config.log_every_steps) or i == spe
      # Multi-process runs sync only at steps that every process knows in advance (a process
      # that alone stopped to sync would wait forever); a single process stops at once, read
      # once here as a signal may come at any moment. A checkpoint is written only after its
      # steps' losses were checked, with the steps fetched since the last record.
      stopping = stop.requested and jax.process_count() == 1
      if record or step == run.stop_at or saving or stopping:
        progress.flush(step, record)
        stop.sync(step, run.ckpt)
        stopping = stop.requested
      if saving or (stopping and i < spe):
        run.ckpt.save(state, window=progress.window_item())
      if stopping and i < spe:
        return state, None
  means = progress.epoch_means()
  evaluated, line = run.task.end_epoch(run, state, epoch, means)
  return state, progress.end_epoch({**means, **evaluated}, line)


def _train(run: Run, state: Any, history: list[dict[str, Any]]
           ) -> Any:
  """The epochs from the start step on; checkpoints after each `every_epochs`-th. Raises
  Preempted after saving when a stop was requested."""
  config, spe = run.config, run.steps_per_epoch
  with StopOnSignal(enabled=run.ckpt is not None) as stop:
    first_epoch = run.start_step // spe + 1
    for epoch in range(first_epoch, config.num_epochs + 1):
      first = run.start_step - (epoch - 1) * spe if epoch == first_epoch else 0
      state, epoch_metrics = _train_epoch(run, state, epoch, first, stop)
      if epoch_metrics is not None:
        history.append(epoch_metrics)
        if run.ckpt and (epoch % config.checkpoint.every_epochs == 0
                         or epoch == config.num_epochs):
          best = epoch_metrics if checkpoint.BEST_METRIC in epoch_metrics else None
          run.ckpt.save(state, best)
      # At the end a stop is not needed: the run finishes as usual.
      if stop.requested and checkpoint.step_of(state) < run.total_steps:
        run.ckpt.save(state)  # nothing new where the epoch or the stop has saved this step
        run.ckpt.wait()
        raise Preempted(f"Stopped by {stop.signal_name} at step {checkpoint.step_of(state)}; a "
                        f"checkpoint was saved in {run.ckpt.directory}. Re-run the same command "
                        "to resume.")
  return state


def _finish(run: Run, history: list[dict[str, Any]], test: dict[str, Any], report: str,
            t_start: float) -> dict[str, Any]:
  """The task's final evaluation (`test`, `report`) logged and written with test_metrics.json;
  returns the summary."""
  log(report)
  # A population's members, their accuracy's mean and spread and their ensemble stand beside
  # "test" (the members' means), as test_metrics.json shows them.
  population = {k: test.pop(k) for k in ("members", "mean", "std", "ensemble") if k in test}
  summary = {**(history[-1] if history else {}), "epochs": history, "test": test, **population,
             "time/train_s": time.time() - run.t_train, "time/total_s": time.time() - t_start,
             # The whole run's training, over every process that trained it (resumed, re-run).
             "time/epochs_s": sum(float(e.get("time/epoch_s", 0.0)) for e in history),
             "num_params": run.num_params}
  if run.workdir is not None and run.primary:
    final = {f"test/{k}": test[k] for k in run.task.final_keys}
    if population:
      final.update({f"test/{k}": np.asarray([m[k] for m in population["members"]])
                    for k in run.task.final_keys})
      final.update({f"test/ensemble_{k}": v for k, v in population.get("ensemble", {}).items()
                    if k in ("accuracy", "loss")})
    run.writer.write(run.total_steps, final)
    run.writer.write_text("test_report", report)
    write_file(run.workdir, "test_metrics.json", json.dumps(summary, indent=2))
  return summary


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | None = None,
                       then: Callable[[str, Any], None] | None = None
                       ) -> tuple[Any, dict[str, Any]]:
  """Trains `config` and evaluates it on the test split.

  Writes `config.json`, `metrics.jsonl`, TensorBoard events and `test_metrics.json` to `workdir`
  (nothing when it is None). Returns the final state and a dict with the last epoch's
  train/validation metrics, the test metrics and timings. `then(workdir, dataset)` is called
  after the last checkpoint is written, before the run's last line, for a run that keeps a report
  (config.report, a task that reports, one process writing checkpoints).
  """
  t_start = time.time()
  state, run, changes = setup(config, workdir)
  if workdir is not None:
    log(f"workdir: {workdir} (config.json, metrics.jsonl, tensorboard/, checkpoints/)")
  try:
    # A resumed run's summary keeps the epochs trained before the resume.
    history = (records_lib.read_epochs(workdir, run.start_step)
               if changes is not None and run.primary else [])
    run.t_train = time.time()
    state = _train(run, state, history)
    run.profiler.stop(state)  # a run shorter than profile_steps
    test, report = run.task.finish(run, state)
    summary = _finish(run, history, test, report, t_start)
    if then and config.report and run.task.reports and run.ckpt is not None and run.primary and (
        jax.process_count() == 1):
      run.ckpt.wait()  # the report reads the last checkpoint
      then(workdir, run.ds)
  finally:
    run.close()
  log(f"done in {summary['time/total_s']:.1f}s: "
      f"{run.task.headline({**summary['test'], **_population(summary)})}")
  return state, summary


def _population(summary: dict[str, Any]) -> dict[str, Any]:
  return {k: summary[k] for k in ("members", "mean", "std", "ensemble") if k in summary}
