"""A real `train.py --mode=serve` process on 127.0.0.1 for the tests: started on a free port, its
URL read from its start-up note, stopped with SIGTERM, which must end it with status 0."""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import subprocess
import sys
import threading
from typing import Iterator

import numpy as np
from PIL import Image

from conftest import REPO

START_TIMEOUT_S = 300  # compiling the buckets on a busy 2-core machine


class Server:
  def __init__(self, proc: subprocess.Popen, url: str):
    self.proc, self.url, self.lines = proc, url, []

  def output(self) -> str:
    return "".join(self.lines)


def start(directory: str, *flags: str) -> Server:
  """The server, once it has printed its URL; its output is read by a thread as it comes, so
  that neither a silent start nor a full pipe can outlast START_TIMEOUT_S."""
  proc = subprocess.Popen(
      [sys.executable, "train.py", "--mode=serve", f"--workdir={directory}", "--port=0", *flags],
      cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
      start_new_session=True)  # its workers in a group of their own, ended together
  server, started = Server(proc, ""), threading.Event()

  def read() -> None:
    for line in proc.stdout:
      server.lines.append(line)
      found = re.search(r"at (http://127\.0\.0\.1:\d+/) ", line)
      if found and not server.url:
        server.url = found.group(1)
        started.set()
    started.set()  # its end of output: it did not start

  threading.Thread(target=read, daemon=True).start()
  if not started.wait(START_TIMEOUT_S) or not server.url:
    end(server)
    raise AssertionError("the server did not start:\n" + server.output())
  return server


def end(server: Server) -> None:
  """Kills whatever is left of the server's process group, its workers included."""
  with contextlib.suppress(ProcessLookupError):
    os.killpg(server.proc.pid, signal.SIGKILL)
  server.proc.wait(timeout=60)


def stop(server: Server) -> int:
  """SIGTERM, as a process manager stops it; its status, or a failure after 60 s."""
  server.proc.send_signal(signal.SIGTERM)
  try:
    return server.proc.wait(timeout=60)
  except subprocess.TimeoutExpired:
    end(server)
    raise


@contextlib.contextmanager
def serving(directory: str, *flags: str) -> Iterator[Server]:
  server = start(directory, *flags)
  try:
    yield server
    assert stop(server) == 0, server.output()
  finally:
    end(server)


def png(array: np.ndarray) -> bytes:
  """A (H, W) or (H, W, 1) uint8 array as PNG bytes."""
  buffer = io.BytesIO()
  Image.fromarray(np.asarray(array, np.uint8).reshape(array.shape[:2])).save(buffer, "PNG")
  return buffer.getvalue()
