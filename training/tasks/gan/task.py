"""Generative adversarial networks (nets/gan.py), measured with a classifier this project trained.

Every epoch the generator draws `eval_samples` images (for the conditional GAN, every class
equally often), and `metrics.py` beside this file scores them with the classifier of
`config.eval_classifier`: the Frechet distance of its penultimate features to the test images'
beside the train-vs-test reference, the entropy of the predicted classes, and for the
conditional GAN how often the requested class is recognized. A grid of samples from fixed noise
(one row per class, when conditional) goes to `<workdir>/samples/` and TensorBoard.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable

import jax
import numpy as np
import optax

from training.console import log
from training.errors import ConfigError
from training.compute import build, device
from training.tasks.base import spread
from training.tasks import base
from training.tasks.gan import grid, metrics as gan_metrics, steps as gan_steps

LOW_ENTROPY = 2.0  # bits of the predicted-class histogram below which the samples lack classes


class Gan(base.Task):
  kind = "gan"
  bar_key = "g_loss"
  epoch_keys = ("d_loss", "g_loss", "d_real", "d_fake")

  def __init__(self, config, num_classes, image_shape, population):
    super().__init__(config, num_classes, image_shape, population)
    # From the model itself: a variant registered under another name keeps its own setting.
    self.conditional = bool(build.build_model(config, num_classes).conditional)
    self.final_keys = ("fd", "fd_ratio", "entropy") + (("class_accuracy",)
                                                        if self.conditional else ())
    self.train_step = _train_step(config)
    self.classifier = self.reference = None
    self._generate = jax.jit(gan_steps.generate)

  @classmethod
  def check_config(cls, config) -> None:
    if "gan" not in config or "eval_classifier" not in config.gan:
      raise ConfigError("The gan task needs the config's gan block (gan.eval_classifier, "
                        "gan.eval_samples, gan.d_lr_factor, gan.loss): build the config on "
                        "configs/dcgan.py's get_config().")
    loss = _loss(config)
    if loss not in gan_steps.LOSSES:
      raise ConfigError(f"--config.gan.loss={loss!r} is not a GAN loss: choose one of "
                        f"{', '.join(gan_steps.LOSSES)}.")
    if loss == "hinge" and config.label_smoothing:
      raise ConfigError("--config.label_smoothing applies to the bce loss only; the hinge loss "
                        "has its own margin: pass --config.gan.loss=bce or leave it at 0.")
    if not config.gan.d_lr_factor > 0:
      raise ConfigError(f"gan.d_lr_factor scales the discriminator's learning rate and must be "
                        f"> 0, got {config.gan.d_lr_factor}.")
    if config.get("sweep", "").strip():
      raise ConfigError("The gan task trains populations of seeds (--config.population), not "
                        "sweeps: run one population per setting, each with its own --workdir.")
    if config.gan.eval_samples < 2:
      raise ConfigError(f"gan.eval_samples must be at least 2 (a Frechet distance needs a "
                        f"covariance), got {config.gan.eval_samples}.")

  def init_state(self, schedule: Callable, init_key, train_key) -> gan_steps.GanState:
    model = build.build_model(self.config, self.num_classes)
    if tuple(model.image_shape) != self.image_shape:
      model = model.clone(image_shape=self.image_shape)
    c = self.config
    adam = lambda scale: optax.adam(lambda step: scale * schedule(step), b1=c.adam_b1,
                                    b2=c.adam_b2)
    return gan_steps.create_gan_state(model, adam(1.0), adam(c.gan.d_lr_factor), init_key,
                                      train_key, ema=c.ema_decay > 0)

  def start(self, ds) -> None:
    """The classifier that scores the samples, and the real images' reference statistics."""
    self.classifier = gan_metrics.ClassifierFeatures(self.config.gan.eval_classifier)
    if self.classifier.image_shape != self.image_shape:
      raise ConfigError(
          f"The classifier in {self.config.gan.eval_classifier} takes {self.classifier.image_shape}"
          f" images, but {ds.name}'s are {self.image_shape}: train one on this dataset.")
    if self.conditional and self.classifier.num_classes != self.num_classes:
      # Its "requested class recognized" would compare labels of two different class lists.
      raise ConfigError(
          f"The classifier in {self.config.gan.eval_classifier} knows "
          f"{self.classifier.num_classes} classes, but this conditional GAN draws "
          f"{self.num_classes}: train one on the same classes (--config.classes).")
    self.reference = gan_metrics.reference(self.classifier, ds.train.images, ds.test.images,
                                           n=min(self.config.gan.eval_samples, len(ds.train)))

  def train_line(self, means: dict[str, float]) -> str:
    return (f"D loss {spread(means['train/d_loss'], '.3f')} G loss "
            f"{spread(means['train/g_loss'], '.3f')} D(real) {spread(means['train/d_real'], '.2f')}"
            f" D(fake) {spread(means['train/d_fake'], '.2f')}")

  def sample(self, state, num: int, seed: int, labels: np.ndarray | None = None) -> tuple:
    """`num` generated uint8 images (and their requested classes, cycled 0..k-1 by default),
    from noise fixed by `seed`, in batches of 1,000."""
    if labels is None:
      labels = np.arange(num, dtype=np.int32) % self.num_classes
    z = np.asarray(jax.random.normal(jax.random.PRNGKey(seed), (num, state.latent_dim)))
    images = [np.asarray(self._generate(state, z[i:i + 1000], labels[i:i + 1000]))
              for i in range(0, num, 1000)]
    return np.concatenate(images), labels

  def measure(self, state, seed: int | None = None) -> dict[str, Any]:
    """The samples' scores, from noise fixed by the run's `seed` (a member's own, in a
    population, so that it is scored as a run of its own would be)."""
    seed = self.config.seed if seed is None else seed
    images, labels = self.sample(state, self.config.gan.eval_samples, seed + 1)
    return gan_metrics.evaluate(self.classifier, images,
                                self.reference, labels if self.conditional else None)

  def _measure_each(self, run, state) -> dict[str, Any]:
    """`measure`: one model's numbers, or a population's arrays of each member's."""
    if not run.members:
      return self.measure(state)
    each = [self.measure(device.take(state, m.index), m.seed) for m in run.members]
    return {k: np.asarray([m[k] for m in each]) for k in each[0] if np.ndim(each[0][k]) == 0}

  def end_epoch(self, run, state, epoch, means) -> tuple[dict[str, Any], str]:
    _check_stability(run, epoch, means)
    m = self._measure_each(run, state)
    self._write_grid(run, state, epoch)
    if np.min(m["entropy"]) < LOW_ENTROPY:
      log(f"Warning: epoch {epoch}'s samples are classified into few classes (entropy "
          f"{np.min(m['entropy']):.2f} bits of {np.log2(self.num_classes):.2f}): mode collapse, "
          "unless training has just begun.")
    return {f"sample/{k}": m[k] for k in self.final_keys}, f"  |  {_describe(m)}"

  def _write_grid(self, run, state, epoch: int) -> None:
    """The epoch's sample grid (of member 0, in a population)."""
    images = self.grid_images(device.take(state, 0) if run.members else state)
    if run.workdir is not None and run.primary:
      path = os.path.join(run.workdir, "samples", f"epoch_{epoch:03d}.png")
      grid.save_grid(images, path, nrow=self.grid_columns())
      run.writer.write_image("samples", grid.tile(images, self.grid_columns()),
                             epoch * run.steps_per_epoch)

  def grid_columns(self) -> int:
    return 10 if self.conditional else 8

  def grid_images(self, state, label: int | None = None, num: int | None = None) -> np.ndarray:
    """The epoch grid: fixed noise, one row per class when conditional (or all of `label`)."""
    cols = self.grid_columns()
    num = num or (cols * self.num_classes if self.conditional and label is None else cols * 8)
    labels = (np.full(num, label, np.int32) if label is not None
              else np.arange(num, dtype=np.int32) // cols % self.num_classes)
    return self.sample(state, num, self.config.seed + 2, labels)[0]

  def finish(self, run, state) -> tuple[dict[str, Any], str]:
    m = self._measure_each(run, state)
    if not run.members:
      return m, f"samples of the final generator: {_describe(m)}"
    test = {k: float(np.mean(v)) for k, v in m.items()}
    test["members"] = [{"member": p.index, "seed": p.seed, **{k: float(v[p.index])
                                                              for k, v in m.items()}}
                       for p in run.members]
    lines = [f"member {p.index} ({p.label()}): {_describe(row)}"
             for p, row in zip(run.members, test["members"])]
    return test, "\n".join(lines + [f"samples of the final generators: {_describe(m)}"])

  def headline(self, test: dict[str, Any]) -> str:
    return _describe(test)


def _train_step(config) -> Callable:
  return functools.partial(gan_steps.train_step, label_smoothing=config.label_smoothing,
                           ema_decay=config.ema_decay, loss=_loss(config))


def _loss(config) -> str:
  return config.gan.get("loss", "bce")  # configs saved before gan.loss existed trained with bce


def _describe(m: dict[str, Any]) -> str:
  """The scores as a line; a population's (arrays) as their members' mean +- std."""
  text = (f"Frechet distance {spread(m['fd'], '.2f')} ({spread(m['fd_ratio'], '.1f')}x the "
          f"train-vs-test {np.mean(m['reference_fd']):.2f}), entropy "
          f"{spread(m['entropy'], '.2f')} bits")
  if "class_accuracy" in m:
    text += f", requested class recognized {spread(m['class_accuracy'], '.1%')}"
  return text


def _check_stability(run, epoch: int, means: dict[str, float]) -> None:
  """A discriminator that wins outright leaves the generator no gradient: say so, with the steps."""
  collapse = gan_metrics.discriminator_collapse(
      float(np.min(means["train/d_loss"])), (epoch - 1) * run.steps_per_epoch + 1,
      epoch * run.steps_per_epoch)
  if collapse:
    log(f"Warning: in epoch {epoch} {collapse}. Lower --config.gan.d_lr_factor, raise "
        "--config.label_smoothing (bce loss), or restart from an earlier checkpoint.")


base.register("gan", Gan)
