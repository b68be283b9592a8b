"""Which parts of configs/best.py show at a short length: the recipe beside itself without one part.

    python bench/recipe_parts.py                            # best, noaug, constant, cnn; 3 epochs
    python bench/recipe_parts.py --epochs=2 --variants=best,noaug

Each variant trains in this process through `train_and_evaluate` (seed 0, the config's own), and
the table gives its test and validation accuracy, its accuracy on the warped test digits (every
one rotated by 10 degrees and shifted by 2 pixels on both axes, in alternating directions: the
edge of best.py's augmentation) and the last epoch's training accuracy on the augmented batches.
tests/test_best_recipe.py holds best.py to floors taken from this table (docs/performance.md,
"The best recipe, shortened").
"""

from __future__ import annotations

import argparse
import importlib
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script: the project's packages

from training import data, train_and_evaluate  # noqa: E402
from training.data import augment  # noqa: E402
from training.tasks.classify import steps  # noqa: E402
from training.compute import runtime  # noqa: E402


def _noaug(c):
  c.augment.shift = c.augment.rotate = 0.0


def _constant(c):
  c.schedule = "constant"


# name -> (config, change to it)
VARIANTS = {"best": ("best", None), "noaug": ("best", _noaug), "constant": ("best", _constant),
            "cnn": ("cnn", None)}


def variant(name: str, epochs: int, **overrides) -> ml_collections.ConfigDict:
  """best.py or cnn.py as variant `name`, cut to `epochs`; `overrides` for the data's paths."""
  config_name, change = VARIANTS[name]
  c = importlib.import_module(f"configs.{config_name}").get_config()
  # Every variant holds out the 6,000 validation digits the recipe was chosen on (best.py itself
  # trains on all 60,000), so the table's validation column and the test's floors stay comparable.
  c.validation_fraction = 0.1
  if change:
    change(c)
  c.update(num_epochs=epochs, progress_bar=False, **overrides)
  return c


def warped_test_images(images: np.ndarray) -> jax.Array:
  """uint8 test digits -> the model's inputs, each rotated by 10 degrees and shifted by 2 pixels
  on both axes, the sign alternating with the index."""
  x = steps.preprocess(jnp.asarray(images))
  sign = jnp.where(jnp.arange(x.shape[0]) % 2 == 0, 1.0, -1.0)
  return augment.warp(x, sign * jnp.deg2rad(10.0), jnp.stack([2 * sign, -2 * sign], axis=1))


def accuracy(state, images: jax.Array, labels: np.ndarray, batch: int = 1000) -> float:
  logits = jax.jit(steps.eval_logits)
  predicted = np.concatenate([np.argmax(np.asarray(logits(state, images[i:i + batch])), -1)
                              for i in range(0, len(labels), batch)])
  return float(np.mean(predicted == labels))


def warped_test_split(config: ml_collections.ConfigDict) -> tuple[jax.Array, np.ndarray]:
  """The warped test digits of `config`'s dataset, and their labels."""
  test = data.from_config(config).test
  return warped_test_images(test.images), test.labels


def measure(config: ml_collections.ConfigDict, warped: jax.Array, labels: np.ndarray) -> dict:
  """Trains `config` and scores it four ways (the table's columns)."""
  t0 = time.time()
  state, summary = train_and_evaluate(config)
  return {"test": summary["test"]["accuracy"],
          "validation": summary["validation/accuracy"],
          "warped": accuracy(state, warped, labels), "train": summary["train/accuracy"],
          "s": time.time() - t0}


def main(argv=None) -> list[dict]:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--epochs", type=int, default=3)
  parser.add_argument("--variants", default="best,noaug,constant,cnn",
                      help=f"comma-separated, from {', '.join(VARIANTS)}")
  args = parser.parse_args(argv)
  names = args.variants.split(",")
  unknown = [n for n in names if n not in VARIANTS]
  if unknown:
    raise SystemExit(f"error: unknown variant {', '.join(unknown)}; choose from "
                     f"{', '.join(VARIANTS)}")
  runtime.tune_host_allocator()
  runtime.set_xla_cpu_flags()
  runtime.quiet_library_noise()
  warped, labels = warped_test_split(variant("best", args.epochs))
  rows = [{"variant": n, **measure(variant(n, args.epochs), warped, labels)} for n in names]
  print(f"\n| {args.epochs} epochs, seed 0 | test | validation | warped | last epoch, train | s |")
  print("|---|---|---|---|---|---|")
  for r in rows:
    print(f"| {r['variant']} | {r['test']:.2%} | {r['validation']:.2%} | {r['warped']:.2%} "
          f"| {r['train']:.2%} | {r['s']:.0f} |")
  return rows


if __name__ == "__main__":
  main()
