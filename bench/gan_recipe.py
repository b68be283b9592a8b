"""Trains a GAN of nets/gan.py on real MNIST with a plain device-resident loop and measures it
after every epoch with a trained classifier: the GAN recipe's evidence.

    python train.py --config=configs/speedrun.py --workdir=/tmp/gan_eval_cnn   # once, ~20 s
    python bench/gan_recipe.py --model=cgan --classifier=/tmp/gan_eval_cnn [--epochs=10] ...

Each epoch row: the epoch's training seconds (evaluation excluded), the mean losses, the Frechet
distance of 10,000 generated images to the 10,000 test images in the classifier's penultimate
features, the train-vs-test reference distance and their ratio, the classifier's accuracy on the
requested classes (conditional models: each class requested 1,000 times) and the entropy of its
predicted classes (log2(10) = 3.32 bits at most).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from training.compute import runtime

runtime.tune_host_allocator()
runtime.set_xla_cpu_flags()

import flax  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import nets  # noqa: E402
from training import data
from training.tasks.gan import metrics as gan_metrics
from training.tasks.gan import steps as gan_steps
from training.tasks.gan import grid
from training.compute import optim


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ints = lambda s: tuple(int(x) for x in s.split(","))
  p.add_argument("--model", default="cgan", choices=nets.names("gan"))
  p.add_argument("--classifier", default="/tmp/gan_eval_cnn", help="a trained classifier workdir")
  p.add_argument("--epochs", type=int, default=10)
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--lr_g", type=float, default=2e-4)
  p.add_argument("--lr_d", type=float, default=2e-4)
  p.add_argument("--b1", type=float, default=0.5)
  p.add_argument("--b2", type=float, default=0.999)
  p.add_argument("--latent", type=int, default=64)
  p.add_argument("--widths", type=ints, default=(64, 32), help="generator channels")
  p.add_argument("--d_widths", type=ints, default=(32, 64), help="discriminator channels")
  p.add_argument("--smoothing", type=float, default=0.0, help="one-sided label smoothing")
  p.add_argument("--loss", default="bce", choices=gan_steps.LOSSES)
  p.add_argument("--anneal", type=float, default=0.0,
                 help="the last fraction of the steps decays both learning rates linearly to 0")
  p.add_argument("--ema", type=float, default=0.0, help="generator moving average decay")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--eval_n", type=int, default=10_000)
  p.add_argument("--grid", default="", help="write each epoch's samples to GRID_epochN.png")
  p.add_argument("--save", default="", help="write the final state's variables to this file")
  p.add_argument("--json", default="", help="append the rows as JSON lines to this file")
  return p.parse_args(argv)


def make_state(args: argparse.Namespace, total_steps: int) -> gan_steps.GanState:
  model = nets.create(args.model, num_classes=10, latent_dim=args.latent, widths=args.widths,
                      d_widths=args.d_widths)

  def tx(lr):
    schedule = optim.constant_linear(lr, 0.0, total_steps, args.anneal)
    return optax.adam(schedule, b1=args.b1, b2=args.b2)

  key = jax.random.PRNGKey(args.seed)
  return gan_steps.create_gan_state(model, tx(args.lr_g), tx(args.lr_d),
                                    jax.random.fold_in(key, 0), jax.random.fold_in(key, 1),
                                    ema=args.ema > 0)


def make_drivers(args: argparse.Namespace, images: jax.Array, labels: jax.Array):
  """The jitted per-step train call (gathering its batch on device) and a sampler."""
  step = functools.partial(gan_steps.train_step, label_smoothing=args.smoothing,
                           ema_decay=args.ema, loss=args.loss)

  @functools.partial(jax.jit, donate_argnums=0)
  def train(state, perm, i):
    idx = jax.lax.dynamic_slice_in_dim(perm, i * args.batch, args.batch)
    return step(state, {"image": images[idx], "label": labels[idx]}, state.rng)

  sample = jax.jit(gan_steps.generate)
  return train, sample


def generate_eval_set(sample, state, n: int, latent: int, seed: int):
  """`n` images from fixed noise; each class requested n/10 times."""
  requested = np.arange(n, dtype=np.int32) % 10
  z = jax.random.normal(jax.random.PRNGKey(10_000 + seed), (n, latent))
  out = [np.asarray(sample(state, z[i:i + 1000], requested[i:i + 1000]))
         for i in range(0, n, 1000)]
  return np.concatenate(out), requested


def _stability_problem(history: dict[str, np.ndarray], first_step: int) -> str | None:
  """A non-finite loss (with its step) or a discriminator that won outright, else None."""
  finite = np.isfinite(history["d_loss"]) & np.isfinite(history["g_loss"])
  if not finite.all():
    return f"a non-finite loss at step {first_step + int(np.argmin(finite))}"
  return gan_metrics.discriminator_collapse(float(history["d_loss"].mean()), first_step,
                                            first_step + len(finite) - 1)


def main(argv=None) -> list[dict]:
  args = parse_args(argv)
  ds = data.load("mnist", validation_fraction=0.0)
  classifier = gan_metrics.ClassifierFeatures(args.classifier)
  ref = gan_metrics.reference(classifier, ds.train.images, ds.test.images, seed=args.seed)
  steps_per_epoch = len(ds.train.labels) // args.batch
  state = make_state(args, steps_per_epoch * args.epochs)
  images, labels = jax.device_put(ds.train.images), jax.device_put(ds.train.labels)
  train, sample = make_drivers(args, images, labels)
  conditional = args.model == "cgan"
  print(f"{args.model}: {vars(args)}\nreference FD (10k train vs 10k test) {ref.fd:.3f}; "
        f"{steps_per_epoch} steps/epoch", flush=True)
  print(f"{'epoch':>5} {'train s':>8} {'total s':>8} {'d_loss':>7} {'g_loss':>7} {'D(real)':>7} "
        f"{'FD':>8} {'ref':>6} {'ratio':>6} {'acc':>7} {'entropy':>7}", flush=True)
  rows, total = [], 0.0
  for epoch in range(1, args.epochs + 1):
    start = time.perf_counter()
    perm = jax.random.permutation(jax.random.PRNGKey(args.seed * 1000 + epoch), len(labels))
    history = []
    for i in range(steps_per_epoch):
      state, metrics = train(state, perm, i)
      history.append(metrics)
    history = jax.tree_util.tree_map(lambda *x: np.asarray(jnp.stack(x)), *history)
    seconds = time.perf_counter() - start
    total += seconds
    problem = _stability_problem(history, (epoch - 1) * steps_per_epoch + 1)
    if problem:
      print(f"stopped: {problem}", flush=True)
      break
    fakes, requested = generate_eval_set(sample, state, args.eval_n, args.latent, args.seed)
    result = gan_metrics.evaluate(classifier, fakes, ref, requested if conditional else None)
    if args.ema:  # the live generator too, to see what the average gains
      live, _ = generate_eval_set(sample, state.replace(ema={}), args.eval_n, args.latent, args.seed)
      result["live_fd"] = gan_metrics.evaluate(classifier, live, ref)["fd"]
    row = {"epoch": epoch, "train_s": seconds, "total_s": total,
           **{k: float(v.mean()) for k, v in history.items()}, **result}
    rows.append(row)
    print(f"{epoch:>5} {seconds:>8.1f} {total:>8.1f} {row['d_loss']:>7.3f} {row['g_loss']:>7.3f} "
          f"{row['d_real']:>7.3f} {row['fd']:>8.3f} {ref.fd:>6.3f} {row['fd_ratio']:>6.2f} "
          f"{row.get('class_accuracy', float('nan')):>7.2%} {row['entropy']:>7.3f}"
          + (f"  (live FD {row['live_fd']:.3f})" if args.ema else ""), flush=True)
    if args.grid:
      grid.save_grid(fakes[:100], f"{args.grid}_epoch{epoch}.png", nrow=10)
  if args.save:
    with open(args.save, "wb") as f:
      f.write(flax.serialization.to_bytes(
          {"params": state.params, "batch_stats": state.batch_stats, "ema": state.ema}))
  if args.json:
    with open(args.json, "a") as f:
      for row in rows:
        f.write(json.dumps({**{k: v for k, v in vars(args).items()}, **row}) + "\n")
  return rows


if __name__ == "__main__":
  main()
