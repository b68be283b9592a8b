"""A real `train.py --mode=serve` process on 127.0.0.1 for the tests: started on a free port, its
URL read from its start-up note, stopped with SIGTERM, which must end it with status 0."""

from __future__ import annotations

import contextlib
import io
import re
import signal
import subprocess
import sys
import threading
import time
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
  proc = subprocess.Popen(
      [sys.executable, "train.py", "--mode=serve", f"--workdir={directory}", "--port=0", *flags],
      cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  lines, deadline = [], time.time() + START_TIMEOUT_S
  while time.time() < deadline:
    line = proc.stdout.readline()
    if not line:
      break
    lines.append(line)
    found = re.search(r"at (http://127\.0\.0\.1:\d+/) ", line)
    if found:
      server = Server(proc, found.group(1))
      server.lines = lines
      # The rest of its output, read as it comes, so that the pipe never fills.
      threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
      return server
  proc.kill()
  raise AssertionError("the server did not start:\n" + "".join(lines) + proc.stdout.read())


def stop(server: Server) -> int:
  server.proc.send_signal(signal.SIGTERM)
  return server.proc.wait(timeout=60)


@contextlib.contextmanager
def serving(directory: str, *flags: str) -> Iterator[Server]:
  server = start(directory, *flags)
  try:
    yield server
  finally:
    if server.proc.poll() is None:
      assert stop(server) == 0, server.output()


def png(array: np.ndarray) -> bytes:
  """A (H, W) or (H, W, 1) uint8 array as PNG bytes."""
  buffer = io.BytesIO()
  Image.fromarray(np.asarray(array, np.uint8).reshape(array.shape[:2])).save(buffer, "PNG")
  return buffer.getvalue()
