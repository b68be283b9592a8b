"""Image folders as a dataset (--config.dataset=folder:/path), and class subsets / few-shot caps
(--config.classes, --config.max_per_class) on tfds and folder data alike."""

from __future__ import annotations

import dataclasses

import gzip
import importlib.util
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from training import train_and_evaluate
from training import data
from training.data import folder
from training.errors import ConfigError
from training import settings
from training.modes.train import checks
from training.modes import evaluate

from conftest import REPO, load_config, real_data_dir, real_idx_dir, shrink

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
PER_CLASS = 30


def _example_module():
  spec = importlib.util.spec_from_file_location("mnist_to_folder",
                                                REPO / "examples" / "mnist_to_folder.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture(scope="module")
def mnist_folder(tmp_path_factory) -> str:
  """Real MNIST digits as PNGs, 30 per class and split, in folders named zero..nine."""
  out = str(tmp_path_factory.mktemp("mnist_folder"))
  assert _example_module().write(out, PER_CLASS, names="words") == 2 * 10 * PER_CLASS
  return out


def _png(path, value: int = 0, size=(28, 28), mode="L", seed=0) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  rng = np.random.default_rng(seed)
  shape = (size[1], size[0]) + ((3,) if mode == "RGB" else ())
  Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8) // 2 + value // 2).save(path)


def _folder(root, classes: dict[str, int]) -> str:
  """A flat folder: for each class name, that many random PNGs."""
  for name, n in classes.items():
    os.makedirs(root / name, exist_ok=True)
    for i in range(n):
      _png(str(root / name / f"{i}.png"), seed=i)
  return str(root)


def _load(path, **kw) -> data.Dataset:
  return data.load(f"folder:{path}", cache_dir=kw.pop("cache_dir", "none"), **kw)


# --- the folder dataset ---------------------------------------------------------------------


def test_folder_of_mnist_pngs_is_mnist(mnist_folder):
  ds = _load(mnist_folder)
  assert ds.name == "folder:" + os.path.basename(mnist_folder)
  assert ds.class_names == sorted(WORDS) and ds.num_classes == 10 and ds.image_shape == (28, 28, 1)
  # train/ and test/ given: test is test/ whole, validation is carved from train/.
  assert len(ds.test) == 10 * PER_CLASS
  assert len(ds.train) + len(ds.validation) == 10 * PER_CLASS and len(ds.validation) == PER_CLASS
  assert np.array_equal(np.bincount(ds.test.labels), [PER_CLASS] * 10)
  # The PNGs decode to MNIST's own pixels, with labels from the folder names.
  images, _ = _example_module().load_split("test", real_idx_dir())
  first = sorted(os.listdir(os.path.join(mnist_folder, "test", "eight")))[0]
  assert np.array_equal(ds.test.images[0, ..., 0], images[int(first[5:10])])
  assert ds.info()["class_names"] == sorted(WORDS)


def _mnist_to_folder(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "examples/mnist_to_folder.py", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=300)


def _spoilt_idx_dir(tmp_path, name: str, content: bytes) -> str:
  """A copy of the real IDX files in which `name` holds `content`."""
  spoilt = tmp_path / "mnist"
  shutil.copytree(real_idx_dir(), spoilt)
  (spoilt / name).write_bytes(content)
  return str(spoilt)


def _tree(root) -> dict[str, bytes]:
  return {str(p.relative_to(root)): p.is_dir() or p.read_bytes() for p in root.rglob("*")}


def test_mnist_to_folder_refuses_bad_options_and_files_in_one_line(tmp_path):
  """One `error:` line saying what is wrong and what to do, exit status 1, and nothing written
  or changed."""
  (tmp_path / "a_file").write_text("mine")
  (tmp_path / "out" / "train").mkdir(parents=True)
  (tmp_path / "out" / "train" / "3").write_text("a file where a class folder goes")
  images = tmp_path / "train-images-idx3-ubyte.gz"
  shutil.copy(os.path.join(real_idx_dir(), images.name), images)
  cut = images.read_bytes()[:5000]
  with gzip.open(images) as f:
    short = gzip.compress(f.read(5000))  # a valid gzip of the first 5,000 bytes of the IDX file
  labels = os.path.join(real_idx_dir(), "train-labels-idx1-ubyte.gz")
  cases = {  # options: the start of the error line
      ("--out=OUT/new", "--per_class=-1"):
          "error: --per_class=-1: give a number of images per digit, or 0 for all.",
      ("--out=OUT/a_file", "--per_class=1"):
          "error: OUT/a_file is a file, not a folder, so OUT/a_file/train/0 cannot be made",
      ("--out=OUT/a_file/below", "--per_class=1"):
          "error: OUT/a_file is a file, not a folder, so OUT/a_file/below/train/0 cannot be made",
      ("--out=OUT/out", "--per_class=1"):
          "error: OUT/out/train/3 is a file, not a folder, so OUT/out/train/3 cannot be made",
      ("--out=OUT/new", "--per_class=1", "--mnist_dir=" + _spoilt_idx_dir(
          tmp_path / "cut", images.name, cut)):
          f"error: cannot read {tmp_path}/cut/mnist/{images.name} (Compressed file ended before",
      ("--out=OUT/new", "--per_class=1", "--mnist_dir=" + _spoilt_idx_dir(
          tmp_path / "short", images.name, short)):
          f"error: {tmp_path}/short/mnist/{images.name} is not a complete IDX file of bytes "
          f"(5,000 bytes); copy the four files again",
      ("--out=OUT/new", "--per_class=1", "--mnist_dir=" + _spoilt_idx_dir(
          tmp_path / "text", "t10k-labels-idx1-ubyte.gz", b"not gzip")):
          f"error: cannot read {tmp_path}/text/mnist/t10k-labels-idx1-ubyte.gz (Not a gzipped ",
      ("--out=OUT/new", "--per_class=1", "--mnist_dir=" + _spoilt_idx_dir(  # train's labels
          tmp_path / "swapped", "t10k-labels-idx1-ubyte.gz", open(labels, "rb").read())):
          f"error: {tmp_path}/swapped/mnist/t10k-images-idx3-ubyte.gz and {tmp_path}/swapped/"
          f"mnist/t10k-labels-idx1-ubyte.gz are not MNIST's 28x28 images and their labels "
          f"(found shapes (10000, 28, 28) and (60000,))",
  }
  before = _tree(tmp_path)
  for options, error in cases.items():
    run = _mnist_to_folder(*(o.replace("OUT", str(tmp_path)) for o in options))
    assert run.returncode == 1 and not run.stdout, (options, run.stdout, run.stderr[-2000:])
    assert "Traceback" not in run.stderr and len(run.stderr.strip().splitlines()) == 1, (
        options, run.stderr[-2000:])
    assert run.stderr.startswith(error.replace("OUT", str(tmp_path))), (options, run.stderr)
    assert _tree(tmp_path) == before, options  # nothing made, nothing changed
  example = _example_module()
  with pytest.raises(example.InputError, match="--per_class=-2"):
    example.write(str(tmp_path / "new"), -2)
  (tmp_path / "out" / "train" / "3").unlink()  # out/ as it should be: written
  run = _mnist_to_folder(f"--out={tmp_path}/out", "--per_class=1")
  assert run.returncode == 0 and run.stdout.startswith("wrote 20 PNG files"), run.stderr[-2000:]
  assert len(list((tmp_path / "out").rglob("*.png"))) == 20


def test_folder_trains_evaluates_and_predicts_with_its_class_names(mnist_folder, tmp_path,
                                                                    data_cache):
  config = shrink(load_config("mlp"), dataset=f"folder:{mnist_folder}", max_train_examples=0,
                  max_eval_examples=0, num_epochs=4, batch_size=32, cache_dir=data_cache)
  workdir = str(tmp_path / "run")
  _, summary = train_and_evaluate(config, workdir)
  assert summary["test"]["count"] == 10 * PER_CLASS
  assert summary["test"]["accuracy"] > 0.6  # 270 training digits
  evaluated = evaluate.evaluate(workdir, "latest")
  assert evaluated["dataset"] == "folder:" + os.path.basename(mnist_folder)
  assert evaluated["count"] == 10 * PER_CLASS
  files = [os.path.join(mnist_folder, "test", w, sorted(os.listdir(
      os.path.join(mnist_folder, "test", w)))[0]) for w in ("three", "seven")]
  out = subprocess.run([sys.executable, "train.py", "--mode=predict", f"--workdir={workdir}",
                        *files], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr
  *lines, summary = out.stdout.strip().splitlines()
  assert len(lines) == 2 and summary.startswith("2 files: 2 classified")
  for line in lines:  # the folder's class names, and no --invert note (no ink convention)
    assert line.split()[1] in WORDS, line
    assert [w for w in re.findall(r"(\S+) [<\d.]+%", line)] and all(
        w in WORDS for w in re.findall(r"(\S+) [<\d.]+%", line)), line
  assert "--invert" not in out.stdout


def test_flat_folder_carves_test_and_validation_reproducibly(tmp_path):
  root = _folder(tmp_path / "flat", {"cat": 20, "dog": 30, "emu": 10})
  ds = _load(root, validation_fraction=0.1, split_seed=3, folder={"test_fraction": 0.2})
  assert ds.class_names == ["cat", "dog", "emu"]
  assert np.array_equal(np.bincount(ds.test.labels), [4, 6, 2])  # a fifth of each class
  assert len(ds.train) + len(ds.validation) + len(ds.test) == 60 and len(ds.validation) == 5
  parts = [set(s.indices) for s in (ds.train, ds.validation, ds.test)]
  assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
  again = _load(root, validation_fraction=0.1, split_seed=3, folder={"test_fraction": 0.2})
  other = _load(root, validation_fraction=0.1, split_seed=4, folder={"test_fraction": 0.2})
  assert np.array_equal(again.test.indices, ds.test.indices)
  assert np.array_equal(again.validation.indices, ds.validation.indices)
  assert not np.array_equal(other.test.indices, ds.test.indices)


def test_images_of_any_size_and_mode_become_the_configured_shape(tmp_path):
  _png(str(tmp_path / "f" / "a" / "big.png"), size=(90, 60), mode="RGB")
  _png(str(tmp_path / "f" / "a" / "small.bmp"), size=(10, 10))
  os.makedirs(tmp_path / "f" / "b")
  Image.new("RGBA", (40, 40), (255, 0, 0, 128)).save(tmp_path / "f" / "b" / "x.png")
  Image.new("RGB", (50, 30), (0, 255, 0)).save(tmp_path / "f" / "b" / "y.jpg")
  for size, channels in ((28, 1), (16, 3)):
    ds = _load(tmp_path / "f", folder={"image_size": size, "channels": channels,
                                      "test_fraction": 0.5}, validation_fraction=0.0)
    assert ds.image_shape == (size, size, channels)
    assert ds.train.images.shape[1:] == ds.test.images.shape[1:] == (size, size, channels)
    assert ds.validation is None and len(ds.train) + len(ds.test) == 4


def test_16_bit_images_are_scaled_not_clipped(tmp_path):
  """A 16-bit PNG of an MNIST-range digit trains as its 8-bit original: PIL's convert("L")
  clipped it at 255, to pure black and white, without a word."""
  digit = np.zeros((28, 28), np.uint8)
  digit[6:22, 12:16] = np.linspace(40, 255, 16, dtype=np.uint8)[:, None]  # a grey-ramp stroke
  for name, array in (("eight", digit), ("sixteen", digit.astype(np.uint16) * 257)):
    os.makedirs(tmp_path / "f" / name)
    for i in range(2):
      Image.fromarray(array).save(tmp_path / "f" / name / f"{i}.png")
  ds = _load(tmp_path / "f", folder={"image_size": 28, "channels": 1,
                                             "test_fraction": 0.5}, validation_fraction=0.0)
  eight, sixteen = (ds.train.images[ds.train.labels == ds.class_names.index(n)][0, :, :, 0]
                    for n in ("eight", "sixteen"))
  np.testing.assert_array_equal(sixteen, eight)
  assert len(np.unique(sixteen)) > 10  # the grey levels survived


def test_decoded_folder_is_cached_and_decoded_again_when_it_changes(tmp_path, monkeypatch):
  root = _folder(tmp_path / "f", {"a": 4, "b": 4})
  cache = str(tmp_path / "cache")
  first = _load(root, cache_dir=cache, validation_fraction=0.0)
  assert [f for f in os.listdir(cache) if f.startswith("folder-f-")]
  calls = []
  real_decode = folder.decode
  monkeypatch.setattr(folder, "decode", lambda *a: calls.append(1) or real_decode(*a))
  again = _load(root, cache_dir=cache, validation_fraction=0.0)
  assert not calls and np.array_equal(again.train.images, first.train.images)
  _png(os.path.join(root, "b", "new.png"), seed=9)  # a changed folder is decoded again
  changed = _load(root, cache_dir=cache, validation_fraction=0.0)
  assert calls and len(changed.train) + len(changed.test) == 9
  assert len(os.listdir(cache)) == 1  # overwritten, not piled up
  _load(root, cache_dir=cache, validation_fraction=0.0, folder={"image_size": 14})
  assert len(os.listdir(cache)) == 2  # another size is another file


def test_unreadable_files_are_skipped_with_a_count_and_names(tmp_path, capsys):
  root = _folder(tmp_path / "f", {"a": 5, "b": 5})
  for i in range(7):
    (tmp_path / "f" / "a" / f"broken{i}.png").write_bytes(b"not a png")
  (tmp_path / "f" / "b" / "notes.txt").write_text("hello")
  (tmp_path / "f" / "b" / ".hidden.png").write_bytes(b"ignored: hidden")
  ds = _load(root, validation_fraction=0.0, folder={"test_fraction": 0.2})
  assert len(ds.train) + len(ds.test) == 10
  [message] = [line for line in capsys.readouterr().out.splitlines() if "unreadable" in line]
  assert message.startswith("note: skipped 8 unreadable file(s)") and "a/broken0.png" in message
  assert "and 3 more" in message and ".hidden" not in message


@pytest.mark.parametrize("make, expected", [
    (lambda r: _folder(r, {"a": 3, "b": 0}), r"b hold no readable images"),
    (lambda r: _folder(r, {"a": 3}), r"single class folder, a/"),
    (lambda r: _folder(r, {"a": 0, "b": 0}), r"holds no readable images"),
    (lambda r: (_folder(r / "train", {"a": 3, "b": 3}), _folder(r / "test", {"a": 1, "c": 1})),
     r"class folder\(s\) c, which .*train does not have"),
    (lambda r: _folder(r / "test", {"a": 3, "b": 3}), r"no train/ folder"),
    (lambda r: (_folder(r / "train", {"a": 3, "b": 3}), (r / "test").mkdir()),
     r"test holds no readable images in class folders"),
    (lambda r: (_folder(r / "train", {"a": 3, "b": 3}), _folder(r / "extra", {"a": 1})),
     r"also the folders extra"),
    (lambda r: (r.mkdir(), (r / "x.png").write_bytes(b"")), r"has no class folders"),
    (lambda r: None, r"No image folder"),
])
def test_bad_folders_get_one_clear_error(make, expected, tmp_path):
  make(tmp_path / "f")
  with pytest.raises(folder.FolderError, match=expected):
    _load(tmp_path / "f")


@pytest.mark.parametrize("field, value, expected", [
    ("folder.channels", 2, "folder.channels must be 1"),
    ("folder.image_size", 0, "folder.image_size must be at least 1"),
    ("folder.test_fraction", 1.0, "test_fraction must be in"),
    ("max_per_class", -1, "max_per_class must be at least 0"),
    ("classes", "1,,2", "empty entry"),
    ("classes", "1,2,1", "names 1 more than once"),
    ("classes", "3", "single class"),
])
def test_config_checks(field, value, expected, tmp_path):
  config = load_config("cnn")
  settings.set_fields(config, {field: value, "dataset": f"folder:{tmp_path}"})
  with pytest.raises(ConfigError, match=expected):
    checks.validate(config)


def test_refused_folder_run_writes_nothing(tmp_path):
  workdir = tmp_path / "run"
  out = subprocess.run([sys.executable, "train.py", "--config=configs/mlp.py",
                        f"--config.dataset=folder:{tmp_path / 'missing'}", f"--workdir={workdir}"],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
  assert out.returncode == 1 and out.stderr.strip().startswith("error: No image folder")
  assert len(out.stderr.strip().splitlines()) == 1 and not workdir.exists()


# --- class subsets and per-class caps -------------------------------------------------------


@pytest.fixture(scope="module")
def mnist(data_cache) -> data.Dataset:
  return data.load("mnist", data_dir=real_data_dir(), cache_dir=data_cache)


def test_class_subset_is_relabelled_in_every_split(mnist, data_cache):
  ds = data.load("mnist", data_dir=real_data_dir(), classes="5,6,7,8,9", cache_dir=data_cache)
  assert ds.class_names == ["5", "6", "7", "8", "9"] and ds.num_classes == 5
  for part, whole in ((ds.train, mnist.train), (ds.validation, mnist.validation),
                      (ds.test, mnist.test)):
    assert set(np.unique(part.labels)) == set(range(5))
    assert np.array_equal(np.bincount(part.labels), np.bincount(whole.labels)[5:])
    assert np.array_equal(part.indices, whole.indices[whole.labels >= 5])
    assert np.array_equal(part.images, whole.images[whole.labels >= 5])


def test_class_subset_keeps_the_order_given_and_takes_names_or_indices(mnist):
  ds = data.select(mnist, "9,3")
  assert ds.class_names == ["9", "3"]
  assert np.array_equal(ds.test.images[ds.test.labels == 0], mnist.test.images[mnist.test.labels
                                                                                == 9])
  words = dataclasses.replace(mnist, class_names=list(WORDS))
  assert data.select(words, "nine,3").class_names == ["nine", "three"]
  with pytest.raises(ConfigError, match=r"Unknown class 'ten'.*zero, one, two"):
    data.select(words, "ten,one")
  with pytest.raises(ConfigError, match="same class twice"):
    data.select(words, "one,1")


def test_max_per_class_is_exact_reproducible_and_nested(mnist):
  ds = data.select(mnist, "", max_per_class=7, seed=0)
  assert np.array_equal(np.bincount(ds.train.labels), [7] * 10)
  assert np.array_equal(ds.train.indices, data.select(mnist, "", 7, seed=0).train.indices)
  assert set(ds.train.indices) < set(data.select(mnist, "", 8, seed=0).train.indices)
  assert not np.array_equal(ds.train.indices, data.select(mnist, "", 7, seed=1).train.indices)
  assert ds.validation is mnist.validation and ds.test is mnist.test  # validation unchanged
  both = data.select(mnist, "2,4", max_per_class=6000)  # fewer than 6000 of each: all of them
  assert np.array_equal(np.bincount(both.train.labels),
                        [np.sum(mnist.train.labels == 2), np.sum(mnist.train.labels == 4)])
  # Applied to a subset, the cap picks the same examples of a class as on the whole.
  sub = data.select(mnist, "3,5", max_per_class=7)
  assert np.array_equal(sub.train.indices[sub.train.labels == 0],
                        ds.train.indices[ds.train.labels == 3])


def test_subset_and_cap_apply_to_folder_data_through_the_config(mnist_folder, tmp_path):
  config = load_config("mlp")
  settings.set_fields(config, {"dataset": f"folder:{mnist_folder}", "classes": "seven,one",
                               "max_per_class": 4, "cache_dir": "none"})
  checks.validate(config)
  ds = data.from_config(config)
  assert ds.class_names == ["seven", "one"] and ds.num_classes == 2
  assert np.array_equal(np.bincount(ds.train.labels), [4, 4])
  assert np.array_equal(np.bincount(ds.test.labels), [PER_CLASS, PER_CLASS])
  assert ds.info()["class_names"] == ["seven", "one"]
