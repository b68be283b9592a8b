"""A run compiles each of its programs once: how many XLA compilations it makes does not depend on
its length, its log or checkpoint interval, where it resumed or where it stops.

On a GPU each compilation of the train step costs seconds; a loop whose call lengths change from
epoch to epoch compiled dozens of them in a run.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import re

import jax
import pytest
from tensorflow_datasets.testing import mock_data as tfds_mock

from training import Preempted, train_and_evaluate

from conftest import load_config, shrink

_COMPILING = re.compile(r"Compiling (?:jit\()?([^ )]+)")


@contextlib.contextmanager
def compilations():
  """Counts the programs compiled inside the block, by jitted function name."""
  counts: collections.Counter = collections.Counter()

  class Count(logging.Handler):
    def emit(self, record):
      if match := _COMPILING.match(record.getMessage()):
        counts[match.group(1)] += 1

  handler, logger = Count(), logging.getLogger("jax._src.interpreters.pxla")
  logger.addHandler(handler)
  try:
    with jax.log_compiles(True):
      yield counts
  finally:
    logger.removeHandler(handler)


def _config(**overrides):
  # 11 steps an epoch (180 of the 200 mock examples); logs every 3 steps and saves every 5
  # (neither divides the other, nor the epoch); scans of 4 steps, as GPUs and TPUs run them, so
  # the epoch ends in a scan of 3.
  settings = {"max_train_examples": 0, "log_every_steps": 3, "steps_per_call": 4,
              "checkpoint.every_steps": 5, **overrides}
  return shrink(load_config("mlp"), **settings)


@pytest.fixture
def mock_mnist():
  with tfds_mock(num_examples=200):
    yield


@pytest.fixture(scope="module", autouse=True)
def warm(tmp_path_factory):
  """One run first: what any run compiles once per process (eager operations on fixed shapes)
  is then compiled, and each test counts what its runs compile themselves."""
  with tfds_mock(num_examples=200):
    train_and_evaluate(_config(num_epochs=1), str(tmp_path_factory.mktemp("warm")))


def _train_programs(counts) -> dict[str, int]:
  return {name: n for name, n in counts.items() if "train" in name}


def test_compilations_do_not_depend_on_the_number_of_epochs(mock_mnist, tmp_path):
  counts = {}
  for epochs in (2, 5):
    with compilations() as counts[epochs]:
      train_and_evaluate(_config(num_epochs=epochs), str(tmp_path / str(epochs)))
  assert counts[2] == counts[5]
  train = _train_programs(counts[5])
  assert sum(train.values()) <= 2, train  # the 4-step scan and the epoch's 3-step tail
  assert counts[5]["evaluate_batch"] <= 2, counts[5]  # one per split size (validation, test)
  others = {k: n for k, n in counts[5].items() if k not in train and k != "evaluate_batch"}
  assert all(n == 1 for n in others.values()), others


def test_a_resumed_run_compiles_what_an_uninterrupted_one_does(mock_mnist, tmp_path):
  with compilations() as whole:
    train_and_evaluate(_config(num_epochs=3), str(tmp_path / "whole"))
  with pytest.raises(Preempted), compilations() as first:
    train_and_evaluate(_config(num_epochs=3, stop_after_steps=13), str(tmp_path / "split"))
  with compilations() as resumed:  # from step 13: mid-epoch, off the scan's grid
    train_and_evaluate(_config(num_epochs=3), str(tmp_path / "split"))
  assert sum(_train_programs(first).values()) <= 2, first
  assert resumed == whole, (resumed, whole)
  # The scans' metrics of steps 12-13 (after the record at 11) travel in the checkpoint at 13:
  # the records are the uninterrupted run's, value for value.
  records = [[{k: v for k, v in json.loads(line).items() if not k.startswith("time/")}
              for line in (tmp_path / w / "metrics.jsonl").read_text().splitlines()]
             for w in ("whole", "split")]
  assert records[0] == records[1]


def test_the_per_step_path_compiles_one_train_program(mock_mnist, tmp_path):
  with compilations() as counts:
    train_and_evaluate(_config(num_epochs=2, steps_per_call=1), str(tmp_path / "run"))
  assert sum(_train_programs(counts).values()) == 1, counts
