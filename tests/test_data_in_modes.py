"""The data as the modes name it: evaluate's data errors name evaluate's own flags, the report's
mistakes are numbered by an index a person can look up (and say which), and a class picked by
position among named classes is said so."""

from __future__ import annotations

import dataclasses
import gzip
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from training import DataNotFoundError, data, train_and_evaluate
from training.data import Split
from training.modes import evaluate, report

from conftest import REPO, load_config, needs_tfds_mnist, real_idx_dir, shrink, unused_url


@pytest.fixture(scope="module")
def idx_run(tmp_path_factory) -> str:
  """A few steps of the MLP on MNIST read from its IDX files."""
  workdir = str(tmp_path_factory.mktemp("idx_run") / "w")
  train_and_evaluate(shrink(load_config("mlp"), data_dir=real_idx_dir()), workdir)
  return workdir


def test_evaluate_names_its_own_data_flags(idx_run, tmp_path):
  """Issue 33 #6: --mode=evaluate takes --data_dir (and --data_url), not --config.data_dir."""
  env = {k: v for k, v in os.environ.items() if k != "TFDS_DATA_DIR"}
  run = subprocess.run([sys.executable, "train.py", "--mode=evaluate", f"--workdir={idx_run}",
                        f"--data_dir={tmp_path / 'none'}", f"--data_url={unused_url()}"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert run.returncode == 1 and run.stderr.startswith("error: Could not download mnist's")
  assert len(run.stderr.strip().splitlines()) == 1, run.stderr
  assert "--data_dir at a folder" in run.stderr and "--data_url at another mirror" in run.stderr
  assert "--config." not in run.stderr
  # A tfds dataset that is not prepared: the same.
  config = load_config("mlp")
  config.dataset = "cifar10"
  with pytest.raises(DataNotFoundError) as e:
    evaluate.load_data(config, str(tmp_path / "none"), None)
  assert "point to prepared data: --data_dir=/path/to/tensorflow_datasets" in str(e.value)
  assert "--config." not in str(e.value) and config.data_dir is None  # the config is untouched


def _file_labels() -> np.ndarray:
  with gzip.open(os.path.join(real_idx_dir(), "t10k-labels-idx1-ubyte.gz")) as f:
    return np.frombuffer(f.read()[8:], np.uint8)


def test_the_mistakes_are_numbered_in_the_sources_order(idx_run, data_cache):
  """Issue 33 #20: a mistake's #index is the test example's index in its source, and the report
  says which order that is: the original file's for IDX data, tfds's own for tfds data."""
  whole = data.load("mnist", data_dir=real_idx_dir(), cache_dir="none")
  t = whole.test
  later = dataclasses.replace(whole, test=Split(t.images[5000:], t.labels[5000:],
                                                t.indices[5000:]))
  result = report.write_report(idx_run, dataset=later)
  assert result["index_order"] == "the original files' order (t10k-images-idx3-ubyte for test)"
  shown = result["mistakes"]
  assert shown and all(m["index"] >= 5000 for m in shown)  # not positions in the split given
  labels = _file_labels()
  assert all(labels[m["index"]] == m["label"] != m["predicted"] for m in shown)


def test_the_mistakes_of_tfds_data_are_numbered_in_tfds_order(idx_run, data_cache):
  """The same run reported on tfds data: its indices are tfds's, and the report says so."""
  tfds_data = data.load("mnist", data_dir=needs_tfds_mnist(), cache_dir=data_cache)
  from_tfds = report.write_report(idx_run, dataset=tfds_data)
  assert from_tfds["index_order"].startswith("tfds's order of mnist/3.0.1")
  assert all(tfds_data.test.labels[m["index"]] == m["label"] for m in from_tfds["mistakes"])


def _png(path) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(np.random.default_rng(len(str(path))).integers(0, 256, (8, 8), np.uint8)
                  ).save(path)


def test_classes_by_position_among_named_classes_are_named_in_a_note(tmp_path, capsys):
  """Issue 33 #23: folders sort as eight, five, nine, so `0,1` is eight and five: said, in a
  note that names the folder by its path."""
  for name in ("nine", "five", "eight"):
    for i in range(3):
      _png(tmp_path / "words" / name / f"{i}.png")
  folder = f"folder:{tmp_path / 'words'}"
  ds = data.load(folder, classes="0,1", cache_dir="none", validation_fraction=0.0)
  assert ds.class_names == ["eight", "five"]
  [noted] = [line for line in capsys.readouterr().out.splitlines() if "classes=0,1" in line]
  assert noted.startswith(f"note: --config.classes=0,1: the folder {tmp_path / 'words'} has no "
                          "class named 0 or 1, so those are read as positions")
  assert "0 -> eight, 1 -> five" in noted and "--config.classes=eight,five" in noted
  assert data.load(folder, classes="eight,five", cache_dir="none",
                   validation_fraction=0.0).class_names == ["eight", "five"]
  digits = dataclasses.replace(ds, class_names=[str(i) for i in range(2)])
  data.select(digits, "1,0")  # MNIST's names are the indices: nothing to say
  assert "classes" not in capsys.readouterr().out
