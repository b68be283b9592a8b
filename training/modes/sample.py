"""`--mode=sample`: a PNG grid of a trained GAN's images, of one class or of every class."""

from __future__ import annotations

import os

import numpy as np

from training.errors import ConfigError, unsaved
from training.tasks import restore as restore_lib
from training.tasks.gan import grid
from training.tasks.gan.task import Gan


def sample(workdir: str, which: str = "latest", label: int | None = None, num: int = 64,
           output: str | None = None, seed: int = 0) -> str:
  """`python train.py --mode=sample`: a grid of `num` samples of a trained GAN (all of class
  `label`, or every class in turn when conditional) written to a PNG; returns its path."""
  if output is not None and (os.path.isdir(output) or not output.lower().endswith(".png")):
    raise ConfigError(f"--output={output} is {'a directory' if os.path.isdir(output) else 'not a .png file'}"
                      ": the samples are one PNG image; pass --output=FILE.png.")
  r = restore_lib.restore(workdir, which, task="gan")
  task = Gan(r.config, r.dataset_info["num_classes"], tuple(r.dataset_info["image_shape"]),
             r.population)
  if num < 1:
    raise ConfigError(f"--num must be at least 1, got {num}.")
  if label is not None and not task.conditional:
    raise ConfigError(f"{workdir} holds an unconditional GAN ({r.config.model.name}): it takes "
                      "no --label; train configs/cgan.py for digits of a chosen class.")
  if label is not None and not 0 <= label < task.num_classes:
    raise ConfigError(f"--label={label} is not a class of this GAN: choose 0-{task.num_classes - 1}"
                      f" ({', '.join(map(str, r.dataset_info['class_names']))}).")
  labels = (np.full(num, label, np.int32) if label is not None
            else np.arange(num, dtype=np.int32) % task.num_classes)
  images = task.sample(r.state, num, seed, labels)[0]
  name = f"sample_step{r.step}{'' if label is None else f'_label{label}'}_seed{seed}.png"
  path = output or os.path.join(workdir, "samples", name)
  try:
    return grid.save_grid(images, path, nrow=min(task.grid_columns(), num))
  except OSError as e:  # a read-only workdir: the samples were drawn, not saved
    place = "that directory" if output else "the workdir"
    raise ConfigError(unsaved(os.path.basename(path), os.path.dirname(os.path.abspath(path)), e,
                              place) + " Pass --output=FILE.png to write them elsewhere.") from e
