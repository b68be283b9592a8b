"""Image classification: a `nets` classifier trained with cross-entropy, evaluated by accuracy."""

from __future__ import annotations

import functools
from typing import Any, Callable

import ml_collections
import numpy as np

from training.compute import build, device, optim
from training.tasks.classify import finetune, scores, state as state_lib, steps
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
  finetunes = True

  def __init__(self, config, num_classes, image_shape, population):
    super().__init__(config, num_classes, image_shape, population)
    self.train_step = functools.partial(steps.train_step, **step_options(config))

  def device_steps(self) -> dict[str, Callable]:
    return steps.device_steps(**step_options(self.config))

  @classmethod
  def check_start(cls, config, origin=None) -> None:
    finetune.validate(config, origin)

  def finetune(self, state, dataset_info, schedule, origin=None
               ) -> tuple[state_lib.TrainState, dict[str, Any] | None]:
    return finetune.initialize(self.config, state, dataset_info, schedule, self.population,
                               origin)

  def init_state(self, schedule: Callable, init_key, train_key) -> state_lib.TrainState:
    model = build.build_model(self.config, self.num_classes)
    swept = self.population.swept
    tx = optim.make_optimizer(self.config, schedule, swept=swept)
    return state_lib.create_train_state(model, tx, self.image_shape, init_key, train_key,
                                        ema=self.config.ema_decay > 0 or "ema_decay" in swept,
                                        num_classes=self.num_classes)

  def train_line(self, means: dict[str, Any]) -> str:
    return (f"train loss {base.spread(means['train/loss'], '.4f')} acc "
            f"{base.spread(means['train/accuracy'], '.2%')}")

  def end_epoch(self, run, state, epoch, means) -> tuple[dict[str, Any], str]:
    """The validation split's loss and accuracy (and the test split's, with test_every_epoch):
    for a population, each member's (arrays) and their ensemble's."""
    m, line = {}, ""
    own = "own_validation" in run.arrays  # population_splits: each member its own
    for split, short in (("own_validation" if own else "validation", "val"), ("test", "test")):
      if split in run.arrays and (split != "test" or self.config.test_every_epoch):
        scored, ensemble = self._scores(run, state, split)
        split = split.replace("own_", "")
        m.update({f"{split}/loss": scored["loss"], f"{split}/accuracy": scored["accuracy"]})
        line += (f"  |  {short} loss {base.spread(scored['loss'], '.4f')} acc "
                 f"{base.spread(scored['accuracy'], '.2%')}")
        if ensemble is not None:
          m.update({f"{split}/ensemble_loss": ensemble["loss"],
                    f"{split}/ensemble_accuracy": ensemble["accuracy"]})
          best = int(np.argmax(scored["accuracy"]))
          line += (f" (best member {best}: {scored['accuracy'][best]:.2%}; ensemble "
                   f"{ensemble['accuracy']:.2%})")
    return m, line

  def _scores(self, run, state, split: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(the scores of `split`: numbers, or for a population arrays of each member's; the
    ensemble's scores, or None for a single model)."""
    evaluate = run.driver.evaluate_own if split.startswith("own_") else run.driver.evaluate
    totals = evaluate(state, *run.arrays[split])
    if not run.members:
      return scores.summarize(totals), None
    each = [scores.summarize(device.take(totals["members"], k)) for k in range(len(run.members))]
    return ({k: np.asarray([e[k] for e in each]) for k in ("loss", "accuracy", "macro_f1")},
            scores.summarize(totals["ensemble"]) if "ensemble" in totals else None)

  def finish(self, run, state) -> tuple[dict[str, Any], str]:
    """The test scores; for a population, the members' mean and each member's, the spread of
    their accuracy, and the ensemble's full scores."""
    scored, ensemble = self._scores(run, state, "test")
    if ensemble is None:
      return scored, scores.format_report(scored, run.ds.class_names)
    mean, std = base.mean_std(scored["accuracy"])
    table = [{"member": m.index, "seed": m.seed, **m.values,
              **{k: float(scored[k][m.index]) for k in ("accuracy", "loss", "macro_f1")}}
             for m in run.members]
    test = {"accuracy": mean, "loss": float(np.mean(scored["loss"])),
            "macro_f1": float(np.mean(scored["macro_f1"])), "count": ensemble["count"],
            "members": table, "mean": mean, "std": std, "ensemble": ensemble}
    lines = [f"test: member {m.index} ({m.label()}): loss {row['loss']:.4f}  accuracy "
             f"{row['accuracy']:.2%}  macro F1 {row['macro_f1']:.4f}"
             for m, row in zip(run.members, table)]
    report = scores.format_report(ensemble, run.ds.class_names).replace("test:", "ensemble:", 1)
    return test, "\n".join(lines + [report])

  def headline(self, test: dict[str, Any]) -> str:
    if "members" not in test:
      return f"test accuracy {test['accuracy']:.2%}"
    n, swept = len(test["members"]), self.population.swept
    ensemble = f"ensemble {test['ensemble']['accuracy']:.2%}"
    if not swept:
      return (f"test accuracy {test['mean'] * 100:.2f} +- {test['std'] * 100:.2f}% over {n} seeds; "
              + ensemble)
    # A sweep's settings are different recipes: each gets the mean +- std over its own seeds.
    settings: dict[str, list[float]] = {}
    for row in test["members"]:
      name = ", ".join(f"{field}={row[field]:g}" for field in swept)
      settings.setdefault(name, []).append(row["accuracy"])
    seeds = len(next(iter(settings.values())))
    return (f"test accuracy over {seeds} seed{'s' if seeds > 1 else ''} a setting: "
            + "; ".join(f"{name}: {base.spread(acc if len(acc) > 1 else acc[0], '.2%')}"
                        for name, acc in settings.items())
            + f"; {ensemble} of all {n} members")


base.register("classify", Classify)
