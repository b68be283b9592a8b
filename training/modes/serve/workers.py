"""`--workers=N`: N server processes accepting on one listening socket.

One process's event loop reads, decodes and answers every request on one core (Python's GIL);
under load that loop is what limits, not the model (docs/performance.md, "Serving"). More
processes put more cores on it, as uvicorn's and gunicorn's workers do. The first process binds
the socket and loads the model (so a bad port or run is one error, before anything starts), then
starts the others as `train.py` again with the same flags, which inherit the socket and each
load and compile the model for themselves; it serves once all of them can. The first process
alone answers Ctrl-C and SIGTERM, at any time, start-up included (`Signals`), and passes each
stop on to the others as one SIGTERM; they ignore Ctrl-C, which the terminal sends the whole
process group. Each process batches its own requests: the kernel hands each new connection to
whichever process accepts it first.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys

from training.errors import ConfigError

SOCKET_FD = "MNIST_FLAX_SERVE_SOCKET_FD"  # set in a worker: the listening socket it inherits
READY_FD = "MNIST_FLAX_SERVE_READY_FD"  # set in a worker: the pipe it writes one byte to


def inherited() -> socket.socket | None:
  """In a worker started by `start`: the listening socket it shares; else None."""
  fd = os.environ.get(SOCKET_FD)
  return socket.socket(fileno=int(fd)) if fd else None


def ready() -> None:
  """Tells the first process this worker accepts connections (a no-op in the first)."""
  fd = os.environ.pop(READY_FD, None)
  if fd:
    os.write(int(fd), b"1")
    os.close(int(fd))


class Stopped(Exception):
  """Ctrl-C or SIGTERM while uvicorn did not handle them: a stop, as one while serving is."""


class Signals:
  """Ctrl-C and SIGTERM (a worker: SIGTERM; it ignores Ctrl-C) from the start of serve, before
  any worker starts, until uvicorn handles them: otherwise a signal then killed the first process
  and left its workers serving, or gave a KeyboardInterrupt traceback. A signal is kept for the
  next `check`, between two steps of the start-up, or ends a wait for the workers (`waiting`) at
  once: raised anywhere, it could be caught in a library (a garbage-collection callback, orbax's
  restore) and printed. Once `stopping`, a further signal waits for the workers' drain."""

  def __init__(self, first: bool):
    self.handled = (signal.SIGINT, signal.SIGTERM) if first else (signal.SIGTERM,)
    self.pending = self.waiting = self.stopping = self.early = False

  def __enter__(self) -> Signals:
    self.previous = {s: signal.signal(s, self._signal) for s in self.handled}
    return self

  def __exit__(self, *_) -> None:
    for s, handler in self.previous.items():
      signal.signal(s, handler)

  def _signal(self, sig, frame) -> None:
    self.pending = True
    if self.waiting:
      self.check()

  def check(self) -> None:
    """Raises `Stopped` if a signal came since start-up began (once)."""
    if self.pending and not self.stopping:
      self.stopping = self.early = True
      raise Stopped()

  @contextlib.contextmanager
  def interruptible(self):
    """A block of waiting, which a signal ends with `Stopped`."""
    self.waiting = True
    try:
      self.check()
      yield
    finally:
      self.waiting = False


class Workers:
  """The other processes, started by the first with the same command line."""

  def __init__(self, signals: Signals):
    self.signals = signals
    self.procs: list[subprocess.Popen] = []
    self.stopped: list[subprocess.Popen] = []

  def start(self, sock: socket.socket, count: int) -> None:
    """Starts `count` workers and waits until each accepts connections (a signal meanwhile:
    `Stopped`, and the caller stops those started)."""
    pipes: list[int] = []
    try:
      for _ in range(count):
        self._spawn(sock, pipes)
      for k, read_end in enumerate(pipes):
        with self.signals.interruptible():
          started = os.read(read_end, 1)  # empty when the worker ended before it could serve
        if not started:
          self.stop()
          raise ConfigError(f"serve worker {k + 1} of {count} ended before it could serve "
                            f"(status {self.procs[k].wait()}): its lines above say why; "
                            "try --workers=1.")
    finally:
      for read_end in pipes:
        os.close(read_end)

  def _spawn(self, sock: socket.socket, pipes: list[int]) -> None:
    """One worker, and its ready pipe's read end added to `pipes`. It starts with Ctrl-C
    ignored, for good: the first process passes Ctrl-C on (a Ctrl-C in the millisecond of the
    start is lost, as the worker's is)."""
    read_end, write_end = os.pipe()
    pipes.append(read_end)
    env = {**os.environ, SOCKET_FD: str(sock.fileno()), READY_FD: str(write_end)}
    # An ignored signal is what a new process inherits, where a handler is reset to the default.
    handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
      self.procs.append(subprocess.Popen([sys.executable, *sys.orig_argv[1:]], env=env,
                                         pass_fds=(sock.fileno(), write_end)))
    finally:
      signal.signal(signal.SIGINT, handler)
      os.close(write_end)

  def stop(self) -> None:
    """Asks each worker, once, to drain its requests and end: a second SIGTERM would find
    the default handler back in place once its server has stopped, and kill it."""
    for proc in self.procs:
      if proc.poll() is None and proc not in self.stopped:
        proc.send_signal(signal.SIGTERM)
        self.stopped.append(proc)

  def wait(self) -> list[int]:
    """Each worker's exit status, once all have ended."""
    return [proc.wait() for proc in self.procs]
