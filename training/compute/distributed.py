"""Multi-process runs: JAX's own distributed runtime.

Each host runs the same command; `jax.distributed.initialize` connects them, after which
`jax.devices()` lists every device of every process and one jitted step runs over all of them
(the mesh: training/compute/mesh.py).
"""

from __future__ import annotations

import errno
import os
import socket
import time

from training.errors import ConfigError

# Set by the cluster managers that jax.distributed.initialize() detects on its own.
_CLUSTER_SIZE_VARS = ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE")


class DistributedError(ConfigError):
  """A multi-process launch that cannot work: bad flags, or processes that cannot connect."""


def _cluster_launch() -> bool:
  if os.environ.get("JAX_COORDINATOR_ADDRESS"):
    return True
  return any(os.environ.get(v, "1").isdigit() and int(os.environ.get(v, "1")) > 1
             for v in _CLUSTER_SIZE_VARS)


def _check_launch(coordinator_address: str, num_processes: int, process_id: int
                  ) -> tuple[str, str]:
  """The explicit launch's flags checked together; the coordinator's (host, port)."""
  if num_processes < 1:
    raise DistributedError(f"--num_processes={num_processes} must be at least 1 (the number "
                           "of processes of the run).")
  if not 0 <= process_id < num_processes:
    raise DistributedError(
        f"--process_id={process_id} is not in 0..{num_processes - 1} (--num_processes="
        f"{num_processes}): number the processes 0, 1, ..., num_processes-1.")
  host, _, port = coordinator_address.rpartition(":")
  if not host or not port.isdigit():
    raise DistributedError(f"--coordinator_address={coordinator_address!r} is not host:port "
                           "(e.g. 10.0.0.1:1234, the address of process 0).")
  return host, port


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, auto: bool = False,
               timeout_s: int = 300) -> bool:
  """Joins a multi-process run; returns whether one was joined.

  Explicit: all of `coordinator_address` ("host:port" of process 0), `num_processes` and
  `process_id`. Otherwise, with `auto` or when the environment shows a cluster launch (SLURM,
  Open MPI, $JAX_COORDINATOR_ADDRESS), JAX detects the three itself (also on TPU pod slices).
  """
  explicit = {"coordinator_address": coordinator_address, "num_processes": num_processes,
              "process_id": process_id}
  given = [k for k, v in explicit.items() if v is not None]
  if given and len(given) < 3:
    missing = sorted(set(explicit) - set(given))
    raise DistributedError(
        f"A multi-process launch needs --coordinator_address, --num_processes and --process_id "
        f"together; missing: {', '.join('--' + m for m in missing)}. Give every process the same "
        "address (host:port of process 0) and count, and its own id 0..num_processes-1.")
  if timeout_s < 1:
    raise DistributedError(f"--distributed_timeout={timeout_s} must be at least 1 (seconds to "
                           "wait for every process).")
  if given:
    host, port = _check_launch(coordinator_address, num_processes, process_id)
    if num_processes == 1:
      return False
    # JAX aborts the whole process (uncatchable) when it cannot connect: check what can be
    # checked first, so that the common mistakes get a clear message.
    if process_id == 0:
      _check_port_free(host, int(port))
    else:
      _wait_for_coordinator(host, int(port), timeout_s, process_id)
  elif not (auto or _cluster_launch()):
    return False

  import jax
  print("Joining a multi-process run"
        + (f" as process {process_id} of {num_processes} (coordinator {coordinator_address})"
           if given else "") + f"; waiting up to {timeout_s}s for all processes. If this "
        "process aborts with DEADLINE_EXCEEDED, not every process started or they disagree on "
        "--num_processes.", flush=True)
  if jax.config.jax_cpu_collectives_implementation in (None, "none"):
    # Older jaxlibs have no cross-process collectives on CPU unless asked for.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  try:
    jax.distributed.initialize(coordinator_address, num_processes, process_id,
                               initialization_timeout=timeout_s)
  except Exception as e:  # jaxlib raises XlaRuntimeError/RuntimeError/ValueError
    where = (f"process {process_id} of {num_processes} to the coordinator at "
             f"{coordinator_address}" if given else "this process to the cluster")
    raise DistributedError(
        f"Could not connect {where} within {timeout_s}s: {str(e).splitlines()[0][:300]}\n"
        "Check that every process runs the same command with the same --coordinator_address and "
        "--num_processes, that process 0 (the coordinator) is running and its port is reachable "
        "from every host, and that each --process_id is used exactly once.") from e
  return True


def _check_port_free(host: str, port: int) -> None:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    try:
      s.bind(("", port))
    except OSError as e:
      if e.errno == errno.EADDRINUSE:
        raise DistributedError(
            f"Process 0 is the coordinator and must listen on port {port}, but the port is in "
            "use (an earlier run still alive?). Pick another --coordinator_address port for "
            "every process.") from e


def _wait_for_coordinator(host: str, port: int, timeout_s: int, process_id: int) -> None:
  deadline = time.monotonic() + timeout_s
  while True:
    try:
      socket.create_connection((host, port), timeout=2).close()
      return
    except OSError as e:
      if time.monotonic() > deadline:
        raise DistributedError(
            f"Process {process_id} could not reach the coordinator at {host}:{port} within "
            f"{timeout_s}s ({e.strerror or e}). Start process 0 (it listens there), check "
            "that --coordinator_address names process 0's host and a port open between the "
            "hosts, and give every process the same address.") from e
      time.sleep(0.5)
