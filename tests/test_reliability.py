"""Faults a run meets in the wild: a full disk during a save, metrics logged after the last
checkpoint of a killed run, damaged prepared data."""

from __future__ import annotations

import errno
import functools
import json
import logging
import os
import shutil
import struct
import subprocess
import sys
import threading

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

import nets
from training import DataNotFoundError
from training import data
from training.compute import optim
from training.store.checkpoint import Checkpointer, CheckpointWriteError
from training.store.orbax_io import TMP_PATTERN
from training.errors import DataCorruptError
from training.store.records import MetricWriter, drop_records_after
from training.tasks.classify import state as state_lib

from conftest import REPO, load_config, needs_tfds_mnist, real_data_dir, shrink


# --- A checkpoint that cannot be written --------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _initial_state() -> state_lib.TrainState:
  config = load_config("mlp")
  model = nets.create("mlp", num_classes=10, hidden=(256,))
  tx = optim.make_optimizer(config, optim.make_schedule(config, steps_per_epoch=10))
  key = jax.random.PRNGKey(0)
  return state_lib.create_train_state(model, tx, (28, 28, 1), key, key)


def _state(step: int, seed: int = 0) -> state_lib.TrainState:
  """An MLP's train state (a checkpoint of 2.3 MiB) at `step`, its parameters shifted by `seed`."""
  state = _initial_state()
  return state.replace(step=step, params=jax.tree_util.tree_map(lambda x: x + seed,
                                                                state.params))


@pytest.fixture
def disk_full(monkeypatch):
  """While `disk_full.on` is True, orbax's writes of the JSON items fail as on a full disk (an
  OSError from the file layer, in orbax's background thread)."""
  class Switch:
    on = False
  save_fn = ocp.JsonCheckpointHandler._save_fn

  async def failing(self, x, directory):
    if Switch.on:
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory / "metadata"))
    return await save_fn(self, x, directory)
  monkeypatch.setattr(ocp.JsonCheckpointHandler, "_save_fn", failing)
  return Switch


def _leftovers(ckpt: Checkpointer) -> list[str]:
  import glob
  return glob.glob(os.path.join(ckpt.directory, TMP_PATTERN))


def test_a_failed_save_is_one_clear_error_and_the_committed_checkpoint_stays(
    tmp_path, disk_full, caplog, capfd):
  config = shrink(load_config("mlp"))
  ckpt = Checkpointer(str(tmp_path), config, {"name": "mnist"})
  first = _state(3)
  ckpt.save(first)
  ckpt.wait()
  disk_full.on = True
  # Orbax reports a failed save wherever it learns of it: at this save, the next, or a wait.
  with pytest.raises(CheckpointWriteError) as e:
    ckpt.save(_state(6, seed=1))
    ckpt.save(_state(9, seed=1))
    ckpt.wait()
  msg = str(e.value)
  assert msg.startswith(f"Could not write the checkpoint of step 6 to {ckpt.directory}: "
                        "No space left on device (")
  assert " free of " in msg and "a checkpoint of this run takes about 2.3 MiB" in msg
  assert "The last committed checkpoint (step 3) is intact" in msg and "re-run" in msg
  ckpt.wait()  # reported once: the loop's clean-up does not raise it again
  ckpt.close()
  assert not _leftovers(ckpt), "the partial checkpoint was left behind"
  # Nothing of it on stderr or in the log: the one error says it all.
  assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text[-2000:]
  assert "Traceback" not in capfd.readouterr().err
  # The committed checkpoint restores, bit for bit.
  disk_full.on = False
  again = Checkpointer(str(tmp_path), config, {"name": "mnist"})
  try:
    assert again.all_steps() == [3]
    restored = again.restore(_state(0, seed=2))
    for a, b in zip(jax.tree_util.tree_leaves(first.params),
                    jax.tree_util.tree_leaves(restored.params)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    again.save(_state(6, seed=1))  # and saving works again once there is space
  finally:
    again.close()
  assert again.all_steps() == [3, 6]


def test_a_failed_first_save_surfacing_at_close(tmp_path, disk_full):
  ckpt = Checkpointer(str(tmp_path), shrink(load_config("mlp")), {})
  disk_full.on = True
  with pytest.raises(CheckpointWriteError,
                     match=r"(?s)step 2 .*No checkpoint was committed yet.*re-run"):
    ckpt.save(_state(2))
    ckpt.close()
  ckpt.close()
  assert not _leftovers(ckpt) and not [p for p in os.listdir(ckpt.directory) if p.isdigit()]


def test_a_second_write_failing_while_the_first_is_reported_does_not_escape(tmp_path):
  """A save's items are written by several orbax threads; when one failure is reported the
  others may still be running, and orbax's thread re-raises its own failure from `join`
  (seen in CI: a raw OSError instead of the one CheckpointWriteError)."""
  release = threading.Event()

  class WriteThread(threading.Thread):  # stands in for orbax's _SignalingThread
    def join(self, timeout=None):
      release.set()
      super().join(timeout)
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "dataset/metadata")
  WriteThread.__module__ = "orbax.checkpoint._src.futures.future"
  thread = WriteThread(target=release.wait)
  thread.start()
  ckpt = Checkpointer(str(tmp_path), shrink(load_config("mlp")), {})
  ckpt._saving = 4
  error = ckpt._write_failed(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "config/metadata"))
  assert isinstance(error, CheckpointWriteError) and "step 4" in str(error)
  assert not thread.is_alive()
  ckpt.close()


@pytest.fixture
def small_disk(tmp_path):
  """A 12 MiB tmpfs (room for one MLP checkpoint of 7.7 MiB, not two); skipped without the right
  to mount."""
  mount = tmp_path / "disk"
  mount.mkdir()
  try:
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mount)], check=True,
                   capture_output=True, timeout=30)
  except (OSError, subprocess.SubprocessError) as e:
    pytest.skip(f"cannot mount a small tmpfs here ({e}); the injected write error above covers "
                "the same code")
  try:
    yield mount
  finally:
    subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=30)


@pytest.mark.slow
def test_a_full_disk_stops_training_with_one_error_line_and_resumes_once_freed(
    small_disk, data_cache):
  """The real thing: tensorstore's writes fail with ENOSPC in its threads."""
  env = {**os.environ, "TFDS_DATA_DIR": real_data_dir(), "PYTHONUNBUFFERED": "1"}
  cmd = [sys.executable, "train.py", "--config=configs/mlp.py", f"--workdir={small_disk / 'w'}",
         "--config.progress_bar=False", f"--config.cache_dir={data_cache}",
         "--config.max_train_examples=1280", "--config.num_epochs=2",
         "--config.checkpoint.every_steps=4", "--config.log_every_steps=2"]
  full = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert full.returncode == 1, full.stderr[-3000:]
  checkpoints = small_disk / "w" / "checkpoints"
  assert full.stderr.startswith(f"error: Could not write the checkpoint of step 8 to "
                                f"{checkpoints}: No space left on device ("), full.stderr[-3000:]
  assert "The last committed checkpoint (step 4) is intact" in full.stderr
  assert len(full.stderr.strip().splitlines()) == 2, full.stderr[-3000:]  # no tracebacks
  assert sorted(p.name for p in checkpoints.iterdir()) == ["4"]  # no partial one left
  # With space freed, the same command resumes from the committed checkpoint and finishes.
  subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True, timeout=30)
  resumed = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "Resuming from the checkpoint at step 4" in resumed.stdout + resumed.stderr
  assert "test: loss" in resumed.stdout


# --- Metric history on resume ------------------------------------------------------------------

def _events(path) -> list:
  """The records of a TensorBoard event file (TFRecord framing)."""
  from tensorboardX.proto import event_pb2
  raw, out, i = path.read_bytes(), [], 0
  while i < len(raw):
    (n,) = struct.unpack("<Q", raw[i:i + 8])
    event = event_pb2.Event()
    event.ParseFromString(raw[i + 12:i + 12 + n])
    out.append(event)
    i += 12 + n + 4
  return out


def test_a_resumed_run_logs_each_step_once(tmp_path):
  writer = MetricWriter(str(tmp_path))
  for step in range(1, 11):
    writer.write(step, {"train/loss": float(step)})
  writer.write(5, {"validation/accuracy": 0.9}, epoch=1)
  writer.close()
  with open(tmp_path / "metrics.jsonl", "a") as f:
    f.write('{"step": 11, "train/lo')  # killed mid-line
  # The run had its last checkpoint at step 6: steps 7-10 will be logged again.
  writer = MetricWriter(str(tmp_path), resume_step=6)
  assert writer.dropped == 5
  for step in range(7, 13):
    writer.write(step, {"train/loss": 100.0 + step})
  writer.close()
  records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in records if "epoch" not in r] == list(range(1, 13))
  assert [r["train/loss"] for r in records if r["step"] > 6] == [107.0, 108.0, 109.0, 110.0,
                                                                 111.0, 112.0]
  assert [r["step"] for r in records if "epoch" in r] == [5]
  # TensorBoard: the resumed run's event file starts by purging the events from step 7 on.
  first, second = sorted((tmp_path / "tensorboard").iterdir())
  assert max(e.step for e in _events(first)) == 10
  purge = [e for e in _events(second) if e.HasField("session_log")]
  assert purge and purge[0].step == 7 and purge[0].session_log.status == 1  # START
  # A fresh run (resume_step None) keeps what is there.
  MetricWriter(str(tmp_path)).close()
  assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == len(records)


def test_dropping_records_keeps_the_file_when_nothing_is_dropped(tmp_path):
  path = tmp_path / "metrics.jsonl"
  assert drop_records_after(str(path), 3) == 0 and not path.exists()
  path.write_text('{"step": 1}\n{"step": 2}\n')
  before = os.stat(path).st_ino
  assert drop_records_after(str(path), 3) == 0 and os.stat(path).st_ino == before
  assert drop_records_after(str(path), 1) == 1 and path.read_text() == '{"step": 1}\n'


def test_a_full_disk_while_logging_is_one_clear_error(tmp_path, monkeypatch):
  writer = MetricWriter(str(tmp_path))

  class Full:
    def write(self, text):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def close(self):
      pass
  writer._jsonl = Full()
  with pytest.raises(Exception, match=r"Could not write metrics.jsonl in the workdir .*No space "
                     r"left on device \(.* free of .*\)\. .*re-run"):
    writer.write(1, {"train/loss": 1.0})
  writer.close()


# --- Damaged prepared data ---------------------------------------------------------------------

@pytest.fixture
def damaged_data(tmp_path):
  """A copy of the prepared MNIST whose train records have 8 flipped bytes."""
  copy = tmp_path / "tfds" / "mnist" / "3.0.1"
  shutil.copytree(os.path.join(needs_tfds_mnist(), "mnist", "3.0.1"), copy)
  (record,) = copy.glob("mnist-train.array_record-*")
  os.chmod(record, 0o644)
  content = bytearray(record.read_bytes())
  for i in range(8):
    content[70_000 + i * 997] ^= 0xFF
  record.write_bytes(bytes(content))
  return tmp_path / "tfds", record


def test_damaged_data_names_the_file_and_how_to_prepare_it_again(damaged_data):
  data_dir, record = damaged_data
  with pytest.raises(DataCorruptError) as e:
    data.load("mnist", data_dir=str(data_dir), cache_dir="none")
  assert isinstance(e.value, DataNotFoundError)  # one `error:` line on the command line
  msg = str(e.value)
  assert msg.startswith(f"The prepared 'mnist' data cannot be read: {record} is damaged or "
                        "incomplete (Corrupted Riegeli/records file")
  assert (f"tfds build mnist --file_format=array_record --data_dir={data_dir} --overwrite"
          in msg)


def test_damaged_metadata_names_it_and_how_to_prepare_it_again(damaged_data):
  data_dir, record = damaged_data
  (record.parent / "dataset_info.json").write_text("{broken")
  with pytest.raises(DataCorruptError) as e:  # it was protobuf's ParseError, with a traceback
    data.load("mnist", data_dir=str(data_dir), cache_dir="none")
  assert str(e.value).startswith(f"The prepared 'mnist' data in {data_dir} cannot be read: its "
                                 "metadata (dataset_info.json) is damaged (")
  assert f"tfds build mnist --file_format=array_record --data_dir={data_dir} --overwrite" in str(
      e.value)


def test_damaged_data_on_the_command_line(damaged_data, tmp_path):
  data_dir, record = damaged_data
  run = subprocess.run([sys.executable, "train.py", "--config=configs/mlp.py",
                        f"--workdir={tmp_path / 'w'}", f"--config.data_dir={data_dir}",
                        "--config.cache_dir=none", "--config.progress_bar=False"],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
  assert run.returncode == 1
  assert run.stderr.startswith(f"error: The prepared 'mnist' data cannot be read: {record} "), \
      run.stderr[-3000:]
  assert "Traceback" not in run.stderr and len(run.stderr.strip().splitlines()) == 3


def test_ctrl_c_before_training_is_a_note_not_a_traceback(tmp_path):
  """A Ctrl-C before training takes it as a stop request (here: while the data downloads, from
  a loopback server that never answers) ends with one note line and status 130."""
  import signal
  import socket
  with socket.socket() as server:
    server.bind(("127.0.0.1", 0))
    server.listen()
    env = {k: v for k, v in os.environ.items() if k != "TFDS_DATA_DIR"}
    proc = subprocess.Popen(
        [sys.executable, "train.py", "--config=configs/mlp.py", f"--workdir={tmp_path / 'w'}",
         f"--config.data_dir={tmp_path / 'data'}", "--config.cache_dir=none",
         f"--config.data_url=http://127.0.0.1:{server.getsockname()[1]}/"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # As from a terminal: a test worker may ignore Ctrl-C, which its children would inherit.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
      server.settimeout(120)
      connection, _ = server.accept()  # the download has begun: training has not
      with connection:
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
      proc.kill()  # nothing left running, whatever failed
      proc.wait(timeout=60)
  assert proc.returncode == 130, stderr[-3000:]
  assert stderr.startswith("note: stopped by Ctrl-C") and len(stderr.splitlines()) == 1, stderr
  assert not (tmp_path / "w").exists()
  assert not [p for p in (tmp_path / "data").rglob("*") if p.is_file()]  # no partial download
