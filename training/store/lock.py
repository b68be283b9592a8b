"""One writing run per workdir: `<workdir>/.lock`, held for the whole run.

Two runs training into one workdir would mix their checkpoints, metrics and TensorBoard events
without a word. The run that writes a workdir holds an exclusive `fcntl.flock` on the open file
`<workdir>/.lock`, which also records who holds it (host, pid, start time, command) for the
message that a second run gets:

    with WorkdirLock(workdir) as lock:   # raises WorkdirInUseError if another run holds it
      if lock.note:
        log(lock.note)                   # a stale lock of a run that is gone was taken over
      ...train...

- The OS releases a flock when its process dies, however it dies (SIGKILL, a crash, the OOM
  killer), so a killed run never blocks the next one.
- On a file system where flock does not exclude (some FUSE mounts; NFS without a lock daemon
  fails it instead), the recorded holder is checked: one on this host whose process is gone (or
  whose pid now belongs to another process) is stale and taken over with a note; a live one, or
  one on another host that cannot be checked and whose lock could not be tried, is refused.
- Multi-host runs: only process 0 takes the lock (`WorkdirLock(workdir,
  enabled=jax.process_index() == 0)`); the other processes write checkpoints collectively with
  it and nothing else, and share its workdir by design.
- Only training takes it. Evaluation and prediction read a workdir (even one that is training)
  and never lock it.
- On release the file is deleted, so a finished workdir holds no `.lock`.
"""

from __future__ import annotations

import datetime
import errno
import json
import os
import shlex
import socket
import sys
import time
from typing import Any

from training.errors import ConfigError

try:
  import fcntl
except ImportError:  # Windows: the recorded holder is all there is to go on
  fcntl = None

LOCK_NAME = ".lock"


class WorkdirInUseError(ConfigError):
  """Another run is writing this workdir."""


def _process_start(pid: int) -> str | None:
  """The process's start time in clock ticks since boot (Linux), to tell a reused pid from the
  process that took the lock; None where /proc does not say."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      stat = f.read()
  except OSError:
    return None
  # Fields after the command name (in parentheses, which may hold spaces): state is the first,
  # starttime the 20th.
  fields = stat[stat.rfind(")") + 2:].split()
  return fields[19] if len(fields) > 19 else None


def _alive(pid: int, start: str | None) -> bool:
  """Whether process `pid` of this host runs and is the one that started at `start`."""
  if pid <= 0:
    return False
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    pass  # someone else's process: it exists
  try:
    with open(f"/proc/{pid}/stat") as f:
      stat = f.read()
    if stat[stat.rfind(")") + 2:].split()[0] in ("Z", "X"):
      return False  # killed, not yet reaped by its parent
  except OSError:
    pass
  now = _process_start(pid)
  return start is None or now is None or now == start


def _describe(holder: dict[str, Any]) -> str:
  command = holder.get("command") or "?"
  if len(command) > 200:
    command = command[:197] + "..."
  return (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, started "
          f"{holder.get('start_time', '?')} ({command})")


class WorkdirLock:
  """Context manager holding `<workdir>/.lock` (see the module's docstring).

  `__enter__` creates the workdir if needed and raises `WorkdirInUseError` when another run holds
  the lock; `note` is then None, or a sentence to show when a stale lock was taken over.
  `enabled=False` (processes other than 0 of a multi-host run) does nothing.
  """

  def __init__(self, workdir: str, *, enabled: bool = True, command: str | None = None):
    self.workdir = workdir
    self.path = os.path.join(workdir, LOCK_NAME)
    self.enabled = enabled
    self.command = command if command is not None else " ".join(
        shlex.quote(a) for a in [os.path.basename(sys.executable), *sys.argv])
    self.note: str | None = None
    self._fd: int | None = None

  def _record(self) -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "process_start": _process_start(os.getpid()),
            "start_time": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": self.command}

  @staticmethod
  def _read(fd: int) -> dict[str, Any] | None:
    """The recorded holder, or None for an empty or unreadable record."""
    try:
      os.lseek(fd, 0, os.SEEK_SET)
      raw = os.read(fd, 1 << 16)
      holder = json.loads(raw.decode()) if raw.strip() else None
    except (OSError, ValueError):
      return None
    return holder if isinstance(holder, dict) else None

  def _in_use(self, holder: dict[str, Any] | None, hint: str = "") -> WorkdirInUseError:
    who = _describe(holder) if holder else "a run whose details are not recorded yet"
    return WorkdirInUseError(
        f"The workdir {self.workdir} is in use by another run: {who}. Two runs writing one "
        "workdir would mix their checkpoints and metrics. Wait for that run to finish or stop "
        f"it, or pass another --workdir.{hint}")

  def check_free(self) -> None:
    """Raises WorkdirInUseError when a live run on this host holds the lock, as `__enter__`
    would; takes nothing and writes nothing, so that a run can be refused for another reason
    first without touching the workdir (the lock itself still decides, when it is taken)."""
    try:
      fd = os.open(self.path, os.O_RDONLY)
    except OSError:
      return  # no lock file: no run holds it
    try:
      holder = self._read(fd)
    finally:
      os.close(fd)
    if (self.enabled and holder and holder.get("host") == socket.gethostname()
        and holder.get("pid") not in (None, os.getpid())
        and _alive(int(holder["pid"]), holder.get("process_start"))):
      raise self._in_use(holder)

  def __enter__(self) -> "WorkdirLock":
    if not self.enabled:
      return self
    try:
      os.makedirs(self.workdir, exist_ok=True)
    except OSError as e:
      raise ConfigError(f"Cannot write to the workdir {self.workdir!r} ({e.strerror or e}); "
                        "pass a writable directory with --workdir=...") from e
    for _ in range(10):  # retried only when the file was replaced while we locked it
      try:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
      except OSError as e:
        raise ConfigError(f"Cannot create the lock file {self.path} ({e.strerror or e}); pass "
                          "a writable directory with --workdir=...") from e
      try:
        if self._acquire(fd):
          self._fd = fd
          return self
      except BaseException:
        os.close(fd)
        raise
      os.close(fd)
    raise self._in_use(None)

  def _acquire(self, fd: int) -> bool:
    """Locks `fd` and writes our record: True; False when the file was deleted or replaced
    meanwhile (by a holder releasing it), to try again; raises when another run holds it."""
    flocked = False
    if fcntl is not None:
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        flocked = True
      except BlockingIOError:
        # Held. The holder writes its record just after locking: give it a moment.
        holder = None
        for _ in range(20):
          holder = self._read(fd)
          if holder:
            break
          time.sleep(0.05)
        raise self._in_use(holder) from None
      except OSError as e:
        if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
          raise
        # This file system cannot lock: the record below is all there is to go on.
    try:
      if os.fstat(fd).st_ino != os.stat(self.path).st_ino:
        return False
    except FileNotFoundError:
      return False
    holder = self._read(fd)
    if holder and holder.get("pid") is not None:
      same_host = holder.get("host") == socket.gethostname()
      if same_host and holder.get("pid") == os.getpid():
        pass  # this process's own record, of a lock it did not release
      elif same_host and _alive(int(holder["pid"]), holder.get("process_start")):
        # Locked by us, yet its process runs: this file system's flock does not exclude.
        raise self._in_use(holder, f" (If no such run exists, delete {self.path}.)")
      elif not same_host and not flocked:
        raise self._in_use(holder, " This file system cannot lock files, so whether that run "
                           f"still runs is unknown: if it does not, delete {self.path}.")
      else:
        gone = ("no longer runs" if same_host else
                "no longer holds it (its host released the file lock)")
        self.note = (f"Note: took over the lock of the workdir {self.workdir} from a run that "
                     f"{gone}: {_describe(holder)}.")
    record = json.dumps(self._record(), indent=1).encode()
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, record)
    return True

  def __exit__(self, *exc) -> None:
    self.release()

  def release(self) -> None:
    """Deletes the lock file, then unlocks (a run waiting on the old file then retries)."""
    if self._fd is None:
      return
    fd, self._fd = self._fd, None
    try:
      if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
        os.remove(self.path)
    except OSError:
      pass
    finally:
      os.close(fd)  # releases the flock
