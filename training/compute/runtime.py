"""Process-wide settings: JAX's, which a run needs before its first compilation, and which
library warnings are dropped."""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import threading

import ml_collections

DEFAULT_COMPILATION_CACHE = os.path.join("~", ".cache", "mnist_flax", "jax")


# Without this, XLA:CPU's per-step scratch buffer (143 MB for the max-pool CNN) is a fresh mmap
# each step: ~35,000 page faults and as much system as user time. Keeping it in the reused main
# heap (one arena, no mmap, no trimming) made steps 1.5x faster. Affects only later allocations.
_MALLOPT = ((-8, 1), (-4, 0), (-1, 2**31 - 1))  # M_ARENA_MAX, M_MMAP_MAX, M_TRIM_THRESHOLD
# YNNPACK's convolutions (the weight gradient above all) were slower than Eigen's on CPU here:
# keep its other fusions, take convolutions off its list (conv nets' steps 1.3x faster).
_CPU_XLA_FLAGS = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"


def drop_library_warnings(*fragments: str) -> None:
  """Drops the absl log records (what tfds and orbax warn through) that contain any of
  `fragments`: warnings about what this code does on purpose, or that its own error explains."""
  logging.getLogger("absl").addFilter(
      lambda r: not any(f in r.getMessage() for f in fragments))


def _library_dirs() -> tuple[str, ...]:
  """Where orbax and tensorstore live, for those of them that are imported."""
  return tuple(os.path.dirname(m.__file__) + os.sep for m in (
      sys.modules.get("orbax.checkpoint"), sys.modules.get("tensorstore"))
      if m is not None and getattr(m, "__file__", None))


def _from_orbax(e: BaseException | None) -> bool:
  """Whether `e` came from orbax or tensorstore: it, or an exception it wraps, was raised in
  their Python code, or it was set on a future by tensorstore's native code (it has no frames).
  Walks the frames without reading source files: it also runs while Python shuts down."""
  if e is not None and e.__traceback__ is None:
    return True
  dirs = _library_dirs()
  seen = 0
  while e is not None and seen < 20:
    tb = e.__traceback__
    while tb is not None:
      if tb.tb_frame.f_code.co_filename.startswith(dirs):
        return True
      tb = tb.tb_next
    e, seen = e.__cause__ or e.__context__, seen + 1
  return False


def _quiet_orphaned_reads() -> None:
  """When a restore or a save fails, tensorstore's reads or writes of the other arrays finish on
  their own, and each reports its failure ("Event loop is closed" once orbax's loop is gone, or
  the read or write error itself) through sys.excepthook, threading.excepthook,
  sys.unraisablehook or asyncio's log, and orbax's threads log it with a traceback: screens of
  tracebacks under the one clear error that `restore` or `save`/`wait`/`close` raise. Drop just
  those."""
  if getattr(sys.excepthook, "quiets_orphaned_reads", False):
    return  # installed already (setup called twice in one process)
  loop_closed = lambda e: isinstance(e, RuntimeError) and str(e) == "Event loop is closed"
  # Dropped only where nobody could have caught them, and only orbax's own: an unrelated error
  # reported the same way (a __del__ that fails) still shows. What matters of a failed read or
  # write reaches the caller through `restore`, or `wait` (which every save goes through).
  orphaned = lambda e: loop_closed(e) or _from_orbax(e)

  def unless(drop, previous, exception_of):
    def hook(*args):
      try:
        dropped = drop(exception_of(*args))
      except Exception:  # never let the filter itself fail (it may run at shutdown)
        dropped = False
      if not dropped:
        previous(*args)
    hook.quiets_orphaned_reads = True
    return hook

  sys.excepthook = unless(loop_closed, sys.excepthook, lambda kind, value, tb: value)
  threading.excepthook = unless(orphaned, threading.excepthook, lambda a: a.exc_value)
  sys.unraisablehook = unless(orphaned, sys.unraisablehook, lambda a: a.exc_value)
  # Whatever asyncio logs of them ("exception was never retrieved", or "unhandled exception
  # during asyncio.run() shutdown" with orbax 0.11.17) was caught by nobody.
  logging.getLogger("asyncio").addFilter(
      lambda r: not (r.exc_info and orphaned(r.exc_info[1])))
  # Orbax's threads log the failure of a save (each thread it went through, with a traceback)
  # before `wait` raises it; that raise is what the user sees, as one CheckpointWriteError.
  logging.getLogger("absl").addFilter(
      lambda r: not (r.levelno >= logging.ERROR and r.pathname.startswith(_library_dirs())
                     and r.exc_info and r.exc_info[1] is not None
                     and _from_orbax(r.exc_info[1])))


# Library warnings about what this code does on purpose, or that its own errors explain: orbax's
# mid-epoch saves have no validation metric and evaluation opens checkpoints read-only; tfds
# recommends OpenCV for a decode that is cached, and warns of a missing dataset_info.json above
# our own error that says what is missing.
_DROPPED_WARNINGS = ("did not provide metrics", "read_only=True", "directory is read only",
                     "OpenCV is not installed", "has no dataset_info.json")


def quiet_library_noise() -> None:
  """The process-wide filters: the library warnings above, and the orphaned reports of a failed
  checkpoint read or write. Installed once at start-up (`setup`), never by an import."""
  if not getattr(quiet_library_noise, "done", False):
    drop_library_warnings(*_DROPPED_WARNINGS)
    _quiet_orphaned_reads()
    quiet_library_noise.done = True


def tune_host_allocator() -> None:
  """glibc malloc settings for XLA's large per-step buffers (a no-op off glibc)."""
  if sys.platform.startswith("linux"):
    try:
      libc = ctypes.CDLL("libc.so.6")
    except OSError:
      return
    for param, value in _MALLOPT:
      libc.mallopt(param, value)


def set_xla_cpu_flags() -> None:
  """Adds the CPU flags to XLA_FLAGS; call before JAX starts its backend. Opt out with
  MNIST_FLAX_NO_XLA_TUNING=1 (for instance on a jaxlib that does not know the flag)."""
  if os.environ.get("MNIST_FLAX_NO_XLA_TUNING"):
    return
  import jaxlib
  version = tuple(int(p) for p in jaxlib.__version__.split(".")[:2])
  flags = os.environ.get("XLA_FLAGS", "")
  if version >= (0, 10) and "ynn_fusion_type" not in flags:  # older jaxlibs lack the flag
    os.environ["XLA_FLAGS"] = f"{flags} {_CPU_XLA_FLAGS}".strip()


def setup(config: ml_collections.ConfigDict | None = None) -> None:
  """Host allocator and XLA flags (before the backend starts), the library-noise filters, and
  the persistent compilation cache (unless `compilation_cache_dir` is "none")."""
  tune_host_allocator()
  quiet_library_noise()
  set_xla_cpu_flags()
  import jax
  cache = (config or {}).get("compilation_cache_dir") or DEFAULT_COMPILATION_CACHE
  if cache.lower() != "none":
    jax.config.update("jax_compilation_cache_dir", os.path.expanduser(cache))
    # Cache every program: even sub-second compiles add up at start-up.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    # XLA's own caches beside it (GPU kernels and autotuning results; jax 0.7.1 has the option).
    jax.config.update("jax_persistent_cache_enable_xla_caches", "all")
