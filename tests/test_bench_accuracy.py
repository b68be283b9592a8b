"""bench/accuracy.py: which configs the README's results table covers, and how a row reads."""

from __future__ import annotations

import importlib.util

import configs
from conftest import REPO

_spec = importlib.util.spec_from_file_location("bench_accuracy", REPO / "bench" / "accuracy.py")
accuracy = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(accuracy)


def test_a_config_that_is_a_population_keeps_its_seeds():
  classifiers = [n for n in configs.names() if configs.task(n) == "classify"]
  assert accuracy._population("ensemble") == 5
  assert [n for n in classifiers if accuracy._population(n) > 1] == ["ensemble"]
  assert all(n in classifiers for n in accuracy.SEEDS)  # 5 seeds for the README's lead rows
  # The one config measured only on a lent accelerator (hours an epoch on this CPU).
  assert [n for n in classifiers if configs.waits_for_device(n)] == ["large"]


def test_a_row_is_mean_std_over_seeds_with_the_ensemble():
  row = {"config": "cnn", "model": "cnn", "seeds": 5, "accuracy": 0.99234, "std": 0.00049,
         "min": 0.9914, "max": 0.9928, "ensemble": 0.9931, "macro_f1": 0.99228, "params": 421642,
         "epochs": 5, "epoch_s": 61.23, "wall_s": 343.4}
  worse = dict(row, config="mlp", model="mlp", accuracy=0.9854)
  table = accuracy.markdown([worse, row], "2 CPU cores").splitlines()
  assert table[0] == "Measured on 2 CPU cores."
  assert table[4] == ("| `configs/cnn.py` | cnn | 99.23 +- 0.05% (5) | 99.31% | 99.14%-99.28% | "
                      "0.9923 | 421,642 | 5 | 61.2 | 343 s |")
  assert table[5].startswith("| `configs/mlp.py` | mlp | 98.54 +- 0.05% (5) |")  # best first
