"""Process-wide JAX settings that a run needs before its first compilation."""

from __future__ import annotations

import os

import jax
import ml_collections

DEFAULT_COMPILATION_CACHE = os.path.join("~", ".cache", "mnist_flax", "jax")


def setup(config: ml_collections.ConfigDict) -> None:
  """Turns on the persistent compilation cache (unless `compilation_cache_dir` is "none")."""
  cache = config.get("compilation_cache_dir") or DEFAULT_COMPILATION_CACHE
  if cache.lower() != "none":
    jax.config.update("jax_compilation_cache_dir", os.path.expanduser(cache))
    # Cache every program: even sub-second compiles add up at start-up.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
