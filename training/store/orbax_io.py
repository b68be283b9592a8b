"""How orbax and tensorstore report failures, and what to do with their threads and files: the
reads that fail with an error buried in a chain, the writes that go on after a save has failed,
the temporary directories a failed save leaves."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import threading
import time
from typing import Callable, Iterator

from training.errors import ConfigError

# Orbax's temporary directories of saves in progress (0.11: `<step>.orbax-checkpoint-tmp-<time>`).
TMP_PATTERN = "*.orbax-checkpoint-tmp*"
# What orbax and tensorstore raise on unreadable files and metadata.
READ_ERRORS = (ValueError, OSError, KeyError, TypeError)


def read_error(e: BaseException) -> BaseException | None:
  """The read error behind `e`, the innermost one: orbax re-raises tensorstore's failed reads of
  array chunks as a bare `Exception` whose cause is the real error."""
  found = None
  while e is not None:
    if isinstance(e, READ_ERRORS):
      found = e
    e = e.__cause__ or e.__context__
  return found


@contextlib.contextmanager
def read_errors_as(explain: Callable[[BaseException], Exception]) -> Iterator[None]:
  """Re-raises a failed read of checkpoint files as `explain(the read error)`; our own
  ConfigErrors, already explained, and unrelated errors pass unchanged."""
  try:
    yield
  except ConfigError:
    raise
  except Exception as e:
    cause = read_error(e)
    if cause is None:
      raise
    raise explain(cause) from e


def join_orbax_threads(timeout_s: float) -> None:
  """Waits for orbax's background threads (the writes of a save that failed elsewhere go on, and
  would recreate files of the partial checkpoint after it was removed). Orbax's threads re-raise
  their own failure from `join`: it is the one being reported, so it is not raised again here."""
  deadline = time.monotonic() + timeout_s
  for thread in threading.enumerate():
    if (thread is not threading.current_thread() and not thread.daemon
        and type(thread).__module__.startswith("orbax.")):
      with contextlib.suppress(Exception):
        thread.join(max(0.0, deadline - time.monotonic()))


def remove_partial_saves(directory: str) -> bool:
  """Deletes the temporary directories of unfinished saves in `directory`; whether any was there."""
  pattern = os.path.join(glob.escape(directory), TMP_PATTERN)
  found = glob.glob(pattern)
  for attempt in range(3):  # a write still in flight may add a file as the tree goes
    for path in glob.glob(pattern):
      shutil.rmtree(path, ignore_errors=True)
    if not glob.glob(pattern):
      break
    time.sleep(0.1 * (attempt + 1))
  return bool(found)
