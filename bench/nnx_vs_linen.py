"""The same network written in flax.linen and in flax.nnx: train-step time side by side.

    python bench/nnx_vs_linen.py [--steps=200] [--rounds=5] [--batch=128] [--dropout=0.2]

The Linen side is nets/mlp.py's MLP with batch norm and dropout (configs/mlp.py's widths); the
NNX side, `MLP` below, is the same layers under the same names, run through nets/nnx_bridge.py
(what a model registered in nets/ gets). Each takes the project's own jitted train step
(training/tasks/classify/steps.py) on one fixed batch; the rounds alternate the models, so the
machine's drift falls on all of them, and the table gives each one's median milliseconds per
step.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time
from typing import Any, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # run as a script: the project's packages

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

import nets  # noqa: E402
from configs import common  # noqa: E402
from training.compute import optim  # noqa: E402
from training.tasks.classify import steps  # noqa: E402
from training.tasks.classify import state as state_lib  # noqa: E402
from training.tasks import classify  # noqa: E402


class MLP(nnx.Module):
  """nets/mlp.py's MLP in NNX, its layers named as Linen names them, so that the two share one
  parameter tree (tests/test_nnx.py runs both on the same weights)."""

  def __init__(self, num_classes: int = 10, hidden: Sequence[int] = (512, 512),
               dropout: float = 0.0, batch_norm: bool = False, dtype: Any = jnp.float32, *,
               input_shape: tuple[int, int, int], rngs: nnx.Rngs):
    sizes = [int(np.prod(input_shape)), *hidden]
    self.hidden, self.batch_norm, self.dtype = len(hidden), batch_norm, dtype
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
      setattr(self, f"Dense_{i}", nnx.Linear(a, b, use_bias=not batch_norm, dtype=dtype,
                                             rngs=rngs))
      if batch_norm:
        setattr(self, f"BatchNorm_{i}", nnx.BatchNorm(b, momentum=0.9, dtype=dtype, rngs=rngs))
    setattr(self, f"Dense_{len(hidden)}", nnx.Linear(sizes[-1], num_classes, dtype=dtype,
                                                     rngs=rngs))
    self.dropout = nnx.Dropout(dropout)

  def __call__(self, x: jax.Array, *, train: bool, rngs: nnx.Rngs | None = None) -> jax.Array:
    x = x.reshape((x.shape[0], -1)).astype(self.dtype)
    for i in range(self.hidden):
      x = getattr(self, f"Dense_{i}")(x)
      if self.batch_norm:
        x = getattr(self, f"BatchNorm_{i}")(x, use_running_average=not train)
      x = jax.nn.relu(x)
      x = self.dropout(x, rngs=rngs) if train else x  # as nets/mixer.py, for jax2onnx
    return getattr(self, f"Dense_{self.hidden}")(x).astype(jnp.float32)


def models(fields: dict) -> dict[str, Any]:
  """The Linen MLP and its NNX twin."""
  found = {"linen": nets.create("mlp", **fields),
           "nnx (nets/nnx_bridge.py)": nets.nnx_bridge.wrap(MLP, fields)}
  return found


def timed_step(model: Any, config: Any, batch: dict):
  """A function that runs `n` train steps of `model` and returns the seconds they took."""
  tx = optim.make_optimizer(config, optim.make_schedule(config, steps_per_epoch=100))
  state = state_lib.create_train_state(model, tx, (28, 28, 1), jax.random.PRNGKey(0),
                                       jax.random.PRNGKey(1), ema=False)
  step = jax.jit(functools.partial(steps.train_step, **classify.step_options(config)))
  box = [step(state, batch, state.rng)[0]]  # compiled here

  def run(n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
      box[0], metrics = step(box[0], batch, box[0].rng)
    jax.block_until_ready(metrics["loss"])
    return time.perf_counter() - start
  return run


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  ap.add_argument("--steps", type=int, default=200, help="steps per round and model")
  ap.add_argument("--rounds", type=int, default=5)
  ap.add_argument("--batch", type=int, default=128)
  ap.add_argument("--dropout", type=float, default=0.2, help="the rate (the Linen MLP's dropout "
                  "is nets/layers.py's, the NNX one's nnx.Dropout)")
  args = ap.parse_args()
  config = common.base("mlp")
  fields = {"hidden": (512, 512), "dropout": args.dropout, "batch_norm": True}
  rng = np.random.default_rng(0)
  batch = {"image": rng.integers(0, 256, (args.batch, 28, 28, 1), dtype=np.uint8),
           "label": rng.integers(0, 10, (args.batch,), dtype=np.int32)}
  runs = {name: timed_step(model, config, batch) for name, model in models(fields).items()}
  times = {name: [] for name in runs}
  for r in range(args.rounds):
    for name in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
      times[name].append(runs[name](args.steps) / args.steps * 1e3)
  print(f"MLP {fields['hidden']} with batch norm, dropout {args.dropout}, batch {args.batch}, "
        f"{os.cpu_count()} CPU cores, jax {jax.__version__}, flax "
        f"{__import__('flax').__version__}; ms per train step, median of {args.rounds} rounds:")
  base = statistics.median(times["linen"])
  for name, ms in times.items():
    print(f"  {name:24s} {statistics.median(ms):7.3f} ms  ({statistics.median(ms) / base:.2f}x)")


if __name__ == "__main__":
  main()
