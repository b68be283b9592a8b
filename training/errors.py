"""Errors caused by the user's input or the machine's state (a full disk, damaged files);
`train.py` prints their message as one `error:` line instead of a traceback."""

from __future__ import annotations

import errno
import os
import shutil


class ConfigError(ValueError):
  """A config value that cannot work; the message says which and how to fix it."""


class DataNotFoundError(FileNotFoundError):
  """The dataset is not prepared where we looked, and cannot be prepared here."""


class DataCorruptError(DataNotFoundError):
  """A prepared data file that cannot be read (damaged on disk, truncated by a copy)."""


class WorkdirWriteError(ConfigError):
  """Writing to the workdir failed: a full disk, a lost mount, revoked permissions."""


class NonFiniteLossError(FloatingPointError):
  """Training produced a NaN or infinite loss."""


class Preempted(Exception):
  """Training stopped on a signal after saving a checkpoint; re-running resumes it."""


def workdir_write_error(what: str, workdir: str, e: BaseException) -> WorkdirWriteError:
  """The one-line error for a failed write of `what` (a file name) in the workdir: the OS's
  reason, the free space, and the way on."""
  return WorkdirWriteError(
      f"Could not write {what} in the workdir {workdir}: {os_reason(e)} "
      f"({free_space(workdir)} on that file system). Free some space or fix the file system, "
      "then re-run the same command: it resumes from the last checkpoint.")


def unsaved(what: str, directory: str, e: OSError, place: str = "the workdir") -> str:
  """What a mode says after its results (as a note, or an error when saving was its purpose)
  of the outputs (`what`: their names) that it could not save into `directory` (`place`)."""
  why = {errno.EROFS: f"{place} is read-only", errno.EACCES: f"{place} is not writable",
         errno.EPERM: f"{place} is not writable", errno.ENOSPC: f"{place}'s disk is full",
         errno.EDQUOT: f"{place}'s disk quota is used up"}.get(e.errno, os_reason(e))
  return f"could not write {what} into {directory}: {why}."


def mib(n: float) -> str:
  return f"{n / 2**20:.1f} MiB" if n < 2**30 else f"{n / 2**30:.1f} GiB"


def free_space(path: str) -> str:
  """'12.3 MiB free' on the file system of `path` (or of its nearest existing parent)."""
  path = os.path.abspath(path)
  while not os.path.exists(path) and os.path.dirname(path) != path:
    path = os.path.dirname(path)
  try:
    usage = shutil.disk_usage(path)
  except OSError:
    return "free space unknown"
  return f"{mib(usage.free)} free of {mib(usage.total)}"


def os_reason(e: BaseException) -> str:
  """The operating system's reason for a failed write or read, in a few words ("No space left on
  device"), from `e` or the errors it wraps; else the first line of its message."""
  import re
  chain, x = [], e
  while x is not None and len(chain) < 20:
    chain.append(x)
    x = x.__cause__ or x.__context__
  for x in chain:
    if isinstance(x, OSError) and x.errno:
      return x.strerror or os.strerror(x.errno)
  for x in chain:  # tensorstore's errors are ValueErrors that quote the OS error's code
    m = re.search(r"os_error_code='?(\d+)", str(x))
    if m:
      return os.strerror(int(m.group(1)))
  text = str(e).split(" [tensorstore_spec=")[0].splitlines()
  return (text[0][:300] if text else "") or type(e).__name__


def check_writable(directory: str) -> None:
  """Raises the OSError that writing a file into `directory` (or, while it does not exist yet,
  into its nearest existing parent, where it would be made) would raise. Writes nothing: a
  refused run leaves no trace in its workdir."""
  path = os.path.abspath(directory)
  while not os.path.exists(path):
    path = os.path.dirname(path)
  if not os.path.isdir(path):
    raise NotADirectoryError(errno.ENOTDIR, f"{path} is a file")
  if not os.access(path, os.W_OK | os.X_OK):
    readonly = os.statvfs(path).f_flag & os.ST_RDONLY
    code = errno.EROFS if readonly else errno.EACCES
    raise OSError(code, os.strerror(code), path)
