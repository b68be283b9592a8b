"""Image classification: a `nets` classifier trained with cross-entropy, evaluated by accuracy."""

from __future__ import annotations

import functools
from typing import Any, Callable

import ml_collections

from training.model import build, optim, scores, state as state_lib, steps
from training.tasks import base


def step_options(config: ml_collections.ConfigDict) -> dict[str, float]:
  """The config's keyword arguments of `steps.train_step`."""
  a = config.augment
  return {"label_smoothing": config.label_smoothing, "augment_shift": a.shift,
          "augment_rotate": a.rotate, "augment_zoom": a.get("zoom", 0.0),
          "augment_crop": a.get("crop", 0), "augment_elastic": a.get("elastic", 0.0),
          "augment_elastic_sigma": a.get("elastic_sigma", 4.0), "ema_decay": config.ema_decay}


class Classify(base.Task):
  kind = "classifier"
  reports = True
  bar_key = "loss"
  epoch_keys = ("loss", "accuracy")
  final_keys = ("loss", "accuracy", "macro_f1")

  def __init__(self, config, num_classes, image_shape):
    super().__init__(config, num_classes, image_shape)
    self.train_step = functools.partial(steps.train_step, **step_options(config))

  def init_state(self, schedule: Callable, init_key, train_key) -> state_lib.TrainState:
    model = build.build_model(self.config, self.num_classes)
    tx = optim.make_optimizer(self.config, schedule)
    return state_lib.create_train_state(model, tx, self.image_shape, init_key, train_key,
                                        ema=self.config.ema_decay > 0)

  def train_line(self, means: dict[str, float]) -> str:
    return f"train loss {means['train/loss']:.4f} acc {means['train/accuracy']:.2%}"

  def end_epoch(self, run, state, epoch, means) -> tuple[dict[str, float], str]:
    """The validation split's loss and accuracy (and the test split's, with test_every_epoch)."""
    m, line = {}, ""
    if "validation" in run.arrays:
      val = scores.summarize(run.driver.evaluate(state, *run.arrays["validation"]))
      m.update({"validation/loss": val["loss"], "validation/accuracy": val["accuracy"]})
      line += f"  |  val loss {val['loss']:.4f} acc {val['accuracy']:.2%}"
    if self.config.test_every_epoch:
      test = scores.summarize(run.driver.evaluate(state, *run.arrays["test"]))
      m.update({"test/loss": test["loss"], "test/accuracy": test["accuracy"]})
      line += f"  |  test acc {test['accuracy']:.2%}"
    return m, line

  def finish(self, run, state) -> tuple[dict[str, Any], str]:
    test = scores.summarize(run.driver.evaluate(state, *run.arrays["test"]))
    return test, scores.format_report(test, run.ds.class_names)

  def headline(self, test: dict[str, Any]) -> str:
    return f"test accuracy {test['accuracy']:.2%}"


base.register("classify", Classify)
