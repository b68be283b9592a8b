"""Process-wide settings: JAX's, which a run needs before its first compilation, and which
library warnings are dropped."""

from __future__ import annotations

import ctypes
import logging
import os
import sys

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
  """Host allocator and XLA flags (before the backend starts), and the persistent compilation
  cache (unless `compilation_cache_dir` is "none")."""
  tune_host_allocator()
  set_xla_cpu_flags()
  import jax
  cache = (config or {}).get("compilation_cache_dir") or DEFAULT_COMPILATION_CACHE
  if cache.lower() != "none":
    jax.config.update("jax_compilation_cache_dir", os.path.expanduser(cache))
    # Cache every program: even sub-second compiles add up at start-up.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    # XLA's own caches beside it (GPU kernels and autotuning results), where jax has the option.
    if hasattr(jax.config, "jax_persistent_cache_enable_xla_caches"):
      jax.config.update("jax_persistent_cache_enable_xla_caches", "all")
