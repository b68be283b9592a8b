"""The workdir lock: a second run is refused naming the first; a dead run's lock is taken over."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from training import ConfigError
from training.store.lock import LOCK_NAME, WorkdirInUseError, WorkdirLock

from conftest import REPO

# Holds the lock of argv[1] and says so, then sleeps until killed.
HOLDER = """if True:
  import sys, time
  from training.store.lock import WorkdirLock
  with WorkdirLock(sys.argv[1], command="python train.py --config=configs/cnn.py") as lock:
    print("locked", flush=True)
    time.sleep(600)
"""


@pytest.fixture
def holder(tmp_path):
  """A separate process that holds the lock of tmp_path/w; yields (process, workdir)."""
  workdir = tmp_path / "w"
  proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(workdir)], cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    line = proc.stdout.readline()
    assert line.strip() == "locked", proc.stderr.read()
    yield proc, workdir
  finally:
    if proc.poll() is None:
      proc.kill()
    proc.wait(timeout=30)


def test_a_second_run_is_refused_naming_the_first(holder):
  proc, workdir = holder
  with pytest.raises(WorkdirInUseError) as e:
    with WorkdirLock(str(workdir)):
      pytest.fail("took a lock that another process holds")
  msg = str(e.value)
  assert isinstance(e.value, ConfigError)  # train.py prints it as one `error:` line
  assert f"pid {proc.pid} on host {socket.gethostname()}, started " in msg
  assert "configs/cnn.py" in msg and "another --workdir" in msg
  assert (workdir / LOCK_NAME).exists()  # the holder's lock is left alone


def test_the_lock_of_a_killed_run_is_free_at_once(holder):
  proc, workdir = holder
  proc.send_signal(signal.SIGKILL)  # no clean-up: the file and its record stay behind
  proc.wait(timeout=30)
  assert json.loads((workdir / LOCK_NAME).read_text())["pid"] == proc.pid
  with WorkdirLock(str(workdir)) as lock:
    assert lock.note and "no longer runs" in lock.note and f"pid {proc.pid}" in lock.note
    assert json.loads((workdir / LOCK_NAME).read_text())["pid"] == os.getpid()
  assert not (workdir / LOCK_NAME).exists()  # released: deleted


def _record(workdir, **fields):
  workdir.mkdir(exist_ok=True)
  record = {"host": socket.gethostname(), "start_time": "2026-11-30T03:00:00+00:00",
            "command": "python train.py --config=configs/mlp.py", **fields}
  (workdir / LOCK_NAME).write_text(json.dumps(record))


def test_without_file_locks_a_dead_pid_is_stale_and_a_live_one_is_not(tmp_path, monkeypatch):
  """A file system where flock does not exclude: the recorded holder decides."""
  import training.store.lock as wl
  monkeypatch.setattr(wl, "fcntl", None)
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  _record(tmp_path, pid=dead.pid)
  with WorkdirLock(str(tmp_path)) as lock:
    assert lock.note and f"pid {dead.pid}" in lock.note
  # A live process on this host (that started when recorded) still holds it.
  live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
  try:
    _record(tmp_path, pid=live.pid, process_start=wl._process_start(live.pid))
    with pytest.raises(WorkdirInUseError, match=rf"pid {live.pid} .*delete .*\.lock"):
      WorkdirLock(str(tmp_path)).__enter__()
    # The same pid, reused by another process than the recorded one: stale.
    _record(tmp_path, pid=live.pid, process_start="1")
    with WorkdirLock(str(tmp_path)) as lock:
      assert lock.note
    # Another host's holder cannot be checked, nor its lock tried: refused, with the way out.
    _record(tmp_path, pid=live.pid, host="elsewhere")
    with pytest.raises(WorkdirInUseError, match="on host elsewhere.*cannot lock files"):
      WorkdirLock(str(tmp_path)).__enter__()
  finally:
    live.kill()
    live.wait()


def test_another_hosts_lock_that_flock_finds_free_is_taken_over(tmp_path):
  _record(tmp_path, pid=12345, host="elsewhere")
  with WorkdirLock(str(tmp_path)) as lock:
    assert lock.note and "on host elsewhere" in lock.note


def test_one_process_cannot_lock_twice_and_disabled_locks_nothing(tmp_path):
  with WorkdirLock(str(tmp_path)) as lock:
    assert lock.note is None
    with pytest.raises(WorkdirInUseError, match=f"pid {os.getpid()}"):
      WorkdirLock(str(tmp_path)).__enter__()
    with WorkdirLock(str(tmp_path), enabled=False):  # processes > 0 of a multi-host run
      pass
  with WorkdirLock(str(tmp_path)):  # free again after the release
    pass
  assert not list(tmp_path.iterdir())
