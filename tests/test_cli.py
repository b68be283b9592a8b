"""The command line as a newcomer meets it: mistakes in --config get one clear line, and the
settings can be seen without training."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO, real_data_dir


def _cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
  env = {**os.environ, "TFDS_DATA_DIR": real_data_dir(), "PYTHONUNBUFFERED": "1"}
  return subprocess.run([sys.executable, "train.py", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("args, message", [
    (["--config=configs/doesnotexist.py"],
     "error: no config file 'configs/doesnotexist.py'. The configs: configs/best.py, "),
    (["--config=README.md"], "error: README.md is not a config file: it is not valid Python"),
    (["--config=configs/common.py"], "error: configs/common.py has no get_config() function"),
    (["--config=configs/cnn.py", "--config.optimizer.learning_rate=0.1"],
     "error: bad --config override: --config.optimizer.learning_rate: optimizer is a str field "
     "('adam'), not a group of fields, so it has no field 'learning_rate'."),
    (["--config=configs/cnn.py", "--config.num_epoch=3"],
     'error: bad --config override: num_epoch: Did you mean "num_epochs"'),
])
def test_config_mistakes_are_one_clear_line(args, message, tmp_path):
  run = _cli(*args, f"--workdir={tmp_path / 'w'}")
  assert run.returncode == 1
  assert run.stderr.startswith(message), run.stderr[-3000:]
  assert "Traceback" not in run.stderr
  assert not (tmp_path / "w").exists()


def test_show_prints_the_settings_the_model_and_the_models_without_training(tmp_path):
  run = _cli("--config=configs/cnn.py", "--mode=show", "--config.model.dense=(64,)",
             f"--workdir={tmp_path / 'w'}")
  assert run.returncode == 0, run.stderr[-3000:]
  out = run.stdout
  assert "learning_rate = 0.003" in out and "# peak learning rate" in out
  assert "model.dense = (64,)" in out  # with the overrides
  assert "Model 'cnn' on 28x28x1 images, 10 classes:" in out
  assert "float32[3136,64]" in out  # the table of the overridden model
  assert "vit: patch_size=4" in out and "mobilenet: " in out
  assert not (tmp_path / "w").exists()


def test_a_nan_error_gets_a_line_of_its_own_below_the_progress_bar(tmp_path, data_cache):
  run = _cli("--config=configs/mlp.py", f"--workdir={tmp_path / 'w'}", "--config.optimizer=sgd",
             "--config.schedule=constant", "--config.learning_rate=inf",
             "--config.max_train_examples=2048", "--config.progress_bar=True",
             f"--config.cache_dir={data_cache}")
  assert run.returncode == 1
  line = next(line for line in run.stderr.split("\n") if "became nan" in line)
  # What the terminal shows of the line: the text after its last carriage return.
  assert line.split("\r")[-1].startswith("error: The training loss became nan at step 2"), line
  assert "allow_config_changes" not in run.stderr  # no checkpoint to continue from


def test_evaluation_prediction_report_and_export_do_not_import_the_training_loop():
  code = ("import sys; from training.modes import evaluate, export, predict, report, sample; "
          "print(sorted(m for m in sys.modules if m.startswith('training.run')) or False)")
  run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
  assert run.returncode == 0 and run.stdout.strip() == "False", run.stderr[-3000:]
