"""One epoch's metrics between host syncs: fetched at log steps (and before a checkpoint),
checked for NaN, logged, averaged into the epoch's means (recorded with the epoch's scores and
timings in its record and line at its end), and shown on the progress bar. A
population's metrics have a members axis: each member is checked, logged and averaged on its own.

A record is written at log steps and at the epoch's end only. The steps fetched since the last
record (the open window) travel in each checkpoint, so that a run stopped or killed between two
log steps and resumed writes the records of an uninterrupted run, bit for bit."""

from __future__ import annotations

import time
from typing import Any, Sequence

import jax
import numpy as np
from tqdm.auto import tqdm

from training import tasks
from training.console import log, note
from training.errors import NonFiniteLossError
from training.members import Member
from training.modes.train.setup import Run
from training.store import records as records_lib
from training.store.checkpoint import Checkpointer


# Calls dispatched beyond the one the devices are running: enough to keep them busy (a call is
# a step on CPU, a scan of log_every_steps steps on GPU/TPU), few enough to stop promptly.
IN_FLIGHT = 2


class Progress:
  """The device results not yet fetched, the log records behind the epoch's means, the bar."""

  def __init__(self, run: Run, epoch: int, first: int):
    self.run, self.epoch, self.first = run, epoch, first
    self.t_start, self.train_time = time.time(), 0.0  # the epoch's training, until `close`
    self.pending: list[tuple[Any, int]] = []  # (a call's metrics, its real steps)
    self.count = 0  # steps trained in this process
    # (steps, means) of each log record of the epoch, those before a resume read back from
    # metrics.jsonl: the epoch's means come out as an uninterrupted run's, to the bit.
    self.logged = logged_before(run, epoch, first) if first else []
    # Each metric's values at the steps fetched since the last record: (steps,) or (steps, members).
    self.window: dict[str, np.ndarray] = resumed_window(run, first) if first else {}
    self.bar = tqdm(total=run.steps_per_epoch, initial=first,
                    desc=f"epoch {epoch}/{run.config.num_epochs}", unit="step", leave=False,
                    disable=not (run.config.progress_bar and run.primary), mininterval=0.5)

  def add(self, metrics: Any, n: int) -> None:
    """A call's metrics, not fetched yet. The host runs at most IN_FLIGHT calls ahead of the
    devices: a stop (SIGTERM, Ctrl-C) is seen within that many calls, not at the next log step."""
    self.pending.append((metrics, n))
    if len(self.pending) > IN_FLIGHT:
      jax.block_until_ready(self.pending[-IN_FLIGHT - 1][0])

  def flush(self, step: int, record: bool = True) -> None:
    """The only host sync of the loop: fetches the metrics of the calls since the last one,
    checks them, adds them to the window, and with `record` logs the window's means at `step`."""
    fetched = jax.device_get([m for m, _ in self.pending])
    one_step = self.run.driver.chunk == 1  # a call's metrics have no steps axis then
    stacked = {k: np.concatenate([np.asarray(m[k])[None] if one_step else np.asarray(m[k])[:n]
                                  for m, (_, n) in zip(fetched, self.pending)])
               for k in fetched[0]}
    n = len(stacked[self.run.task.bar_key])
    check_finite(stacked, step - n + 1, self.run.members, self.run.ckpt)
    self.count += n
    self.bar.update(n)
    self.pending = []
    self.window = {k: np.concatenate([self.window[k], v]) if k in self.window else v
                   for k, v in stacked.items()}
    if record:
      self._record(step)

  def _record(self, step: int) -> None:
    """Logs the window's means at `step` (the same values in the same order as an uninterrupted
    run's, so the same means) and closes it."""
    window, self.window = self.window, {}
    means = {f"train/{k}": _mean(v) for k, v in window.items()}
    self.logged.append((len(window[self.run.task.bar_key]), means))
    rate = self.run.learning_rates[step - 1]
    means["train/learning_rate"] = rate * self.run.lr_scales() if self.run.members else float(rate)
    self.run.writer.write(step, means)
    key = self.run.task.bar_key
    self.bar.set_postfix({key: f"{np.mean(means[f'train/{key}']):.4f}"}, refresh=False)

  def window_item(self) -> dict[str, Any]:
    """The open window as a checkpoint's JSON item: each metric's dtype and values (float32
    values are exact in JSON's float64)."""
    return {k: {"dtype": str(v.dtype), "values": v.tolist()} for k, v in self.window.items()}

  def close(self) -> None:
    self.train_time = time.time() - self.t_start
    self.bar.close()

  def epoch_means(self) -> dict[str, Any]:
    return tasks.epoch_means(self.logged, self.run.task.epoch_keys)

  def end_epoch(self, metrics: dict[str, Any], line: str) -> dict[str, float]:
    """The epoch's line and record, after its evaluation: `metrics` are its means and the
    task's scores, `line` the task's part of the line. Returns the epoch's metrics."""
    run, epoch, train_time = self.run, self.epoch, self.train_time
    line = (f"epoch {epoch:>3}/{run.config.num_epochs}  {run.task.train_line(metrics)}"
            # The means are still the whole epoch's: the records before the resume join them.
            + (f" (resumed at step {self.first} of {run.steps_per_epoch})" if self.first else "")
            + line)
    epoch_time = time.time() - self.t_start
    metrics.update({"time/epoch_s": epoch_time, "time/train_epoch_s": train_time,
                    "time/elapsed_s": time.time() - run.t_train,
                    "time/steps_per_s": self.count / train_time})
    run.writer.write(epoch * run.steps_per_epoch, metrics, epoch=epoch)
    log(line + f"  |  {epoch_time:.1f}s ({self.count / train_time:.1f} steps/s)")
    return records_lib.aggregate(metrics)


def _mean(values: np.ndarray) -> Any:
  """The mean over the steps: a number, or one per member."""
  return float(values.mean()) if values.ndim == 1 else values.mean(axis=0).astype(np.float64)


def check_finite(metrics: dict[str, np.ndarray], first_step: int,
                 population: Sequence[Member] = (), ckpt: Checkpointer | None = None) -> None:
  """Stops on a NaN or infinite train metric, a loss or a gradient norm (an overflowing norm is
  divergence too), naming the first step (and the member of `population`) where one went.
  `metrics`: (steps,) arrays, or (steps, members) of a population."""
  bad = []
  for name in sorted(metrics, key=lambda k: ("loss" not in k, k)):  # a loss is named first
    values = metrics[name]
    where = np.flatnonzero(~np.isfinite(values))
    if where.size:
      what = {"grad_norm": "gradient norm"}.get(name, name.replace("_", " "))
      bad.append((int(where[0]), what, values.flat[where[0]]))
  if not bad:
    return
  index, what, value = min(bad, key=lambda b: b[0])
  step, member = (index // len(population), population[index % len(population)]) if (
      population) else (index, None)
  whose = f" of member {member.index} ({member.label()})" if member else ""
  resume = (" To continue this run's last checkpoint with such changes, add "
            "--config.checkpoint.allow_config_changes=True."
            if ckpt is not None and ckpt.latest_step() is not None else "")
  advice = ("leave that member's values out of --config.sweep, " if member and member.values
            else "")
  raise NonFiniteLossError(
      f"The training {what}{whose} became {value} at step {first_step + step}. Training stopped "
      f"there, and no checkpoint from that step on was saved. Try {advice}a lower "
      "--config.learning_rate, gradient clipping (--config.grad_clip_norm=1.0), or "
      f"--config.dtype=float32 if you use bfloat16.{resume}")


def resumed_window(run: Run, first: int) -> dict[str, np.ndarray]:
  """The window that the checkpoint at `run.start_step` (step `first` of its epoch) carried;
  empty, with a note, for a checkpoint written before windows were kept."""
  saved = run.ckpt.read_item(run.start_step, "window")
  if saved is None:
    if first % run.config.log_every_steps:
      note(f"the checkpoint at step {run.start_step} was written by an earlier version, which "
           "did not keep the steps since the last train record: the first record after the "
           f"resume averages the steps after step {run.start_step} only.")
    return {}
  return {k: np.asarray(v["values"], dtype=v["dtype"]) for k, v in saved.items()}


def logged_before(run: Run, epoch: int, first: int) -> list[tuple[int, dict[str, Any]]]:
  """The log records of `epoch` up to its step `first`, where this run resumed, with the number
  of steps each covers (a population's: each member's values as one array per step)."""
  epoch_start = (epoch - 1) * run.steps_per_epoch
  key = f"train/{run.task.bar_key}"
  records = [r for r in records_lib.read_records(run.workdir) if "epoch" not in r
             and key in r and epoch_start < r["step"] <= epoch_start + first
             and ("member" in r) == bool(run.members)]
  if run.members:
    records = _by_step(records, len(run.members))
  steps_before = [epoch_start] + [r["step"] for r in records[:-1]]
  return [(r["step"] - before, r) for r, before in zip(records, steps_before)]


def _by_step(records: list[dict[str, Any]], size: int) -> list[dict[str, Any]]:
  """A population's per-member log records as one record per step, its values arrays."""
  steps: dict[int, dict[str, Any]] = {}
  for r in records:
    row = steps.setdefault(r["step"], {"step": r["step"]})
    for k, v in r.items():
      if k.startswith("train/"):
        row.setdefault(k, np.zeros(size))[r["member"]] = v
  return [steps[s] for s in sorted(steps)]
