"""Image classification: a `nets` classifier trained with cross-entropy, evaluated by accuracy."""

from __future__ import annotations

import functools
from typing import Any, Callable

from training import builders, metrics as metrics_lib, optim, steps, tasks
from training.builders import log


class Classify(tasks.Task):
  kind = "classifier"
  bar_key = "loss"
  epoch_keys = ("loss", "accuracy")
  final_keys = ("loss", "accuracy", "macro_f1")

  def __init__(self, config, num_classes, image_shape):
    super().__init__(config, num_classes, image_shape)
    self.train_step = functools.partial(steps.train_step, **builders.step_options(config))

  def init_state(self, schedule: Callable, init_key, train_key) -> steps.TrainState:
    model = builders.build_model(self.config, self.num_classes)
    tx = optim.make_optimizer(self.config, schedule)
    return steps.create_train_state(model, tx, self.image_shape, init_key, train_key,
                                    ema=self.config.ema_decay > 0)

  def train_line(self, means: dict[str, float]) -> str:
    return f"train loss {means['train/loss']:.4f} acc {means['train/accuracy']:.2%}"

  def end_epoch(self, run, state, epoch, means) -> tuple[dict[str, float], str]:
    """The validation split's loss and accuracy (and the test split's, with test_every_epoch)."""
    m, line = {}, ""
    if "validation" in run.arrays:
      val = metrics_lib.summarize(run.driver.evaluate(state, *run.arrays["validation"]))
      m.update({"validation/loss": val["loss"], "validation/accuracy": val["accuracy"]})
      line += f"  |  val loss {val['loss']:.4f} acc {val['accuracy']:.2%}"
    if self.config.test_every_epoch:
      test = metrics_lib.summarize(run.driver.evaluate(state, *run.arrays["test"]))
      m.update({"test/loss": test["loss"], "test/accuracy": test["accuracy"]})
      line += f"  |  test acc {test['accuracy']:.2%}"
    return m, line

  def finish(self, run, state) -> tuple[dict[str, Any], str]:
    test = metrics_lib.summarize(run.driver.evaluate(state, *run.arrays["test"]))
    return test, metrics_lib.format_report(test, run.ds.class_names)

  def headline(self, test: dict[str, Any]) -> str:
    return f"test accuracy {test['accuracy']:.2%}"

  def write_report(self, workdir: str, ds) -> None:
    """The run's figures and report.html; a failure costs the report only, never the run."""
    from training import report as report_lib  # matplotlib is imported only here
    try:
      report_lib.write_report(workdir, dataset=ds)
    except report_lib.ReportError as e:
      log(f"Warning: no report was written: {e}")


tasks.register("classify", Classify)
