"""bench/accuracy.py: which configs docs/results.md covers, and that the rows it writes there
read back as the figures measured."""

from __future__ import annotations

import importlib.util

import configs
from conftest import REPO, results
from test_results import row_figures, text_figures

_spec = importlib.util.spec_from_file_location("bench_accuracy", REPO / "bench" / "accuracy.py")
accuracy = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(accuracy)


def test_a_config_that_is_a_population_keeps_its_seeds():
  classifiers = [n for n in configs.names() if configs.task(n) == "classify"]
  assert accuracy._population("ensemble") == 5
  assert [n for n in classifiers if accuracy._population(n) > 1] == ["ensemble"]
  assert all(n in classifiers for n in accuracy.SEEDS)  # 5 seeds for the lead rows
  # The one config measured only on a lent accelerator (hours an epoch on this CPU).
  assert [n for n in classifiers if configs.waits_for_device(n)] == ["large"]


ROW = {"config": "cnn", "model": "cnn",
       "command": "python train.py --config=configs/cnn.py --config.population=5", "seeds": 5,
       "accuracy": 0.99226, "std": 0.00049,
       "min": 0.9914, "max": 0.9928, "each": [0.9928, 0.9921, 0.9914, 0.9926, 0.9924],
       "ensemble": 0.9931, "macro_f1": 0.99228, "params": 421642, "epochs": 5, "epoch_s": 61.23,
       "wall_s": 1343.4}
MACHINE = {"machine": "2-core CPU", "versions": "jax 0.10.2", "date": "2026-12-05, 096b56c"}
FIGURES = {"mean": "99.23", "std": "0.05", "seeds": "5", "min": "99.14", "max": "99.28",
           "ensemble": "99.31", "parameters": "421642", "epochs": "5", "wall_s": "1343"}


def test_a_row_reads_back_as_the_figures_measured():
  table = accuracy.markdown([dict(ROW, config="mlp", accuracy=0.9854), ROW], MACHINE)
  assert table.splitlines()[2] == (
      "| `configs/cnn.py` | `python train.py --config=configs/cnn.py --config.population=5` | "
      "cnn | 5 | 99.28%, 99.21%, 99.14%, 99.26%, 99.24% | 99.23 +- 0.05% | "
      "99.14%-99.28% | 99.31% | 0.9923 | 421,642 | 5 | 61.2 | 1,343 s | 2-core CPU | jax 0.10.2 "
      "| 2026-12-05, 096b56c |")
  rows = results(table)
  assert list(rows) == ["cnn", "mlp"]  # best first
  assert row_figures(rows["cnn"]) == FIGURES
  # The docstring's sentence and the README's row state the same figures.
  assert text_figures(accuracy.docstring_line(ROW, MACHINE)) == {
      k: v for k, v in FIGURES.items() if k != "parameters"}
  readme = "| config | model | test accuracy, mean +- std (seeds) | ensemble | epochs | wall " \
           "clock, all seeds |\n|---|---|---|---|---|---|\n" + accuracy.readme_row(ROW)
  assert row_figures(results(readme)["cnn"]) == {
      k: FIGURES[k] for k in ("mean", "std", "seeds", "ensemble", "epochs", "wall_s")}


def test_writing_the_results_replaces_a_config_s_row_and_keeps_the_others(tmp_path):
  path = tmp_path / "results.md"
  path.write_text((REPO / "docs" / "results.md").read_text())
  before = results(path.read_text())
  accuracy.write_results(path, [dict(ROW, accuracy=0.9950)], MACHINE)
  after = results(path.read_text())
  assert set(after) == set(before)
  assert row_figures(after["cnn"])["mean"] == "99.50" and after["cnn"]["date, commit"] == \
      "2026-12-05, 096b56c"
  assert all(after[n] == before[n] for n in before if n != "cnn")
  assert list(after).index("cnn") == 1  # sorted again: now second, after best.py's 99.64
  assert path.read_text().split("| config |")[0] == \
      (REPO / "docs" / "results.md").read_text().split("| config |")[0]  # the prose kept
