"""A run's metric records: written to `metrics.jsonl` and TensorBoard event files, and read back."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
from typing import Any, Iterator, Mapping

import numpy as np

from training.errors import WorkdirWriteError, workdir_write_error


def read_records(workdir: str) -> list[dict[str, Any]]:
  """The records that `MetricWriter` wrote to `workdir`'s metrics.jsonl, in order."""
  records = []
  try:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      for line in f:
        try:
          records.append(json.loads(line))
        except ValueError:
          continue  # a line cut short by a kill
  except FileNotFoundError:
    return []
  return records


def read_epochs(workdir: str, up_to_step: int) -> list[dict[str, Any]]:
  """The per-epoch records that `MetricWriter` wrote to `workdir` up to `up_to_step`, the last
  one of each epoch (a run killed after logging an epoch logs it again when it resumes); of a
  population, the records of the members' means."""
  epochs = {r["epoch"]: r for r in read_records(workdir)
            if "epoch" in r and "member" not in r and r["step"] <= up_to_step}
  return [{k: v for k, v in epochs[e].items() if k not in ("step", "epoch")}
          for e in sorted(epochs)]


def drop_records_after(path: str, step: int) -> int:
  """Rewrites the JSON-lines file `path` keeping only the records of steps <= `step` (and no line
  cut short by a kill); returns how many records were dropped. Atomic: a temporary file
  replaces the old one, so a kill at any moment leaves one or the other."""
  try:
    with open(path, "rb") as f:
      lines = f.read().split(b"\n")
  except FileNotFoundError:
    return 0
  kept, dropped = [], 0
  for line in lines:
    if not line.strip():
      continue
    try:
      record = json.loads(line)
      keep = int(record["step"]) <= step
    except (ValueError, KeyError, TypeError):
      keep = False  # a line cut short by a kill
    if keep:
      kept.append(line)
    else:
      dropped += 1
  if dropped:
    tmp = f"{path}.tmp{os.getpid()}"
    try:
      with open(tmp, "wb") as f:
        f.write(b"".join(line + b"\n" for line in kept))
        f.flush()
        os.fsync(f.fileno())
      os.replace(tmp, path)
    finally:
      if os.path.exists(tmp):
        os.remove(tmp)
  return dropped


_WRITERS = itertools.count()


class MetricWriter:
  """Writes scalars to `metrics.jsonl` and TensorBoard event files in the workdir.

  `resume_step`: the step of the checkpoint a run resumes from. The records logged after it (by
  the run that was killed or preempted after its last checkpoint) are dropped from
  `metrics.jsonl`, and TensorBoard hides its events from step `resume_step + 1` on, so the steps
  that the resumed run logs again appear once. None: a fresh run, whatever is there is kept.

  A failed write (a full disk) raises `WorkdirWriteError`, which names the file and the free
  space; TensorBoard's events are written by a thread, whose failure is raised at the next call.

  `members`: a population's size. Values that are arrays (one per member) are then written as
  one record per member (with "member": k) and in TensorBoard runs of their own
  (`tensorboard/member_<k>`, overlaid by TensorBoard), beside a record of their means and
  standard deviations (`aggregate`) with the values that are numbers (an ensemble's).
  """

  def __init__(self, workdir: str, enabled: bool = True, resume_step: int | None = None,
               members: int = 0):
    self.enabled, self.workdir, self.members = enabled, workdir, members
    self.dropped = 0  # records dropped from metrics.jsonl by resume_step
    self._jsonl = None
    self._tb, self._member_tb = None, []
    self._tb_error: BaseException | None = None
    if enabled:
      path = os.path.join(workdir, "metrics.jsonl")
      with self._write_errors("metrics.jsonl"):
        os.makedirs(workdir, exist_ok=True)
        if resume_step is not None:
          self.dropped = drop_records_after(path, resume_step)
        self._jsonl = open(path, "a", buffering=1)
      purge = None if resume_step is None else resume_step + 1
      self._tb = self._open_events(os.path.join(workdir, "tensorboard"), purge)
      self._member_tb = [self._open_events(os.path.join(workdir, "tensorboard", f"member_{k}"),
                                           purge) for k in range(members)]

  def _open_events(self, directory: str, purge_step: int | None) -> Any:
    from tensorboardX import SummaryWriter  # writes event files without TensorFlow
    with self._write_errors("tensorboard/"):
      # A file of its own even when two writers start in one second (the name has the time in
      # seconds): the later one would truncate the other's.
      tb = SummaryWriter(directory, purge_step=purge_step,
                         filename_suffix=f".{os.getpid()}.{next(_WRITERS)}")
    self._catch_event_write_errors(tb)
    return tb

  def _catch_event_write_errors(self, tb: Any) -> None:
    """tensorboardX writes events in a thread, which a failed write would end with a traceback
    (and a full queue would then block the next add): keep the error for the main thread."""
    events = getattr(getattr(getattr(tb, "file_writer", None), "event_writer", None),
                     "_ev_writer", None)
    if events is None:
      return
    for name in ("write_event", "flush"):
      method = getattr(events, name, None)
      if method is None:
        continue

      def guarded(*args, _method=method, **kwargs):
        if self._tb_error is not None:
          return None
        try:
          return _method(*args, **kwargs)
        except OSError as e:
          self._tb_error = e
          return None
      setattr(events, name, guarded)

  @contextlib.contextmanager
  def _write_errors(self, what: str) -> Iterator[None]:
    try:
      yield
    except OSError as e:
      raise self._error(what, e) from e
    if self._tb_error is not None:
      e, self._tb_error = self._tb_error, None
      raise self._error("tensorboard/", e) from e

  def _error(self, what: str, e: BaseException) -> WorkdirWriteError:
    return workdir_write_error(what, self.workdir, e)

  def write(self, step: int, scalars: Mapping[str, Any], **extra: Any) -> None:
    if not self.enabled:
      return
    if self.members:
      for k, tb in enumerate(self._member_tb):
        own = {key: float(v[k]) for key, v in scalars.items() if np.ndim(v) == 1}
        self._write(tb, step, own, {**extra, "member": k})
      scalars = aggregate(scalars)
    self._write(self._tb, step, scalars, extra)

  def _write(self, tb: Any, step: int, scalars: Mapping[str, float], extra: dict) -> None:
    with self._write_errors("metrics.jsonl"):
      self._jsonl.write(json.dumps({"step": step, **extra, **scalars}) + "\n")
      for k, v in scalars.items():
        tb.add_scalar(k, v, step)

  def write_text(self, tag: str, text: str, step: int = 0) -> None:
    if self.enabled:
      with self._write_errors("tensorboard/"):
        self._tb.add_text(tag, f"```\n{text}\n```", step)

  def write_image(self, tag: str, image: Any, step: int) -> None:
    """A uint8 (H, W, C) image to TensorBoard (a GAN's samples)."""
    if self.enabled:
      with self._write_errors("tensorboard/"):
        self._tb.add_image(tag, image, step, dataformats="HWC")

  def close(self) -> None:
    if self.enabled:
      jsonl, self.enabled = self._jsonl, False  # closed once, even if that fails
      try:
        with self._write_errors("metrics.jsonl"):
          jsonl.close()
      finally:
        with self._write_errors("tensorboard/"):
          for tb in [self._tb, *self._member_tb]:
            tb.close()


def aggregate(metrics: Mapping[str, Any]) -> dict[str, Any]:
  """A population's metrics as numbers: each array (one value per member) as its mean, with its
  standard deviation as "<key>_std"; numbers as they are. A single model's are unchanged."""
  out = {}
  for k, v in metrics.items():
    if np.ndim(v) == 1:
      values = np.asarray(v, np.float64)
      out[k] = float(values.mean())
      out[f"{k}_std"] = float(values.std(ddof=1)) if values.size > 1 else 0.0
    else:
      out[k] = v
  return out
