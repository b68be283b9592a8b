"""Ensembles across runs: `--workdir=A --ensemble=B,C` in evaluate, predict and export.

The runs may differ in anything (config, model, population, split) but what their outputs mean:
the classes, by name and in order, and the input's shape. Every model counts once, a
population's members each, and the ensemble's class probabilities are the mean of all of
theirs: a run of 5 members beside a single model weighs 5 to 1, as if all six had been one
population. One function computes them (`probabilities`); evaluate scores it, predict applies it
and export writes it. With no --ensemble it is the run's own function, to the bit.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from training.errors import ConfigError
from training.tasks.classify import steps
from training.tasks import restore as restore_lib
from training.tasks.restore import Restored


def restore_all(workdir: str, ensemble: Sequence[str], which: str = "best",
                member: int | None = None) -> list[Restored]:
  """The checkpoint `which` of `workdir` and of each run of `ensemble` (none: `workdir`'s alone,
  or its member `member`), checked to share classes and input shape."""
  ensemble = [w for w in ensemble if w]
  if ensemble and member is not None:
    raise ConfigError("--member takes one member of a population, and --ensemble averages every "
                      "model of its runs: give one of the two.")
  paths = [os.path.abspath(w) for w in [workdir, *ensemble]]
  if len(set(paths)) < len(paths):
    raise ConfigError(f"--ensemble names a run twice, or {workdir} (the --workdir) again: list "
                      "each other run once.")
  runs = [restore_lib.restore(workdir, which, member=member)]
  runs += [restore_lib.restore(w, which) for w in ensemble]
  for other, run in zip(ensemble, runs[1:]):
    _check_compatible(workdir, runs[0].dataset_info, other, run.dataset_info)
  return runs


def _check_compatible(workdir: str, info: dict[str, Any], other: str,
                      other_info: dict[str, Any]) -> None:
  """Models whose probabilities cannot be averaged (other classes or inputs) are refused."""
  what = lambda i: (f"{i['name']} ({i['num_classes']} classes: "
                    f"{', '.join(str(c) for c in i['class_names'])}; input "
                    f"{'x'.join(str(d) for d in i['image_shape'])})")
  same = (list(info["image_shape"]) == list(other_info["image_shape"])
          and [str(c) for c in info["class_names"]] == [str(c) for c in other_info["class_names"]])
  if not same:
    raise ConfigError(f"--ensemble: {other} was trained on {what(other_info)}, {workdir} on "
                      f"{what(info)}; an ensemble averages the class probabilities of models of "
                      f"the same classes and input shape, so leave {other} out.")


def weights(runs: Sequence[Restored]) -> list[int]:
  """How many models each run adds: its members, or one."""
  return [max(len(r.members), 1) for r in runs]


def probabilities(runs: Sequence[Restored], states: Sequence[Any], images: jax.Array,
                  member_map: Callable[[Callable], Callable] = jax.vmap) -> jax.Array:
  """uint8 `images` -> the ensemble's class probabilities: the mean over every model of `runs`
  (their evaluation weights `states`); a population's members run by `member_map`."""
  x = steps.preprocess(images)
  total = None
  for run, state, weight in zip(runs, states, weights(runs)):
    p = jnp.exp(steps.log_probabilities(state, x, bool(run.members), member_map))
    total = p * weight if total is None else total + p * weight
  return total / sum(weights(runs))


def describe(runs: Sequence[Restored], workdirs: Sequence[str]) -> str:
  """"the ensemble of 8 models of runs/a, runs/b" for an ensemble across runs, else ""."""
  if len(runs) == 1:
    return ""
  return f"the ensemble of {sum(weights(runs))} models of {', '.join(workdirs)}"


def result_name(split: str, runs: Sequence[Restored], workdirs: Sequence[str],
                member: int | None = None) -> str:
  """The file that --mode=evaluate writes into the first workdir (and export reads back): of an
  ensemble across runs, named by a digest of its runs and checkpoints."""
  step = runs[0].step
  if len(runs) == 1:
    return f"eval_{split}_step{step}{'' if member is None else f'_member{member}'}.json"
  key = "|".join(f"{os.path.abspath(w)}@{r.step}" for w, r in zip(workdirs, runs))
  return f"eval_{split}_step{step}_ensemble_{hashlib.sha1(key.encode()).hexdigest()[:8]}.json"
