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
from training.data.folder import FolderError
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


# --- an image folder's run: its mistakes' files, and the folder moved after training ----------

DIGITS = {"one": 1, "four": 4, "seven": 7}  # class folder -> MNIST digit; sorted: four, one, seven


def _digit_folder(root, per_class: int = 40) -> str:
  """Real MNIST test digits as PNGs, <root>/<word>/<t10k index>.png, `per_class` of each."""
  with gzip.open(os.path.join(real_idx_dir(), "t10k-images-idx3-ubyte.gz")) as f:
    digits = np.frombuffer(f.read()[16:], np.uint8).reshape(-1, 28, 28)
  labels = _file_labels()
  for word, digit in DIGITS.items():
    os.makedirs(os.path.join(root, word))
    for i in np.flatnonzero(labels == digit)[:per_class]:
      Image.fromarray(digits[i]).save(os.path.join(root, word, f"{i:05d}.png"))
  return str(root)


def _folder_run(root: str, workdir: str, **overrides) -> str:
  """A few steps of the MLP on the folder, all of its test split evaluated; a learning rate so
  small that the model stays near its initial guesses, so that it makes mistakes."""
  config = shrink(load_config("mlp"), dataset=f"folder:{root}", max_train_examples=0,
                  max_eval_examples=0, learning_rate=1e-6, **overrides)
  train_and_evaluate(config, workdir)
  return workdir


def test_the_mistakes_of_an_image_folder_name_their_files(tmp_path):
  """A folder run's mistakes are numbered among the readable images of the folder (the report
  says so), and each names its file: the image that was tested and got wrong."""
  root = _digit_folder(tmp_path / "digits")
  with open(os.path.join(root, "four", "0-broken.png"), "wb") as f:  # sorts first, unreadable
    f.write(b"not an image")
  workdir = _folder_run(root, str(tmp_path / "run"))
  result = report.write_report(workdir)
  assert result["index_order"] == f"the readable images of {root} (class folders, then files, " \
                                  "sorted)"
  readable = [os.path.join(root, c, f) for c in sorted(DIGITS)
              for f in sorted(os.listdir(os.path.join(root, c))) if f != "0-broken.png"]
  ds = data.load(f"folder:{root}", cache_dir="none")
  page = open(result["files"]["report"]).read()
  assert result["mistakes"]
  for m in result["mistakes"]:
    assert m["file"] == readable[m["index"]] and m["file"] in page
    assert os.path.basename(os.path.dirname(m["file"])) == sorted(DIGITS)[m["label"]]
    [position] = np.flatnonzero(ds.test.indices == m["index"])
    assert np.array_equal(ds.test.images[position, ..., 0], np.asarray(Image.open(m["file"])))
  assert max(m["index"] for m in result["mistakes"]) >= len(ds.test)  # not a test position


def test_a_folder_with_a_test_folder_numbers_its_test_images(tmp_path):
  """With test/, the indices count its own images, and each names its file there."""
  _digit_folder(tmp_path / "f" / "train", 12)
  test_dir = _digit_folder(tmp_path / "f" / "test", 3)
  ds = data.load(f"folder:{tmp_path / 'f'}", cache_dir="none")
  assert ds.order == f"the readable images of {test_dir} (class folders, then files, sorted)"
  files = [ds.test_files[i] for i in ds.test.indices]
  assert files == [os.path.join(test_dir, c, f) for c in sorted(DIGITS)
                   for f in sorted(os.listdir(os.path.join(test_dir, c)))]
  assert [os.path.basename(os.path.dirname(f)) for f in files] == [
      sorted(DIGITS)[label] for label in ds.test.labels]


def _mode(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "train.py", *args], cwd=REPO, capture_output=True,
                        text=True, timeout=300)


def test_a_moved_image_folder_is_evaluated_and_reported_from_data_dir(tmp_path):
  """evaluate and report of a run whose folder has moved: refused in one line that names
  --data_dir=NEW_PATH; with --data_dir at the new place, the same scores."""
  root = _digit_folder(tmp_path / "digits")
  workdir = _folder_run(root, str(tmp_path / "run"))
  before = evaluate.evaluate(workdir)
  moved = str(tmp_path / "moved")
  os.rename(root, moved)
  refused = _mode("--mode=evaluate", f"--workdir={workdir}")
  assert refused.returncode == 1 and refused.stderr == (
      f"error: No image folder {root!r}, the folder this run was trained on: if it has moved, "
      "give its new path: --data_dir=NEW_PATH.\n")
  with pytest.raises(report.ReportError, match=r"No image folder .*--data_dir=NEW_PATH\.$"):
    report.write_report(workdir)
  after = evaluate.evaluate(workdir, data_dir=moved)
  assert (after["count"], after["accuracy"], after["loss"]) == (
      before["count"], before["accuracy"], before["loss"])
  reported = _mode("--mode=report", f"--workdir={workdir}", f"--data_dir={moved}")
  assert reported.returncode == 0, reported.stderr
  assert f"test ({before['count']} examples): accuracy {before['accuracy']:.2%}" in reported.stdout
  page = open(os.path.join(workdir, "report.html")).read()
  assert os.path.join(moved, "four") in page and os.path.join(root, "four") not in page
  with pytest.raises(FolderError, match=r"^No image folder .* \(given as "
                     rf"--data_dir={tmp_path}/gone\): .* \({root}\): --data_dir=NEW_PATH\.$"):
    evaluate.evaluate(workdir, data_dir=str(tmp_path / "gone"))


def test_a_folder_of_other_classes_is_refused_and_a_subset_run_is_not(tmp_path):
  """--data_dir at a folder whose classes are not the run's (one renamed, one added) is refused
  in one line; a run of a class subset is evaluated on a folder that has more classes."""
  root = _digit_folder(tmp_path / "digits")
  workdir = _folder_run(root, str(tmp_path / "run"))
  renamed = str(tmp_path / "renamed")
  os.rename(root, renamed)
  os.rename(os.path.join(renamed, "seven"), os.path.join(renamed, "nine"))
  with pytest.raises(FolderError) as e:
    evaluate.evaluate(workdir, data_dir=renamed)
  assert str(e.value) == (f"The image folder {renamed} has the classes four, nine, one, but this "
                          "run was trained on four, one, seven: point --data_dir=PATH at the "
                          "folder the run was trained on (its class folders unchanged).")
  os.rename(os.path.join(renamed, "nine"), os.path.join(renamed, "seven"))
  os.symlink(os.path.join(renamed, "one"), os.path.join(renamed, "uno"))
  with pytest.raises(report.ReportError, match="has the classes four, one, seven, uno, but this "
                     "run was trained on four, one, seven: "):
    report.write_report(workdir, data_dir=renamed)
  os.remove(os.path.join(renamed, "uno"))
  subset = _folder_run(renamed, str(tmp_path / "subset"), classes="seven,one")
  os.rename(renamed, str(tmp_path / "again"))
  result = evaluate.evaluate(subset, data_dir=str(tmp_path / "again"))
  assert result["count"] == 8 and len(result["per_class_accuracy"]) == 2
