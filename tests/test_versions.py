"""The code's branches on the installed jax: each is taken by the suite at one end of the
supported range (.ci/run runs the fast suite at the newest releases and at .ci/oldest.txt's), and
each test here checks the branch this install takes does what it is there for."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jaxlib

from conftest import REPO

# A child process that sets up the run as train.py does, then compiles and runs one program.
_CHILD = """
import json, os, sys
from training.compute import runtime
runtime.setup({"compilation_cache_dir": sys.argv[1]})
import jax, jax.numpy as jnp
value = float(jax.jit(lambda x: jnp.tanh(x).sum())(jnp.ones(8)))
print(json.dumps({"xla_flags": os.environ.get("XLA_FLAGS", ""), "value": value,
                  "xla_caches": getattr(jax.config, "jax_persistent_cache_enable_xla_caches",
                                        None)}))
"""


def _run_child(cache_dir: str) -> dict:
  env = {k: v for k, v in os.environ.items()
         if k not in ("XLA_FLAGS", "MNIST_FLAX_NO_XLA_TUNING")}
  done = subprocess.run([sys.executable, "-c", _CHILD, cache_dir], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_cpu_flags_go_only_to_a_jaxlib_that_knows_them(tmp_path):
  """XLA aborts on a flag it does not know, so the flag is set from jaxlib 0.10 on and left out
  before: either way the backend starts and computes."""
  out = _run_child(str(tmp_path / "cache"))
  assert abs(out["value"] - 8 * 0.7615941559557649) < 1e-5
  newer = tuple(int(p) for p in jaxlib.__version__.split(".")[:2]) >= (0, 10)
  assert ("ynn_fusion_type" in out["xla_flags"]) == newer, (jaxlib.__version__, out)


def test_the_compilation_cache_is_written_with_xla_caches(tmp_path):
  """The persistent cache fills, with XLA's own caches on (an option jax has had since the lower
  bound)."""
  cache = tmp_path / "cache"
  out = _run_child(str(cache))
  assert any(cache.iterdir()), "no compiled program was cached"
  assert out["xla_caches"] == "all"
