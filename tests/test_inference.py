"""Evaluate and predict from a trained workdir (real MNIST), and the image conversion."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from training import ConfigError, data, images, inference, steps, train_and_evaluate

from conftest import REPO, load_config, real_data_dir, shrink


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_cache):
  """A short real-MNIST MLP run with 2 epochs, so best and latest checkpoints both exist."""
  workdir = str(tmp_path_factory.mktemp("mlp_run"))
  config = shrink(load_config("mlp"), num_epochs=2, max_train_examples=12800,
                  max_eval_examples=0, batch_size=128, eval_batch_size=1000,
                  log_every_steps=50, data_dir=real_data_dir(), cache_dir=data_cache)
  _, summary = train_and_evaluate(config, workdir)
  mnist = data.load("mnist", data_dir=real_data_dir(), cache_dir=data_cache)
  return workdir, summary, mnist


def test_evaluate_latest_reproduces_the_training_runs_test_metrics(trained):
  workdir, summary, _ = trained
  result = inference.evaluate(workdir, "latest", "test")
  assert result["count"] == 10_000 and result["checkpoint_step"] == 200
  assert result["accuracy"] == summary["test"]["accuracy"] > 0.9
  assert result["confusion_matrix"] == summary["test"]["confusion_matrix"]
  saved = json.loads(open(os.path.join(workdir, "eval_test_step200.json")).read())
  assert saved["accuracy"] == result["accuracy"]


def test_evaluate_best_and_a_step_and_the_validation_split(trained):
  workdir, summary, _ = trained
  epochs = summary["epochs"]
  best_epoch = max(range(len(epochs)), key=lambda i: (epochs[i]["validation/accuracy"], i))
  best = inference.evaluate(workdir, "best", "validation")
  assert best["checkpoint_step"] == 100 * (best_epoch + 1) and best["count"] == 6000
  assert best["accuracy"] == pytest.approx(epochs[best_epoch]["validation/accuracy"], abs=1e-6)
  assert inference.evaluate(workdir, "100", "test")["checkpoint_step"] == 100
  with pytest.raises(ConfigError, match=r"No checkpoint '7'.*steps \[100, 200\]"):
    inference.evaluate(workdir, "7")


def _write(array: np.ndarray, path, scale: int = 1, invert: bool = False, rgba: bool = False):
  img = Image.fromarray(array[:, :, 0])
  if scale > 1:
    img = img.resize((28 * scale, 28 * scale), Image.Resampling.BICUBIC)
  if invert:
    img = Image.fromarray(255 - np.asarray(img))
  if rgba:  # light ink whose background is transparent
    img = Image.merge("RGBA", (img, img, img, img))
  img.save(path)
  return str(path)


def test_predict_real_digits_written_as_png(trained, tmp_path):
  workdir, _, mnist = trained
  x, y = mnist.test.images[:20], mnist.test.labels[:20]
  state = inference.restore(workdir, "latest").state
  expected = np.asarray(jax.jit(lambda s, b: s.apply_fn(
      s.eval_variables(), steps.preprocess(b), train=False))(state, x)).argmax(-1)
  files = [_write(im, tmp_path / f"{i}.png") for i, im in enumerate(x)]
  exact = inference.predict(workdir, files, "latest")
  # A 28x28 PNG is the test image itself: the same prediction as the model on the array.
  assert [p["label"] for p in exact] == expected.tolist()
  assert all(abs(sum(p["probabilities"]) - 1) < 1e-5 for p in exact)
  assert all(p["probability"] == max(p["probabilities"]) for p in exact)
  # Larger, black-on-white and transparent versions go through MNIST's box-and-centre fitting.
  variants = {
      "large": ([_write(im, tmp_path / f"l{i}.png", scale=5) for i, im in enumerate(x)], False),
      "inverted": ([_write(im, tmp_path / f"v{i}.jpg", scale=3, invert=True)
                    for i, im in enumerate(x)], True),
      "transparent": ([_write(im, tmp_path / f"t{i}.png", scale=2, rgba=True)
                       for i, im in enumerate(x)], False),
  }
  for name, (paths, invert) in variants.items():
    predictions = inference.predict(workdir, paths, "latest", invert=invert)
    assert np.mean(np.asarray([p["label"] for p in predictions]) == y) >= 0.85, name
    assert not any(p["light_background"] for p in predictions), name
  # Forgetting --invert on dark-on-light files is pointed out next to the (useless) prediction.
  forgot = inference.predict(workdir, variants["inverted"][0][:2], "latest")
  assert all(p["light_background"] for p in forgot)
  assert "needs --invert" in inference.format_predictions(forgot)
  assert "needs --invert" not in inference.format_predictions(exact)


def test_fit_digit_boxes_and_centres_like_mnist(tmp_path):
  canvas = np.zeros((300, 200), np.uint8)
  canvas[20:140, 10:70] = 255  # a tall bar in a corner, 120x60
  Image.fromarray(canvas).save(tmp_path / "bar.png")
  out = images.load(str(tmp_path / "bar.png"), (28, 28, 1))[0][:, :, 0]
  rows, cols = np.nonzero(out > 128)
  assert rows.max() - rows.min() + 1 == 20 and cols.max() - cols.min() + 1 == 10
  assert abs((rows.min() + rows.max()) / 2 - 13.5) <= 1 and abs((cols.min() + cols.max()) / 2
                                                                 - 13.5) <= 1
  resized = images.load(str(tmp_path / "bar.png"), (28, 28, 1), fit="resize")[0][:, :, 0]
  assert resized[:2].max() > 0  # the whole frame, corner included


def test_bad_prediction_inputs_fail_clearly(trained, tmp_path):
  workdir, _, _ = trained
  with pytest.raises(ConfigError, match="No such file"):
    inference.predict(workdir, [str(tmp_path / "nope.png")])
  (tmp_path / "text.png").write_text("not an image")
  with pytest.raises(ConfigError, match="Cannot read .*text.png"):
    inference.predict(workdir, [str(tmp_path / "text.png")])
  with pytest.raises(ConfigError, match="No checkpoints in"):
    inference.evaluate(str(tmp_path / "empty"))


def test_checkpoint_without_its_dataset_item_fails_clearly(trained, tmp_path):
  """A checkpoint from another version (or damaged) names itself and the fix, not a KeyError."""
  workdir, _, _ = trained
  copy = tmp_path / "run"
  shutil.copytree(workdir, copy)
  for step_dir in (copy / "checkpoints").iterdir():
    if step_dir.name.isdigit():
      shutil.rmtree(step_dir / "dataset")
  with pytest.raises(ConfigError, match="has no usable 'dataset' item.*new --workdir"):
    inference.predict(str(copy), [_write(np.zeros((28, 28, 1), np.uint8), tmp_path / "x.png")])


def test_evaluate_and_predict_commands(trained, tmp_path):
  workdir, summary, mnist = trained
  env = {**os.environ, "TFDS_DATA_DIR": real_data_dir()}
  run = lambda *args: subprocess.run([sys.executable, "train.py", *args], cwd=REPO, env=env,
                                     capture_output=True, text=True, timeout=300)
  ev = run("--mode=evaluate", f"--workdir={workdir}", "--checkpoint=latest")
  assert ev.returncode == 0, ev.stderr[-2000:]
  assert (f"test: loss {summary['test']['loss']:.4f}  accuracy "
          f"{summary['test']['accuracy']:.2%}") in ev.stdout + ev.stderr
  assert "(10000 examples)" in ev.stdout + ev.stderr
  files = [_write(im, tmp_path / f"{i}.png") for i, im in enumerate(mnist.test.images[:3])]
  pr = run("--mode=predict", f"--workdir={workdir}", *files)
  assert pr.returncode == 0, pr.stderr[-2000:]
  lines = pr.stdout.strip().splitlines()
  assert len(lines) == 3 and all(f in line for f, line in zip(files, lines))
  assert all("p=" in line and "top:" in line for line in lines)
  bad = run("--mode=predict", f"--workdir={workdir}", str(tmp_path / "missing.png"))
  assert bad.returncode != 0 and "error: No such file" in bad.stderr
  assert "Traceback" not in bad.stderr
