"""A run's records after stops, kills and re-runs; how fast a stop is honoured; reading a
checkpoint that a training run rotates away; the profiler's trace."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import threading

import pytest
import tensorflow_datasets as tfds

from training import Preempted, train_and_evaluate
from training.compute import device
from training.store.checkpoint import Checkpointer, CheckpointGoneError
from training.tasks import restore

from conftest import load_config, shrink


def _config(**overrides):
  return shrink(load_config("cnn"), **{"num_epochs": 3, "log_every_steps": 1,
                                       "model.dropout": 0.3, **overrides})


def _history(workdir) -> list[dict]:
  return [{k: v for k, v in json.loads(line).items() if not k.startswith("time/")}
          for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def _stop_and_resume(workdir, every: int, **overrides) -> int:
  """The job-script pattern: re-runs the config with a budget of `every` steps until it is done;
  how many times it stopped."""
  stopped = 0
  while True:
    try:
      train_and_evaluate(_config(stop_after_steps=every, **overrides), str(workdir))
      return stopped
    except Preempted:
      stopped += 1


def test_stops_at_epoch_ends_and_resumes_leave_the_records_of_an_uninterrupted_run(
    mock_mnist, tmp_path):
  train_and_evaluate(_config(), str(tmp_path / "whole"))
  # A step budget of one epoch: stops after epochs 1 and 2; the third run ends the run.
  assert _stop_and_resume(tmp_path / "split", 3) == 2
  assert _history(tmp_path / "split") == _history(tmp_path / "whole")
  final = [json.loads((tmp_path / w / "test_metrics.json").read_text()) for w in ("whole", "split")]
  assert len(final[1]["epochs"]) == 3 and final[0]["test"] == final[1]["test"]
  # The whole run's training time is every epoch's, whichever process trained it; a finished
  # run run again (it only evaluates) keeps it: it was the evaluation's 0.7 s.
  epochs = [json.loads(line) for line in (tmp_path / "split" / "metrics.jsonl").read_text()
            .splitlines() if "epoch" in json.loads(line)]
  seconds = sum(e["time/epoch_s"] for e in epochs)
  assert final[1]["time/epochs_s"] == pytest.approx(seconds) and seconds > 0
  train_and_evaluate(_config(), str(tmp_path / "split"))
  again = json.loads((tmp_path / "split" / "test_metrics.json").read_text())
  assert again["time/epochs_s"] == pytest.approx(seconds)


# 58 mock training examples in batches of 4: 14 steps an epoch, records at steps 5, 10, 14, ...
WINDOWS = {"num_epochs": 2, "batch_size": 4, "log_every_steps": 5}


def _train_steps(workdir) -> list[int]:
  return [r["step"] for r in _history(workdir) if "train/loss" in r and "epoch" not in r]


def test_stops_between_log_steps_leave_the_records_of_an_uninterrupted_run(mock_mnist, tmp_path):
  """The steps since the last record travel in the checkpoint: no record at a stop or a save, the
  next one averages the same steps, and the epoch's train means come out bit for bit (float
  equality of every value in metrics.jsonl, timings aside)."""
  train_and_evaluate(_config(**WINDOWS), str(tmp_path / "whole"))
  whole = _history(tmp_path / "whole")
  assert _train_steps(tmp_path / "whole") == [5, 10, 14, 19, 24, 28]
  split, saves = tmp_path / "split", {"checkpoint.every_steps": 4}
  # The case: a stop at step 7, between the records of steps 5 and 10 (a save at 4).
  with pytest.raises(Preempted, match="at step 7"):
    train_and_evaluate(_config(stop_after_steps=7, **WINDOWS, **saves), str(split))
  assert [r["step"] for r in _history(split)] == [5]
  # Resumed: steps 6-8 go into the save at 8, and the run stops at 12 after recording step 10.
  with pytest.raises(Preempted, match="at step 12"):
    train_and_evaluate(_config(stop_after_steps=5, **WINDOWS, **saves), str(split))
  # As a kill during the save at 12 would leave it: the resume starts at 8 and logs 10 again.
  shutil.rmtree(split / "checkpoints" / "12")
  with Checkpointer.reader(str(split)) as ckpt:
    assert ckpt.latest_step() == 8
  train_and_evaluate(_config(**WINDOWS), str(split))
  assert _history(split) == whole


def test_a_checkpoint_without_the_open_window_resumes_with_a_note(mock_mnist, tmp_path, capsys):
  """A checkpoint written before the window was kept (its item removed here) resumes: the first
  record after it averages the steps since the checkpoint only, and a note says so."""
  with pytest.raises(Preempted, match="at step 7"):
    train_and_evaluate(_config(stop_after_steps=7, **WINDOWS), str(tmp_path / "old"))
  shutil.rmtree(tmp_path / "old" / "checkpoints" / "7" / "window")
  capsys.readouterr()
  train_and_evaluate(_config(**WINDOWS), str(tmp_path / "old"))
  notes = [l for l in capsys.readouterr().out.splitlines() if l.startswith("note:")]
  assert notes == ["note: the checkpoint at step 7 was written by an earlier version, which did "
                   "not keep the steps since the last train record: the first record after the "
                   "resume averages the steps after step 7 only."]
  assert _train_steps(tmp_path / "old") == [5, 10, 14, 19, 24, 28]
  # Training itself is exact: from epoch 2 on the records are the uninterrupted run's.
  train_and_evaluate(_config(**WINDOWS), str(tmp_path / "whole"))
  later = [_history(tmp_path / w)[4:] for w in ("old", "whole")]  # past step 14's two records
  assert later[0] == later[1] and later[0][0]["step"] == 19
  assert _history(tmp_path / "old")[1]["train/loss"] != _history(tmp_path / "whole")[1]["train/loss"]


def test_a_fresh_run_keeps_an_earlier_runs_records_aside(mock_mnist, tmp_path):
  """A run killed before its first checkpoint leaves records but nothing to resume: the re-run
  starts its own, and the old ones are kept, renamed."""
  train_and_evaluate(_config(num_epochs=1, **{"checkpoint.enabled": False}), str(tmp_path))
  earlier = (tmp_path / "metrics.jsonl").read_text()
  train_and_evaluate(_config(num_epochs=1), str(tmp_path))
  steps = [r["step"] for r in _history(tmp_path) if "epoch" not in r and "train/loss" in r]
  assert steps == [1, 2, 3]  # once each
  assert (tmp_path / "metrics.jsonl.1").read_text() == earlier
  assert (tmp_path / "tensorboard.1").is_dir()


def test_sigterm_is_honoured_within_a_few_steps_not_at_the_next_log(tmp_path, monkeypatch):
  """The signal comes from outside while the host waits on the device (as preemption's does):
  the host runs at most a couple of calls ahead, so the stop comes within a few steps, not at
  the next log step or the epoch's end (step 28 here), where a host far ahead would first wait."""
  train_steps, calls = device.DeviceSteps.train_steps, []

  def train_steps_then_term(self, *args):
    calls.append(1)
    if len(calls) == 5:
      threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGTERM)).start()
    return train_steps(self, *args)
  monkeypatch.setattr(device.DeviceSteps, "train_steps", train_steps_then_term)
  with tfds.testing.mock_data(num_examples=512):
    with pytest.raises(Preempted, match="Stopped by SIGTERM") as stopped:
      train_and_evaluate(_config(num_epochs=2, log_every_steps=40, max_train_examples=0),
                         str(tmp_path))
  assert 5 <= int(re.search(r"at step (\d+)", str(stopped.value)).group(1)) < 20


def test_a_checkpoint_rotated_away_while_read_is_read_again_not_called_damaged(
    mock_mnist, tmp_path, monkeypatch):
  train_and_evaluate(_config(num_epochs=2, **{"checkpoint.keep": 2, "checkpoint.keep_best": 0}),
                     str(tmp_path))
  steps = Checkpointer.reader(str(tmp_path)).all_steps()
  assert steps == [3, 6]
  restore_arrays, removed = Checkpointer.restore, []

  def rotate_then_restore(self, state, step=None):
    if not removed:  # the training run deletes its oldest... here the one being read
      removed.append(step)
      shutil.rmtree(os.path.join(self.directory, str(step)))
    return restore_arrays(self, state, step)
  monkeypatch.setattr(Checkpointer, "restore", rotate_then_restore)
  r = restore.restore(str(tmp_path), "latest")
  assert removed == [6] and r.step == 3  # the new latest
  removed.clear()
  with pytest.raises(CheckpointGoneError, match="was removed while it was read"):
    restore.restore(str(tmp_path), "3")


def test_profile_steps_writes_a_trace_of_the_steps_after_the_first_call(mock_mnist, tmp_path):
  train_and_evaluate(_config(num_epochs=1, profile_steps=2), str(tmp_path))
  runs = list((tmp_path / "tensorboard" / "plugins" / "profile").iterdir())
  assert len(runs) == 1
  files = [p.name for p in runs[0].iterdir()]
  assert any(f.endswith(".xplane.pb") for f in files), files
  assert any(f.startswith("perfetto_trace") for f in files), files
