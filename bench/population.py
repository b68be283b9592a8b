"""N members in one population against N separate runs: the train step's cost, side by side.

    python bench/population.py [--configs=cnn,mlp] [--members=4] [--repeats=5] [--steps=N]

For each config: one model's train step (what each of N separate runs takes, N times over), and
the population's step of N members (`--config.population=N`) with each way the members can run
in the one program: `vmap` (batched: a batched convolution becomes a grouped one) and `loop`
(`lax.map`, one member after another). The steps are the trainer's own (`DeviceSteps`, built
as `training/modes/train/setup.py` builds them: the task's state, each member's own data order,
the state donated) on a device-resident MNIST-sized random dataset. Everything is compiled
first, then timed in interleaved rounds (every variant once a round, in an order rotated from
round to round, so that a loaded machine's drift hits all alike).

Prints the environment and one markdown table: the median ms of one step of the N members (for
the single model: N of its steps, as N runs would take), the range, and the ratio to N separate
steps; below 1, the population is faster than the runs one after another. Also the first call
(compilation included). Measured numbers: docs/performance.md ("Populations").
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

N_EXAMPLES = 60_000  # MNIST-sized random training set (uint8), resident on the device
IMAGE_SHAPE, NUM_CLASSES = (28, 28, 1), 10


class _Variant:
  """One config's driver and state: a single model (members=0) or a population."""

  def __init__(self, config_name: str, size: int, mode: str, steps: int, mesh, data):
    import jax
    from training import members, tasks
    from training.compute import device, optim
    config = importlib.import_module(f"configs.{config_name}").get_config()
    config.population = max(size, 1)
    self.size, self.steps, self.data = size, steps, data
    spe = N_EXAMPLES // config.batch_size
    schedule = optim.make_schedule(config, spe)
    population = members.Population.of(config)
    task = tasks.get(config, NUM_CLASSES, IMAGE_SHAPE, population)
    self.driver = device.DeviceSteps(mesh, config.batch_size, config.eval_batch_size,
                                     NUM_CLASSES, steps_per_epoch=spe, **task.device_steps(),
                                     members=size, mode=mode)
    init_key, train_key, shuffle = population.keys()
    self.state = self.driver.put_state(task.initial_state(schedule, init_key, train_key))
    self.perm = self.driver.permutation(shuffle, 1, N_EXAMPLES)
    self.i = 0
    jax.block_until_ready(self.state)

  def run(self) -> float:
    """Seconds for `steps` steps (the state's last update waited for)."""
    import jax
    t = time.perf_counter()
    for _ in range(self.steps):
      self.state, metrics = self.driver.train_steps(self.state, *self.data, self.perm,
                                                    self.i % 400, 1)
      self.i += 1
    jax.block_until_ready((self.state, metrics))
    return time.perf_counter() - t


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  ap.add_argument("--configs", default="cnn,mlp")
  ap.add_argument("--members", type=int, default=4)
  ap.add_argument("--modes", default="vmap,loop", help="how the population's members run")
  ap.add_argument("--repeats", type=int, default=5, help="interleaved timing rounds")
  ap.add_argument("--steps", type=int, default=0, help="steps per variant and round "
                  "(0: 20 on GPU/TPU, 4 on CPU)")
  args = ap.parse_args()
  from training.compute import mesh as mesh_lib
  from training.compute import runtime
  runtime.setup(None)
  import jax
  import numpy as np
  from step_ablation import environment
  steps = args.steps or (4 if jax.default_backend() == "cpu" else 20)
  mesh = mesh_lib.make_mesh((-1,), ("data",))
  rng = np.random.default_rng(0)
  data = jax.device_put(
      (rng.integers(0, 256, (N_EXAMPLES, *IMAGE_SHAPE), dtype=np.uint8),
       rng.integers(0, NUM_CLASSES, N_EXAMPLES).astype(np.int32)),
      jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
  print(environment(), flush=True)
  variants, first = {}, {}
  for config in args.configs.split(","):
    for mode in ["single", *args.modes.split(",")]:
      name = f"{config}/{mode}"
      t = time.perf_counter()
      v = _Variant(config, 0 if mode == "single" else args.members, mode, steps, mesh, data)
      v.run()  # compiles
      first[name] = time.perf_counter() - t
      v.run()  # warm
      variants[name] = v
      print(f"  compiled {name} in {first[name]:.1f}s", file=sys.stderr, flush=True)
  times = _rounds(variants, args.repeats, steps, args.members)
  _table(times, first, args.members, args.repeats, steps)


def _rounds(variants: dict, repeats: int, steps: int, n: int) -> dict[str, list[float]]:
  """ms of one step of N members (a single model's: N of its steps), every round."""
  names, times = list(variants), {k: [] for k in variants}
  for r in range(repeats):
    k = r % len(names)
    for name in names[k:] + names[:k]:
      ms = variants[name].run() / steps * 1e3
      times[name].append(ms * (n if name.endswith("/single") else 1))
    print(f"  round {r + 1}/{repeats}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in
                                                       times.items()), file=sys.stderr, flush=True)
  return times


def _table(times: dict, first: dict, n: int, repeats: int, steps: int) -> None:
  print(f"\nms for one step of {n} members: medians over {repeats} interleaved rounds of "
        f"{steps} steps (single: {n} steps of one model, as {n} separate runs take them)\n")
  print(f"| config | how | ms per step of {n} members | range | x {n} separate runs | "
        "first call s |")
  print("|---|---|---|---|---|---|")
  for name, values in times.items():
    config, how = name.split("/")
    base = statistics.median(times[f"{config}/single"])
    med = statistics.median(values)
    label = f"{n} separate runs" if how == "single" else f"population, {how}"
    print(f"| `{config}` | {label} | {med:.1f} | {min(values):.1f}-{max(values):.1f} | "
          f"{med / base:.2f} | {first[name]:.1f} |")


if __name__ == "__main__":
  main()
