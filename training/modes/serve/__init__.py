"""`--mode=serve`: a trained model over HTTP (see docs/serve.md).

    python train.py --mode=serve --workdir=runs/cnn [--port=8000] [--host=127.0.0.1]
    python train.py --mode=serve --workdir=runs/cnn/export      # a --mode=export folder

- model.py    the checkpoint's or the export's model, compiled once per batch bucket
- batcher.py  concurrent requests' images classified in one device call
- inputs.py   a request's images read as --mode=predict reads files; what is wrong with bad ones
- app.py      the FastAPI routes, their errors and the body limit
- workers.py  --workers=N: more processes on the same socket, for more cores; the stop
              signals, which start-up heeds too
- page.html   the draw-a-digit page (self-contained: no CDN)

Needs the `serve` extra (FastAPI, uvicorn, python-multipart). May import: what the modes layer
may (training.tasks, training.store, training.compute, training.data, the base modules) and the
other modes (predict, export).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import ipaddress
import math
import os
import signal
import socket

from training.console import log
from training.modes.serve import workers
from training.errors import ConfigError, os_reason

DRAIN_S = 30  # at most this long for the requests in flight once asked to stop


@dataclasses.dataclass(frozen=True)
class Options:
  host: str = "127.0.0.1"
  port: int = 8000  # 0: any free port (the start-up note says which)
  max_batch: int = 64  # images per device call, and the largest compiled batch
  batch_window_ms: float = 2.0  # how long a lone request waits for others to join its batch
  batching: bool = True  # False: each request's images are a device call of their own
  max_body_mb: float = 20.0
  max_pixels: int = 40_000_000
  max_images: int = 256  # per request
  workers: int = 1  # processes accepting on the socket: each reads requests on a core of its own


def serve(directory: str, which: str = "best", member: int | None = None,
          options: Options = Options()) -> None:
  """Serves the model of `directory` (a trained workdir, or an export folder) until Ctrl-C or
  SIGTERM, which let the requests in flight finish: then returns (exit status 0). A signal during
  start-up stops it as well, with the workers started so far."""
  inherited = workers.inherited()
  with workers.Signals(first=not inherited) as signals:
    others, calls = workers.Workers(signals), None
    try:
      server, calls, sock = _start(directory, which, member, options, inherited, others)
      server.run(sockets=[sock])
    except workers.Stopped:
      pass  # a signal before uvicorn handled them: a stop like one while serving
    finally:
      signals.stopping = True  # a further signal waits for the workers' drain, as uvicorn's does
      others.stop()
      failed = [status for status in others.wait() if status != 0]
  if inherited:
    return
  log(f"note: stopped after {calls.calls if calls else 0} device calls of "
      f"{calls.images if calls else 0} images"
      + (f" in the first of {options.workers} processes." if options.workers > 1 else "."))
  if failed and not signals.early:  # after an early stop, a worker may have ended by SIGTERM
    raise ConfigError(f"{len(failed)} of the {options.workers - 1} other serve processes ended "
                      f"with status {failed[0]}: their lines above say why.")


def _check(options: Options) -> None:
  """The flags' values that cannot work, refused before anything starts (--max_batch: in
  model.buckets), each naming the flag, its value and what to give."""
  problems = [
      (not 0 <= options.port <= 65535,
       f"--port={options.port}: give a port from 1 to 65535, or 0 for any free one."),
      (not 0 <= options.batch_window_ms < math.inf,
       f"--batch_window_ms={options.batch_window_ms:g}: give a finite number of milliseconds, 0 "
       "or more (0: a request never waits for others to join its batch)."),
      (not 0 < options.max_body_mb < math.inf,
       f"--max_body_mb={options.max_body_mb:g}: give a finite number of megabytes above 0 (the "
       "default is 20); 0 or less would refuse every request."),
      (options.max_pixels < 1, f"--max_pixels={options.max_pixels}: give 1 or more pixels."),
      (options.max_images < 1,
       f"--max_images={options.max_images}: give 1 or more images per request."),
      (options.workers < 1, f"--workers={options.workers}: give 1 or more processes."),
  ]
  for wrong, message in problems:
    if wrong:
      raise ConfigError(message)


def _start(directory: str, which: str, member: int | None, options: Options,
           inherited: socket.socket | None, others: workers.Workers) -> tuple:
  """(uvicorn's server, the batcher, the listening socket): the flags checked, the model loaded
  and compiled, the other workers started (by the first process), the start-up notes said."""
  try:
    import uvicorn
    from training.modes.serve import app, batcher, inputs, model
    import multipart  # noqa: F401  python-multipart: FastAPI's form parsing
  except ImportError as e:
    raise ConfigError(f"--mode=serve needs FastAPI, uvicorn and python-multipart ({e}): "
                      "pip install -e '.[serve]'.") from None
  _check(options)
  # First: a port in use costs no compilation.
  sock = inherited or _listen(options.host, options.port)
  _leave_a_core_to_the_server()
  inputs.quiet_image_warnings()
  others.signals.check()
  served = model.load(directory, which, member, options.max_batch)
  others.signals.check()
  if not inherited:
    others.start(sock, options.workers - 1)
  calls = batcher.Batcher(served.probabilities, options.max_batch,
                          options.batch_window_ms / 1000, options.batching)
  limits = app.Limits(int(options.max_body_mb * 2**20), options.max_pixels, options.max_images)
  config = uvicorn.Config(app.build(served, calls, limits), log_config=None, log_level="critical",
                          access_log=False, timeout_graceful_shutdown=DRAIN_S, lifespan="on")
  server = _server(config, others)
  # What start-up made (JAX, Flax, the model: millions of objects) lives as long as the server:
  # out of the garbage collector's sight, its full collections no longer walk them all.
  gc.collect()
  gc.freeze()
  others.signals.check()
  if not inherited:
    _start_notes(directory, served, options, sock.getsockname()[:2])
  return server, calls, sock


def _leave_a_core_to_the_server() -> None:
  """XLA:CPU's computations on all but one core (before JAX starts its backend): with all of
  them, a large batch's call takes every core and the event loop, which reads and answers the
  requests, waits for it instead of working beside it (on 2 cores, 64 clients got half the
  requests/s of 8; docs/performance.md). Other backends ignore these flags; XLA_FLAGS that set
  them already win."""
  flags = os.environ.get("XLA_FLAGS", "")
  if "intra_op_parallelism_threads" not in flags and "multi_thread_eigen" not in flags:
    threads = max(1, (os.cpu_count() or 2) - 1)
    os.environ["XLA_FLAGS"] = (f"{flags} --xla_cpu_multi_thread_eigen={str(threads > 1).lower()} "
                               f"intra_op_parallelism_threads={threads}").strip()


def _listen(host: str, port: int) -> socket.socket:
  """A socket bound and listening on host:port; a busy port or a bad host is one error line."""
  try:
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    sock.listen(2048)
  except OSError as e:
    raise ConfigError(f"Cannot listen on {host}:{port}: {os_reason(e)}; pass another --port "
                      "(0: any free one) or --host.") from None
  return sock


def _start_notes(directory: str, served, options: Options, bound: tuple) -> None:
  host, port = bound
  shown = f"[{host}]" if ":" in host else host
  what = served.description.get("model", "model")
  source = served.description.get("source", {})
  log(f"note: serving {what} of {directory} ({source.get('checkpoint', 'export')} checkpoint, "
      f"step {source.get('step', '?')}) at http://{shown}:{port}/ : draw a digit there; "
      "POST /predict, GET /health, /model, /docs.")
  if _loopback(host):
    log("note: listening on loopback only: other machines cannot connect; --host=0.0.0.0 "
        "serves them (there is no authentication: only on a network you trust).")
  else:
    log(f"note: listening on {host}: any machine that reaches this one can use the model; "
        "there is no authentication.")
  log(f"note: batches of up to {options.max_batch} images (compiled for "
      f"{', '.join(map(str, served.buckets))}), "
      + (f"a {options.batch_window_ms:g} ms batching window" if options.batching else
         "batching off") + "; Ctrl-C or SIGTERM stop it after the requests in flight.")


def _loopback(host: str) -> bool:
  try:
    return ipaddress.ip_address(host).is_loopback
  except ValueError:
    return host == "localhost"


def _server(config, others: workers.Workers):
  """uvicorn's server, whose Ctrl-C/SIGTERM drain ends with exit status 0: uvicorn raises the
  signal again after its shutdown, which would end the process as killed by it. The first
  process passes Ctrl-C and SIGTERM on to the other workers, as one SIGTERM each (they ignore
  Ctrl-C, which the terminal sends them too); a worker says when it accepts connections."""
  import uvicorn

  class Server(uvicorn.Server):
    async def startup(self, sockets=None):
      await super().startup(sockets)
      workers.ready()

    def handle_exit(self, sig, frame):
      others.stop()
      super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self):
      previous = {s: signal.signal(s, self.handle_exit) for s in others.signals.handled}
      if others.signals.pending:  # a signal since start-up's last check
        self.handle_exit(signal.SIGTERM, None)
      try:
        yield
      finally:
        others.signals.stopping = True  # a signal from now on waits for the workers' drain
        for s, handler in previous.items():
          signal.signal(s, handler)
  return Server(config)
