"""The GAN as a task of the shared loop: every GAN config trains, resumes exactly and samples,
and its failures are reported (mock data: plumbing; the recipe's quality is in bench/)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types

import jax
import numpy as np
import pytest
from PIL import Image

from training import ConfigError, NonFiniteLossError, Preempted, train_and_evaluate
from training.modes import sample
from training.modes.train import progress
from training.tasks.gan import task as gan

from conftest import GAN_CONFIGS, REPO, load_config, shrink


@pytest.fixture(scope="module")
def judge(tmp_path_factory) -> str:
  """A classifier workdir (an MLP on mock data) to score the samples with."""
  import tensorflow_datasets as tfds
  workdir = str(tmp_path_factory.mktemp("judge"))
  with tfds.testing.mock_data(num_examples=64):
    train_and_evaluate(shrink(load_config("mlp"), **{"model.hidden": (32,)}), workdir)
  return workdir


def _gan(name: str, judge: str, **overrides):
  return shrink(load_config(name), **{"gan.eval_classifier": judge, "gan.eval_samples": 64,
                                      "log_every_steps": 1, "model.widths": (16, 8),
                                      "model.d_widths": (8, 16), **overrides})


def _records(workdir) -> list[dict]:
  return [{k: v for k, v in json.loads(line).items() if not k.startswith("time/")}
          for line in open(os.path.join(workdir, "metrics.jsonl"))]


@pytest.mark.parametrize("config_name", GAN_CONFIGS)
def test_every_gan_config_trains_scores_and_draws(config_name, judge, mock_mnist, tmp_path):
  config = _gan(config_name, judge)
  state, summary = train_and_evaluate(config, str(tmp_path))
  assert int(state.step) == 64 // 16
  keys = {"fd", "fd_ratio", "reference_fd", "entropy"}
  assert keys <= set(summary["test"]) and all(np.isfinite(summary["test"][k]) for k in keys)
  assert ("class_accuracy" in summary["test"]) == (config.model.name == "cgan")
  assert {"train/d_loss", "train/g_loss", "train/d_real", "train/d_fake"} <= set(summary)
  grid = Image.open(tmp_path / "samples" / "epoch_001.png")
  rows = 10 if config.model.name == "cgan" else 8  # one row per class when conditional
  assert grid.size[1] == 2 * (rows * 30 + 2)  # 28 + 2 pixels of padding a row, scaled 2x
  assert (tmp_path / "test_metrics.json").is_file()


def test_a_population_of_gans_trains_each_member_as_its_own_run(judge, mock_mnist, tmp_path):
  _, population = train_and_evaluate(_gan("cgan", judge, population=2), str(tmp_path / "pop"))
  _, single = train_and_evaluate(_gan("cgan", judge, seed=1), str(tmp_path / "single"))
  assert [m["seed"] for m in population["members"]] == [0, 1]
  assert population["members"][1]["fd"] == pytest.approx(single["test"]["fd"], rel=1e-4)
  assert population["test"]["fd"] == pytest.approx(np.mean([m["fd"] for m in
                                                            population["members"]]))
  with pytest.raises(ConfigError, match="populations of seeds"):
    train_and_evaluate(_gan("cgan", judge, sweep='{"learning_rate": [0.001, 0.002]}'))


def test_a_gan_run_resumes_bit_exactly(judge, mock_mnist, tmp_path):
  # 4 steps an epoch, a record every 3 (and at the epoch's end): the stop falls between two.
  config = lambda **o: _gan("cgan", judge, num_epochs=2, log_every_steps=3, **o)
  whole, _ = train_and_evaluate(config(), str(tmp_path / "whole"))
  with pytest.raises(Preempted, match="at step 6"):  # mid-epoch: step 2 of epoch 2
    train_and_evaluate(config(stop_after_steps=6), str(tmp_path / "split"))
  resumed, _ = train_and_evaluate(config(), str(tmp_path / "split"))
  for a, b in zip(jax.tree_util.tree_leaves(whole), jax.tree_util.tree_leaves(resumed)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert _records(tmp_path / "whole") == _records(tmp_path / "split")


def test_sample_command_writes_a_grid_of_the_requested_class(judge, mock_mnist, tmp_path):
  train_and_evaluate(_gan("cgan", judge), str(tmp_path / "cgan"))
  run = lambda *args: subprocess.run([sys.executable, "train.py", "--mode=sample", *args],
                                     cwd=REPO, capture_output=True, text=True, timeout=300)
  out = run(f"--workdir={tmp_path / 'cgan'}", "--label=7", "--num=10")
  assert out.returncode == 0, out.stderr[-2000:]
  path = out.stdout.strip().splitlines()[-1]
  assert path.endswith("_label7_seed0.png") and Image.open(path).size == (2 * 302, 2 * 32)
  bad = run(f"--workdir={tmp_path / 'cgan'}", "--label=10")
  assert bad.returncode == 1 and bad.stderr.strip().splitlines()[-1].startswith(
      "error: --label=10 is not a class of this GAN: choose 0-9")
  classifier = run(f"--workdir={judge}")
  assert "holds a classify run" in classifier.stderr and "Traceback" not in classifier.stderr


def test_an_unconditional_gan_takes_no_label(judge, mock_mnist, tmp_path):
  train_and_evaluate(_gan("dcgan", judge), str(tmp_path))
  with pytest.raises(ConfigError, match="unconditional GAN .* takes no --label"):
    sample.sample(str(tmp_path), label=3)
  assert sample.sample(str(tmp_path), num=5, output=str(tmp_path / "five.png")).endswith("five.png")
  for output, what in ((tmp_path / "five.txt", "not a .png file"), (tmp_path, "a directory")):
    with pytest.raises(ConfigError, match=f"--output={output} is {what}: .* --output=FILE.png"):
      sample.sample(str(tmp_path), num=5, output=str(output))


def test_a_missing_judge_names_the_command_that_trains_one(mock_mnist, tmp_path):
  config = _gan("cgan", str(tmp_path / "no_such_run"))
  with pytest.raises(ConfigError, match="configs/speedrun.py"):
    train_and_evaluate(config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()  # refused before anything was written


def test_a_judge_must_be_one_classifier_of_the_gan_s_classes(mock_mnist, tmp_path):
  # A population's stacked weights ended in flax's ScopeParamShapeError; a judge of 3 classes
  # scored a 10-class conditional GAN at "10% recognized".
  for name, overrides, message in (
      ("pop", {"population": 2}, "holds a population of 2 classifiers; the images are measured "
                                 "by one classifier's features: train one"),
      ("three", {"classes": "0,1,2"}, "knows 3 classes, but this conditional GAN draws 10: "
                                      r"train one on the same classes \(--config.classes\)")):
    judge = str(tmp_path / name)
    train_and_evaluate(shrink(load_config("mlp"), **{"model.hidden": (8,), **overrides}), judge)
    with pytest.raises(ConfigError, match=message):
      train_and_evaluate(_gan("cgan", judge), str(tmp_path / f"gan_{name}"))
    assert not (tmp_path / f"gan_{name}").exists()  # refused before anything was written


def test_a_gan_model_needs_the_gan_task(judge):
  config = _gan("cgan", judge, task="classify")
  with pytest.raises(ConfigError, match="'cgan' is a gan model, and task 'classify'"):
    train_and_evaluate(config)


def test_bad_gan_settings_are_config_errors_before_any_data_is_read(judge, tmp_path):
  # No data where the configs point: were it read first, the error would be a missing dataset.
  bad = lambda name, **o: _gan(name, judge, data_dir=str(tmp_path / "no_data"), **o)
  with pytest.raises(ConfigError, match="--config.gan.loss='wgan' is not a GAN loss: choose one "
                                        "of bce, hinge"):
    train_and_evaluate(bad("cgan", **{"gan.loss": "wgan"}))
  with pytest.raises(ConfigError, match="label_smoothing applies to the bce loss only"):
    train_and_evaluate(bad("cgan", label_smoothing=0.1))
  with pytest.raises(ConfigError, match="gan.d_lr_factor .* must be > 0, got 0"):
    train_and_evaluate(bad("dcgan", **{"gan.d_lr_factor": 0.0}))
  with pytest.raises(ConfigError, match="gan.eval_samples must be at least 2"):
    train_and_evaluate(bad("dcgan", **{"gan.eval_samples": 1}))
  no_block = shrink(load_config("mlp"), task="gan", data_dir=str(tmp_path / "no_data"),
                    **{"model.name": "dcgan"})
  with pytest.raises(ConfigError, match="needs the config's gan block"):
    train_and_evaluate(no_block)


def test_a_discriminator_that_wins_outright_is_reported_with_its_steps(capsys):
  run = types.SimpleNamespace(steps_per_epoch=100)
  gan._check_stability(run, 3, {"train/d_loss": 0.002})
  out = capsys.readouterr().out
  assert ("Warning: in epoch 3 the discriminator's loss averaged 0.0020 over steps 201-300: "
          "it tells real from generated images perfectly") in out
  gan._check_stability(run, 3, {"train/d_loss": 0.6})
  assert capsys.readouterr().out == ""


def test_a_nan_in_either_loss_stops_at_its_step():
  with pytest.raises(NonFiniteLossError, match="training d loss became nan at step 12"):
    progress.check_finite({"d_loss": np.array([0.7, np.nan]), "g_loss": np.array([1.0, 1.0])}, 11)
