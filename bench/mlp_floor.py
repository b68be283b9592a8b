"""How far the MLP's train step is from its floor, in this project (XLA) and in PyTorch.

    python bench/mlp_floor.py [--config=configs/mlp.py] [--repeats=3] [--rounds=10]

An MLP train step is matrix products (per layer: forward and weight gradient, and the input
gradient for all but the first layer), elementwise work and the optimizer's update. For each
framework this times, per step, the whole train step, those products alone, and the optimizer's
update alone, on the config's shapes, on whatever backend is present. Each framework runs in its
own subprocess (so their thread pools do not meet), interleaved over the repeats; within one, the
three alternate over the rounds. The products plus the update are a floor that no float32 step of
this network goes below with that framework's kernels, so PyTorch's step over this project's floor
bounds how much faster than PyTorch this project's MLP can be. Images and labels are random:
timings do not depend on them.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import trainers  # noqa: E402  (bench/trainers.py)
from training.compute import build
from training.tasks import classify
from training.tasks.classify import state as state_lib, steps
from training.compute import device

PARTS = ("step", "matmuls", "update")
IMAGE_SHAPE, NUM_CLASSES, N_TRAIN = (28, 28, 1), 10, 60_000  # MNIST-sized random data


def matmuls(x, kernels):
  """The products of one MLP step, with `@` and `.T` only, so jnp and torch both run it."""
  acts = [x]
  for k in kernels:
    acts.append(acts[-1] @ k)
  grad, out = acts[-1], []
  for i in reversed(range(len(kernels))):
    out.append(acts[i].T @ grad)  # weight gradient
    if i:
      grad = grad @ kernels[i].T  # input gradient; the images need none
  return out


def _rounds(fns: dict, rounds: int, calls: int, sync) -> dict[str, list[float]]:
  ms = {n: [] for n in fns}
  for r in range(rounds):
    names = list(fns)[r % len(fns):] + list(fns)[:r % len(fns)]  # rotate who goes first
    for n in names:
      t = time.perf_counter()
      for i in range(calls):
        out = fns[n](i)
      sync(out)
      ms[n].append((time.perf_counter() - t) / calls * 1e3)
  return ms


def _shapes(config) -> list[tuple[int, int]]:
  widths = [math.prod(IMAGE_SHAPE), *config.model.hidden, NUM_CLASSES]
  return list(zip(widths[:-1], widths[1:]))


def run_jax(config, rounds: int, calls: int) -> dict:
  import jax
  import numpy as np
  import optax
  from training.compute import mesh as mesh_lib
  from training.compute import optim
  from training.compute import runtime
  runtime.setup(config)
  n, rng = N_TRAIN, np.random.default_rng(0)
  model = build.build_model(config, NUM_CLASSES)
  tx = optim.make_optimizer(config, optim.make_schedule(config, n // config.batch_size))
  d = device.DeviceSteps(mesh_lib.make_mesh(config.mesh_shape, config.mesh_axes),
                        config.batch_size, config.eval_batch_size, NUM_CLASSES,
                        **steps.device_steps(**classify.step_options(config)))
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
  box = [d.put(state_lib.create_train_state(model, tx, IMAGE_SHAPE, k1, k2))]
  images, labels = d.put_train(rng.integers(0, 256, (n, *IMAGE_SHAPE), np.uint8),
                               rng.integers(0, NUM_CLASSES, n).astype(np.int32))
  perm = d.permutation(k3, 0, n)

  def step(i):
    box[0], metrics = d.train_steps(box[0], images, labels, perm, i, 1)
    return metrics

  x = jax.device_put(rng.random((config.batch_size, math.prod(IMAGE_SHAPE)), np.float32))
  ks = [jax.device_put(rng.standard_normal(s, np.float32) / math.sqrt(s[0]))
        for s in _shapes(config)]
  products = jax.jit(matmuls)
  grads = jax.tree_util.tree_map(jax.numpy.ones_like, box[0].params)
  opt = jax.tree_util.tree_map(jax.numpy.copy, [box[0].opt_state, box[0].params])  # own buffers

  @functools.partial(jax.jit, donate_argnums=(1, 2))  # donated, as in the train step
  def apply_update(grads, opt_state, params):
    updates, opt_state = tx.update(grads, opt_state, params)
    return opt_state, optax.apply_updates(params, updates)

  def update(i):
    opt[0], opt[1] = apply_update(grads, *opt)
    return opt[1]

  fns = {"step": step, "matmuls": lambda i: products(x, ks), "update": update}
  for f in fns.values():  # compile and warm up
    jax.block_until_ready(f(0))
  return {"device": str(jax.devices()[0].device_kind),
          "ms": _rounds(fns, rounds, calls, jax.block_until_ready)}


def run_torch(config, rounds: int, calls: int) -> dict:
  import torch
  torch.manual_seed(0)
  device = "cuda" if torch.cuda.is_available() else "cpu"
  net, opt, loss_fn = trainers.torch_setup(config, IMAGE_SHAPE, NUM_CLASSES, device)
  n = N_TRAIN
  images = torch.randint(0, 256, (n, IMAGE_SHAPE[2], *IMAGE_SHAPE[:2]), dtype=torch.uint8,
                         device=device)
  labels = torch.randint(0, NUM_CLASSES, (n,), device=device)
  perm = torch.randperm(n, device=device)
  bs = config.batch_size

  def step(i):
    idx = perm[(i * bs) % (n - bs):][:bs]
    trainers.torch_step(net, opt, loss_fn, images[idx], labels[idx], config.learning_rate)

  x = torch.rand(bs, math.prod(IMAGE_SHAPE), device=device)
  ks = [torch.randn(s, device=device) / math.sqrt(s[0]) for s in _shapes(config)]
  sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
  fns = {"step": step, "matmuls": lambda i: matmuls(x, ks), "update": lambda i: opt.step()}
  for f in fns.values():
    f(0)  # the step leaves gradients behind for `update`
  name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
  return {"device": name, "ms": _rounds(fns, rounds, calls, lambda _: sync())}


FRAMEWORKS = {"this project": run_jax, "pytorch": run_torch}


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  ap.add_argument("--config", default="configs/mlp.py")
  ap.add_argument("--repeats", type=int, default=3, help="subprocesses per framework")
  ap.add_argument("--rounds", type=int, default=10, help="alternating rounds per subprocess")
  ap.add_argument("--calls", type=int, default=50, help="timed calls per part and round")
  ap.add_argument("--child", choices=FRAMEWORKS, help=argparse.SUPPRESS)
  args = ap.parse_args()
  config = trainers.load_config(args.config, 0)
  if config.model.name != "mlp":
    raise SystemExit(f"bench/mlp_floor.py times MLPs; {args.config} is a {config.model.name}.")
  if args.child:
    print(json.dumps(FRAMEWORKS[args.child](config, args.rounds, args.calls)))
    return
  ms = {f: {p: [] for p in PARTS} for f in FRAMEWORKS}
  device = None
  for _ in range(args.repeats):
    for f in FRAMEWORKS:
      cmd = [sys.executable, os.path.abspath(__file__), f"--config={args.config}",
             f"--rounds={args.rounds}", f"--calls={args.calls}", f"--child={f}"]
      out = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True, check=True).stdout
      r = json.loads(out.strip().splitlines()[-1])
      device = device or r["device"]
      for p in PARTS:
        ms[f][p] += r["ms"][p]
  med = {f: {p: statistics.median(v) for p, v in parts.items()} for f, parts in ms.items()}
  print(f"\n{args.config}, {device}, ms per step, "
        f"medians of {args.repeats} x {args.rounds} rounds\n")
  print("| | train step | matmuls alone | optimizer update alone | floor (sum) | step / floor |")
  print("|---|---|---|---|---|---|")
  for f, m in med.items():
    floor = m["matmuls"] + m["update"]
    print(f"| {f} | {m['step']:.2f} | {m['matmuls']:.2f} | {m['update']:.2f} | {floor:.2f} "
          f"| {m['step'] / floor:.2f} |")
  ours, ref = med["this project"], med["pytorch"]
  print(f"\nspeed vs PyTorch: {ref['step'] / ours['step']:.2f}x; at most "
        f"{ref['step'] / (ours['matmuls'] + ours['update']):.2f}x if our step were its floor")


if __name__ == "__main__":
  main()
