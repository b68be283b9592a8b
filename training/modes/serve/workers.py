"""`--workers=N`: N server processes accepting on one listening socket.

One process's event loop reads, decodes and answers every request on one core (Python's GIL);
under load that loop is what limits, not the model (docs/performance.md, "Serving"). More
processes put more cores on it, as uvicorn's and gunicorn's workers do. The first process binds
the socket and loads the model (so a bad port or run is one error, before anything starts), then
starts the others as `train.py` again with the same flags, which inherit the socket and each
load and compile the model for themselves; it serves once all of them can. Ctrl-C reaches every
process of the terminal's group; SIGTERM to the first is passed on. Each process batches its
own requests: the kernel hands each new connection to whichever process accepts it first.
"""

from __future__ import annotations

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


class Workers:
  """The other processes, started by the first with the same command line."""

  def __init__(self, sock: socket.socket, count: int):
    self.procs: list[subprocess.Popen] = []
    self.stopped: list[subprocess.Popen] = []
    pipes = []
    for _ in range(count):
      read_end, write_end = os.pipe()
      env = {**os.environ, SOCKET_FD: str(sock.fileno()), READY_FD: str(write_end)}
      self.procs.append(subprocess.Popen([sys.executable, *sys.orig_argv[1:]], env=env,
                                         pass_fds=(sock.fileno(), write_end)))
      os.close(write_end)
      pipes.append(read_end)
    for k, read_end in enumerate(pipes):
      started = os.read(read_end, 1)  # empty when the worker ended before it could serve
      os.close(read_end)
      if not started:
        self.stop()
        raise ConfigError(f"serve worker {k + 1} of {count} ended before it could serve "
                          f"(status {self.procs[k].wait()}): its lines above say why; "
                          "try --workers=1.")

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
