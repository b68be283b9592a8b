"""What each choice in the train step costs: the step of a config against the same step with one
thing switched off or swapped, on whatever backend is present.

    python bench/step_ablation.py [--repeats=5] [--steps=N] [--variants=best,best/*]

Each variant is `configs/<config>.py` with one change (see VARIANTS): augmentation off, each
augmentation alone (shift and rotation, crop, zoom, elastic distortion) or all of them, or
computed as matmuls (`training.data.augment.warp_matmul`), batch norm off, dropout 0, no moving
average of the weights, no label smoothing, `nn.max_pool` (or JAX's own gradient of max) instead of
`nets/cnn.py`'s reshape-and-max pooling with its custom gradient, `flax.linen.Dropout` instead of
`nets/layers.py`'s 8-bit dropout, a grouped convolution instead of MobileNet's shifted depthwise
multiply-adds, batch 512 instead of 128, and `--steps` steps in one `lax.scan` instead of one
jitted call per step. Swaps of code are monkeypatches, active while the variant's step traces and
runs. The step is the trainer's own: `training.compute.device.DeviceSteps` (the batch gathered
from a device-resident dataset, the state donated), built from the config by `training.compute`
and `training.compute.optim`, after `training.compute.runtime.setup` (the CPU tuning). Data are
random images: no step depends on pixel values for its time.

All variants are compiled first, then timed in interleaved rounds (each round runs every variant
once, `--steps` steps each, in an order rotated from round to round, so drift on a loaded machine
hits all alike). Prints the backend, device and versions and one markdown table: the median ms per
step over the rounds, the range, the ratio to the step of the variant's config unchanged, images/s,
on CPU also the process's CPU time per step (all threads; less disturbed than wall time by other
processes on a loaded machine) and its ratio, and the first call (compilation included, unless the
persistent compilation cache held the program: `--compilation-cache-dir=none` to compile
afresh). `--variants` takes names or shell patterns (`best/*`, `*scan*`), comma-separated; `--list`
lists them. By default all run, except on CPU the
scans (a scanned CNN step took 48x as long there: `--variants='*'` to include them); `--steps`
defaults to 100 on GPU/TPU and 4 on CPU, where the default set takes a few minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fnmatch
import importlib
import json
import os
import platform
import statistics
import sys
import time
from typing import Callable
from unittest import mock

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

N_EXAMPLES = 60_000  # MNIST-sized random training set (uint8), resident on the device
IMAGE_SHAPE, NUM_CLASSES = (28, 28, 1), 10


def _nn_max_pool():
  """nets/cnn.py's pooling as flax's pooling ops: XLA's reduce-window and, for the gradient of
  max, select-and-scatter."""
  import flax.linen as nn
  import nets.cnn

  def pool(x, how):
    op = nn.max_pool if how == "max" else nn.avg_pool
    return op(x, (2, 2), strides=(2, 2), padding="VALID")
  return mock.patch.object(nets.cnn, "pool2x2", pool)


def _autodiff_max_pool():
  """The same reshape-and-max pooling with JAX's own gradient of max (ties share it)."""
  import nets.cnn

  def pool(x, how):
    _, h, w, _ = x.shape
    windows = nets.cnn._windows(x[:, :h // 2 * 2, :w // 2 * 2])
    return windows.max(axis=(2, 4)) if how == "max" else windows.mean(axis=(2, 4))
  return mock.patch.object(nets.cnn, "pool2x2", pool)


def _flax_dropout():
  """flax.linen.Dropout (a float32 uniform per element) in place of nets/layers.py's 8-bit one."""
  import flax.linen as nn
  import nets.layers
  return mock.patch.object(nets.layers, "Dropout", nn.Dropout)


def _matmul_warp():
  """training/data/augment.py's warp as two batched matrix products instead of 4-neighbour gathers."""
  from training.data import augment
  return mock.patch.object(augment, "warp", augment.warp_matmul)


def _set(fields: dict) -> Callable:
  """An edit that sets config fields by dotted name: {"augment.shift": 0.0}."""
  from training import settings
  return lambda config: settings.set_fields(config, fields)


@dataclasses.dataclass(frozen=True)
class Variant:
  config: str  # configs/<config>.py
  change: str  # what differs from the config, for the table
  edit: Callable | None = None  # config -> None, in place
  patch: Callable | None = None  # () -> a context manager active while the step traces and runs
  scan: bool = False  # `--steps` steps in one lax.scan per call


_NO_AUGMENT = {"augment.shift": 0.0, "augment.rotate": 0.0, "augment.zoom": 0.0,
               "augment.crop": 0, "augment.elastic": 0.0}
# Each augmentation alone, at the magnitudes of the recipe search (docs/performance.md).
_ONLY = {"shift_rotate": {"augment.shift": 2.0, "augment.rotate": 10.0},
         "crop": {"augment.crop": 2}, "zoom": {"augment.zoom": 0.1},
         "elastic": {"augment.elastic": 34.0, "augment.elastic_sigma": 4.0}}
_PLAIN = {**_NO_AUGMENT, "model.batch_norm": False, "model.dropout": 0.0, "ema_decay": 0.0,
          "label_smoothing": 0.0}

VARIANTS: dict[str, Variant] = {
    "cnn": Variant("cnn", "configs/cnn.py as it is (batch 128)"),
    "cnn/nn.max_pool": Variant("cnn", "nn.max_pool (select-and-scatter gradient)",
                               patch=_nn_max_pool),
    "cnn/autodiff_max": Variant("cnn", "reshape + max with JAX's gradient (no custom_vjp)",
                                patch=_autodiff_max_pool),
    "cnn/batch512": Variant("cnn", "batch 512", _set({"batch_size": 512})),
    "cnn/scan": Variant("cnn", "lax.scan of --steps steps per call", scan=True),
    "best": Variant("best", "configs/best.py as it is (batch 128)"),
    "best/no_augment": Variant("best", "augmentation off (every augment.* magnitude 0)",
                               _set(_NO_AUGMENT)),
    **{f"best/only_{k}": Variant("best", f"only {', '.join(f'{f}={v}' for f, v in d.items())}",
                                 _set({**_NO_AUGMENT, **d})) for k, d in _ONLY.items()},
    "best/all_augment": Variant("best", "all the augmentations above together",
                                _set({k: v for d in _ONLY.values() for k, v in d.items()})),
    "best/augment_matmul": Variant("best", "augmentation as matmuls (augment.warp_matmul)",
                                   patch=_matmul_warp),
    "best/no_batchnorm": Variant("best", "BatchNorm off (conv biases instead)",
                                 _set({"model.batch_norm": False})),
    # best.py has no dropout since c5efaf9; these two put its former 0.3 back.
    "best/dropout0.3": Variant("best", "dropout 0.3", _set({"model.dropout": 0.3})),
    "best/no_ema": Variant("best", "EMA off (ema_decay = 0)", _set({"ema_decay": 0.0})),
    "best/no_label_smoothing": Variant("best", "label smoothing 0", _set({"label_smoothing": 0.0})),
    "best/plain": Variant("best", "augmentation, BatchNorm, dropout, EMA, label smoothing off "
                         "(the bare deeper CNN)", _set(_PLAIN)),
    "best/nn.max_pool": Variant("best", "nn.max_pool (select-and-scatter gradient)",
                                patch=_nn_max_pool),
    "best/nn.Dropout": Variant("best", "dropout 0.3 as flax.linen.Dropout (32 random bits "
                               "per element)", _set({"model.dropout": 0.3}), patch=_flax_dropout),
    "best/batch512": Variant("best", "batch 512", _set({"batch_size": 512})),
    "best/scan": Variant("best", "lax.scan of --steps steps per call", scan=True),
    "mobilenet": Variant("mobilenet", "configs/mobilenet.py as it is (shifted depthwise)"),
    "mobilenet/grouped_conv": Variant("mobilenet",
                                      "depthwise as nn.Conv(feature_group_count=C)",
                                      _set({"model.depthwise": "conv"})),
}


def _load_config(name: str):
  config = importlib.import_module(f"configs.{name}").get_config()
  config.progress_bar = False
  return config


class _Runner:
  """One variant's driver, state and data, stepping as the trainer does."""

  def __init__(self, name: str, variant: Variant, steps: int, mesh, data):
    import jax
    from training.compute import build, device, optim
    from training.tasks.classify import state as state_lib, steps
    from training.tasks import classify
    self.name, self.variant, self.steps = name, variant, steps
    config = _load_config(variant.config)
    if variant.edit:
      variant.edit(config)
    self.config = config
    self.batch = config.batch_size
    self.steps_per_epoch = N_EXAMPLES // self.batch
    if variant.scan and steps > self.steps_per_epoch:
      raise SystemExit(f"--steps={steps} exceeds an epoch of {self.steps_per_epoch} steps of "
                       f"{self.batch} (the scan stays within one epoch's order).")
    tx = optim.make_optimizer(config, optim.make_schedule(config, self.steps_per_epoch))
    self.driver = device.DeviceSteps(mesh, self.batch, config.eval_batch_size, NUM_CLASSES,
                                        chunk=steps if variant.scan else 1,
                                        steps_per_epoch=self.steps_per_epoch,
                                        **steps.device_steps(**classify.step_options(config)))
    with self.patched():
      model = build.build_model(config, NUM_CLASSES)
      init_key, train_key = jax.random.split(jax.random.PRNGKey(config.seed))
      state = state_lib.create_train_state(model, tx, IMAGE_SHAPE, init_key, train_key,
                                           ema=config.ema_decay > 0)
    self.state = self.driver.put(state)
    self.images, self.labels = data
    self.perm = self.driver.permutation(jax.random.PRNGKey(1), 0, N_EXAMPLES)
    self.i = 0

  def patched(self):
    return self.variant.patch() if self.variant.patch else contextlib.nullcontext()

  def _call(self, first: bool = False):
    """One scan of `steps` steps or, per step, one call (`steps` of them unless `first`)."""
    if self.variant.scan:
      self.state, metrics = self.driver.train_steps(self.state, self.images, self.labels,
                                                    self.perm, 0, self.steps)
      return metrics
    for _ in range(1 if first else self.steps):
      self.state, metrics = self.driver.train_steps(self.state, self.images, self.labels,
                                                    self.perm, self.i, 1)
      self.i = (self.i + 1) % self.steps_per_epoch
    return metrics

  def run(self, first: bool = False) -> tuple[float, float]:
    """`steps` train steps (one call if `first`: compilation included), finished on the device:
    (wall seconds, this process's CPU seconds, all threads)."""
    import jax
    with self.patched():
      t, c = time.perf_counter(), time.process_time()
      jax.block_until_ready((self._call(first), self.state))
      return time.perf_counter() - t, time.process_time() - c


def select(patterns: str) -> list[str]:
  names = []
  for p in (p.strip() for p in patterns.split(",")):
    if not p:
      continue
    hits = [n for n in VARIANTS if fnmatch.fnmatchcase(n, p)]
    if not hits:
      raise SystemExit(f"--variants: {p!r} matches none of {', '.join(VARIANTS)}.")
    names += [n for n in hits if n not in names]
  # Each selected variant is compared with its config unchanged: time that too.
  for n in list(names):
    base = VARIANTS[n].config
    if base not in names:
      names.insert(names.index(n), base)
  return names


def environment() -> str:
  import flax
  import jax
  import jaxlib
  dev = jax.devices()[0]
  load = ""
  if hasattr(os, "getloadavg"):
    load = f", load average {os.getloadavg()[0]:.1f}"
  return (f"backend {jax.default_backend()}, {jax.device_count()} device(s), device "
          f"{dev.device_kind!r} ({dev.platform}); host {platform.machine()} with "
          f"{os.cpu_count()} CPUs{load}; jax {jax.__version__}, jaxlib {jaxlib.__version__}, "
          f"flax {flax.__version__}, Python {platform.python_version()}")


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  ap.add_argument("--repeats", type=int, default=5, help="interleaved timing rounds")
  ap.add_argument("--steps", type=int, default=0,
                  help="train steps per variant and round, also the scan's length "
                       "(0: 100 on GPU/TPU, 4 on CPU)")
  ap.add_argument("--variants", default="",
                  help="names or patterns, comma-separated (default: all; on CPU all but the "
                       "scans, whose steps there take 20-50x as long)")
  ap.add_argument("--list", action="store_true", help="list the variants and exit")
  ap.add_argument("--json", help="also write every round's ms per step here")
  ap.add_argument("--compilation-cache-dir", default="",
                  help="persistent compilation cache (default: the trainer's; 'none': compile "
                       "afresh, so that 'first call' is the compilation)")
  args = ap.parse_args()
  if args.list:
    for n, v in VARIANTS.items():
      print(f"{n:<24} {v.change}")
    return

  from training.compute import mesh as mesh_lib
  from training.compute import runtime
  runtime.setup({"compilation_cache_dir": args.compilation_cache_dir})
  import jax
  import numpy as np
  cpu = jax.default_backend() == "cpu"
  names = select(args.variants or ("*" if not cpu else
                                   ",".join(n for n in VARIANTS if not VARIANTS[n].scan)))
  steps = args.steps or (4 if cpu else 100)
  print(environment(), flush=True)
  print(f"{len(names)} variants, {args.repeats} interleaved rounds of {steps} steps each",
        flush=True)

  mesh = mesh_lib.make_mesh((-1,), ("data",))
  rng = np.random.default_rng(0)
  # One device-resident dataset, replicated as DeviceSteps.put_train puts it, serves every variant.
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  data = jax.device_put(
      (rng.integers(0, 256, (N_EXAMPLES, *IMAGE_SHAPE), dtype=np.uint8),
       rng.integers(0, NUM_CLASSES, N_EXAMPLES).astype(np.int32)), replicated)
  runners, first = {}, {}
  for n in names:
    r = _Runner(n, VARIANTS[n], steps, mesh, data)
    first[n] = r.run(first=True)[0]
    r.run()  # warm: the first timed call of a program is often slower
    runners[n] = r
    print(f"  compiled {n}: first call {first[n]:.1f} s", file=sys.stderr, flush=True)

  wall: dict[str, list[float]] = {n: [] for n in names}
  proc: dict[str, list[float]] = {n: [] for n in names}
  for round_ in range(args.repeats):
    k = round_ % len(names)
    for n in names[k:] + names[:k]:
      w, c = runners[n].run()
      wall[n].append(w / steps * 1e3)
      proc[n].append(c / steps * 1e3)
    print(f"  round {round_ + 1}/{args.repeats}: "
          + ", ".join(f"{n} {wall[n][-1]:.2f}" for n in names), file=sys.stderr, flush=True)

  med = {n: statistics.median(v) for n, v in wall.items()}
  cpu_med = {n: statistics.median(v) for n, v in proc.items()}
  scans = any(VARIANTS[n].scan for n in names)
  print(f"\nms per train step: medians over {args.repeats} interleaved rounds of {steps} steps"
        f"{f' (scan: one call of {steps} steps)' if scans else ''}"
        f"{'; CPU ms: the process CPU time of all threads' if cpu else ''}\n")
  extra = " CPU ms/step | x (CPU time) |" if cpu else ""
  print(f"| variant | change | ms/step | range | x its config's step | images/s |{extra} "
        "first call s |")
  print("|---|---|---|---|---|---|" + ("---|---|" if cpu else "") + "---|")
  for n in names:
    v, r = VARIANTS[n], runners[n]
    change = v.change.replace("--steps", str(steps))
    extra = f" {cpu_med[n]:.1f} | {cpu_med[n] / cpu_med[v.config]:.2f} |" if cpu else ""
    print(f"| `{n}` | {change} | {med[n]:.2f} | {min(wall[n]):.2f}-{max(wall[n]):.2f} | "
          f"{med[n] / med[v.config]:.2f} | {r.batch / med[n] * 1e3:,.0f} |{extra} "
          f"{first[n]:.1f} |")
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"environment": environment(), "steps": steps, "ms_per_step": wall,
                 "cpu_ms_per_step": proc, "first_call_s": first}, f, indent=1)


if __name__ == "__main__":
  main()
