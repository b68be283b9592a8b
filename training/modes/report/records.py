"""Reading a run's workdir for its report: whether it is a run, its metric records, its status;
and writing the report's files whole (written, then renamed)."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

from training import errors
from training.errors import ConfigError
from training.store import records as records_lib

METRICS, TEST_METRICS, CONFIG = "metrics.jsonl", "test_metrics.json", "config.json"


class ReportError(ConfigError):
  """The report or comparison cannot be written; the message says why and what to do."""


def _is_run(path: str) -> bool:
  return any(os.path.exists(os.path.join(path, f)) for f in (METRICS, CONFIG, "checkpoints"))


def check_run_dir(workdir: str, writable: bool = True) -> None:
  """Raises a ReportError unless `workdir` is a training run's directory (and writable)."""
  if not os.path.isdir(workdir):
    what = "a file, not a directory" if os.path.exists(workdir) else "no such directory"
    raise ReportError(f"No run in {workdir!r}: {what}. Pass the --workdir of a training run, "
                      "e.g. runs/cnn.")
  if not _is_run(workdir):
    runs = sorted(d for d in os.listdir(workdir) if os.path.isdir(os.path.join(workdir, d))
                  and _is_run(os.path.join(workdir, d)))
    some = " ".join(os.path.join(workdir, r) for r in runs[:3])
    hint = (f" It holds the runs {', '.join(runs)}: pass one, or several to compare them "
            f"(python train.py --mode=report {some})." if runs
            else " Pass the --workdir of a training run, e.g. runs/cnn.")
    raise ReportError(f"{workdir!r} is not a training run's workdir (it has no {METRICS}, "
                      f"{CONFIG} or checkpoints/).{hint}")
  if not os.path.isfile(os.path.join(workdir, METRICS)):
    raise ReportError(f"{workdir!r} has no {METRICS}: the run logged no metrics yet (or was "
                      "trained without a workdir). Report it once it has trained an epoch.")
  if writable:
    check_writable(workdir)


def check_writable(directory: str) -> None:
  try:
    errors.check_writable(directory)
    os.makedirs(directory, exist_ok=True)  # the report's files are written into it next
  except OSError as e:
    raise ReportError(f"Cannot write the report into {directory!r} ({e.strerror or e}); make "
                      "it writable, or copy the run to a writable place.") from e


def read_metrics(workdir: str) -> dict[str, Any]:
  """`metrics.jsonl` as {"steps": per-log-step records, "epochs": per-epoch records, "final":
  the last end-of-run record or None, "members": {k: {"steps", "epochs"}} of a population's
  member k ({} for a single model)}, in step order; a population's "steps" and "epochs" are its
  members' means. A resumed run logs again the steps after its checkpoint: a log step that goes
  back drops the records from it on (the killed attempt's). Lines cut short by a kill are
  skipped."""
  groups: dict[Any, list[dict[str, Any]]] = {}
  for r in records_lib.read_records(workdir):
    if isinstance(r, dict) and isinstance(r.get("step"), int):
      groups.setdefault(r.get("member"), []).append(r)
  out = _split(_after_resumes(groups.pop(None, [])))
  out["members"] = {k: _split(_after_resumes(v)) for k, v in sorted(groups.items())}
  if not out["steps"] and not out["epochs"]:
    raise ReportError(f"{os.path.join(workdir, METRICS)} holds no training metrics yet; report "
                      "the run once it has logged some steps.")
  return out


def _after_resumes(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """The records without those a resumed run logged again: a log step that goes back drops the
  records from it on."""
  records: list[dict[str, Any]] = []
  last_step = -1
  for r in rows:
    if "epoch" not in r and "train/loss" in r:  # a log step
      if r["step"] <= last_step:
        records = [x for x in records if x["step"] < r["step"]]
      last_step = r["step"]
    records.append(r)
  return records


def _split(records: list[dict[str, Any]]) -> dict[str, Any]:
  epochs = {r["epoch"]: r for r in records if "epoch" in r}
  finals = [r for r in records if "epoch" not in r and "train/loss" not in r]
  return {"steps": [r for r in records if "epoch" not in r and "train/loss" in r],
          "epochs": [epochs[e] for e in sorted(epochs)], "final": finals[-1] if finals else None}


def read_json(path: str) -> dict[str, Any] | None:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def write_file(path: str, data: bytes | str) -> None:
  """Writes then renames: a report stopped midway leaves the previous files whole."""
  data = data.encode() if isinstance(data, str) else data
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".report-", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def status(records: dict[str, Any], config: Any, finished: bool) -> str:
  done = records["epochs"][-1]["epoch"] if records["epochs"] else 0
  last = max([r["step"] for r in records["steps"] + records["epochs"]])
  if finished and done >= config.num_epochs:
    return f"finished: {done} of {config.num_epochs} epochs"
  return (f"unfinished (still running, or stopped): {done} of {config.num_epochs} epochs "
          f"logged, the last log at step {last}")

