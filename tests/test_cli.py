"""The command line as a newcomer meets it: mistakes in --config get one clear line, and the
settings can be seen without training."""

from __future__ import annotations

import json
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
    # A group set as one value: ml_collections' own message was a ConfigDict parse error.
    (["--config=configs/cnn.py", "--config.model=nosuch"],
     "error: bad --config override: --config.model is a group of fields (batch_norm, "
     "convs_per_stage, dense, downsample, dropout, features, kernel_size, name, weight_init), not "
     "one value: "
     "to choose the architecture use --config.model.name=nosuch."),
    # --mode=show lists no model a `dtype` field: it is --config.dtype, for every model.
    (["--config=configs/cnn.py", "--config.model.dtype=bfloat16"],
     "error: bad --config override: --config.model.dtype: the compute dtype is set for every "
     "model by --config.dtype (float32 or bfloat16), not by a model field."),
    (["--config=configs/cnn.py", "--config.model.width=3"],
     "error: bad --config override: --config.model.width: model 'cnn' has no field 'width'; its "
     "fields: features, kernel_size, convs_per_stage, dense, downsample, dropout, batch_norm, "
     "weight_init."),
    # Another model's field after switching models: the config holds the file's model's fields.
    (["--config=configs/cnn.py", "--config.model.name=resnet", "--config.model.blocks=(2,2,2)"],
     "error: bad --config override: --config.model.blocks: resnet has that field, but the config "
     "holds cnn's fields and an override cannot add one; start from configs/resnet.py or a copy "
     "of the config file with c = common.base('resnet')."),
    # absl joined the two tuples: a 4-stage CNN, (8, 16, 16, 32), trained without a word.
    (["--config=configs/cnn.py", "--config.model.features=(8,16)", "--config.model.features=(16,32)"],
     "error: --config.model.features is given 2 times: give each field once"),
    # A tuple field takes any text as a 1-tuple: this failed as a model that cannot be built.
    (["--config=configs/mlp.py", "--config.model.hidden=abc"],
     "error: --config.model.hidden=('abc',): model 'mlp' wants a tuple of ints there (its "
     "default is (512, 512))."),
    ([], "error: training needs --config, e.g. --config=configs/cnn.py. (python train.py --help "
         "lists the modes and flags)\n"),
    (["--mode=evaluate"], "error: --mode=evaluate needs --workdir, the trained run's directory."),
])
def test_config_mistakes_are_one_clear_line(args, message, tmp_path):
  run = _cli(*args, *([f"--workdir={tmp_path / 'w'}"] if "--mode" not in str(args) else []))
  assert run.returncode == 1
  assert run.stderr.startswith(message), run.stderr[-3000:]
  assert "Traceback" not in run.stderr and len(run.stderr.splitlines()) <= 2
  assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("code, message", [
    ("def get_config():\n  raise RuntimeError('boom')\n",
     "failed as it was loaded (line 2): RuntimeError: boom. Fix the config file"),
    ("import no_such_module\n\ndef get_config():\n  return None\n",
     "failed as it was loaded (line 1): ModuleNotFoundError: No module named 'no_such_module'."),
    ("def get_config():\n  return int('x')\n",  # absl re-raises a ValueError with its traceback
     "failed as it was loaded (line 2): ValueError: invalid literal for int()"),
    ("def get_config():\n  return {'num_epochs': 3}\n",
     "get_config() returned a dict, not an ml_collections.ConfigDict: start from "
     "configs.common.base(), as configs/cnn.py does."),
    ("import ml_collections\n\ndef get_config():\n  return ml_collections.ConfigDict({'a': 1})\n",
     "get_config() returned a config without the field(s) adam_b1, adam_b2, augment,"),
])
def test_a_config_file_of_one_s_own_that_fails_is_one_clear_line(code, message, tmp_path):
  # Each of these was a traceback: from the file's own code through absl, or a KeyError later.
  path = tmp_path / "mine.py"
  path.write_text(code)
  for mode in ("train", "show"):
    run = _cli(f"--config={path}", f"--workdir={tmp_path / 'w'}", f"--mode={mode}")
    assert run.returncode == 1 and run.stderr.startswith(f"error: {path}"), run.stderr[-3000:]
    assert message in run.stderr and len(run.stderr.splitlines()) == 1, run.stderr[-3000:]
  assert not (tmp_path / "w").exists()


def test_help_is_a_success():
  for flag in ("--help", "--helpfull"):
    run = _cli(flag)
    assert run.returncode == 0 and "--mode" in run.stdout, run.stderr[-2000:]


def test_the_model_can_be_switched_on_the_command_line(tmp_path):
  # configs/cnn.py's model fields do not fit a resnet: resnet's defaults replace them.
  run = _cli("--config=configs/cnn.py", "--config.model.name=resnet", "--config.model.dropout=0.1",
             "--mode=show")
  assert run.returncode == 0, run.stderr[-3000:]
  out = run.stdout
  assert out.startswith("note: --config.model.name=resnet replaces cnn: the config's cnn fields "
                        "(batch_norm, convs_per_stage, dense, downsample, features, kernel_size, "
                        "weight_init) "
                        "are dropped and resnet's defaults used (configs/resnet.py holds tuned "
                        "ones)"), out[:500]
  assert "* model.blocks = (1, 1, 1)  " in out and "model.kernel_size" not in out
  assert "# channels of each stage\n" in out  # resnet's own comment, not cnn.py's
  assert "* model.dropout = 0.1 [0.0]" in out  # given on the command line: kept
  assert "Model 'resnet' on 28x28x1 images" in out and "BasicBlock" in out


def test_show_of_a_trained_run(tmp_path, data_cache):
  workdir = str(tmp_path / "run")
  trained = _cli("--config=configs/mlp.py", f"--workdir={workdir}", "--config.num_epochs=1",
                 "--config.max_train_examples=256", "--config.max_eval_examples=100",
                 "--config.progress_bar=False", "--config.report=False",
                 f"--config.cache_dir={data_cache}")
  assert trained.returncode == 0, trained.stderr[-3000:]
  # Item 9: where the results went.
  assert f"workdir: {workdir} (config.json, metrics.jsonl" in trained.stdout
  run = _cli("--mode=show", f"--workdir={workdir}")
  assert run.returncode == 0, run.stderr[-3000:]
  assert run.stdout.startswith(f"Run {workdir}: the settings it was trained with (config.json")
  assert "+ model.name = 'mlp' ['cnn']" in run.stdout
  assert "+ num_epochs = 1 [10]" in run.stdout and "\n  seed = 0  " in run.stdout
  assert "Model 'mlp' on 28x28x1 images, 10 classes:" in run.stdout
  missing = _cli("--mode=show", f"--workdir={tmp_path / 'nothing'}")
  assert missing.returncode == 1 and missing.stderr.startswith("error: No trained run in")


def test_a_model_field_the_config_file_does_not_list_takes_an_override(tmp_path, data_cache):
  # configs/cnn.py tunes no weight_init: the field comes from nets/cnn.py, declared there once.
  assert "weight_init" not in (REPO / "configs" / "cnn.py").read_text()
  run = _cli("--config=configs/cnn.py", "--config.model.weight_init=torch",
             f"--workdir={tmp_path / 'run'}", "--config.num_epochs=1",
             "--config.max_train_examples=256", "--config.max_eval_examples=100",
             "--config.progress_bar=False", "--config.report=False",
             f"--config.cache_dir={data_cache}")
  assert run.returncode == 0, run.stderr[-3000:]
  saved = json.loads((tmp_path / "run" / "config.json").read_text())
  assert saved["model"]["weight_init"] == "torch"


def test_show_prints_the_settings_the_model_and_the_models_without_training(tmp_path):
  run = _cli("--config=configs/cnn.py", "--mode=show", "--config.model.dense=(64,)",
             f"--workdir={tmp_path / 'w'}")
  assert run.returncode == 0, run.stderr[-3000:]
  out = run.stdout
  assert "+ learning_rate = 0.003 [0.001]" in out and "# peak learning rate" in out
  assert "* model.dense = (64,) [(128,)]" in out  # with the overrides
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
          "print(sorted(m for m in sys.modules if m.startswith('training.modes.train')) or False)")
  run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
  assert run.returncode == 0 and run.stdout.strip() == "False", run.stderr[-3000:]


def test_each_mode_flag_s_help_names_the_modes_that_read_it():
  """training/cli.py refuses a mode's flag given to another mode (it would change nothing); its
  table and the --help text must name the same modes."""
  import re

  from absl import flags

  from training import cli
  import train  # noqa: F401  (defines the flags)
  for name, modes in cli.MODE_FLAGS.items():
    text = re.sub(r"^<[^>]*>: ", "", flags.FLAGS[name].help)  # an enum's values, from absl
    helps = [h for h in re.findall(r"(?:^|; )([a-z]+(?:/[a-z]+)*): ", text)
             if set(h.split("/")) <= set(flags.FLAGS["mode"].parser.enum_values)]
    assert sorted(m for h in helps for m in h.split("/")) == sorted(modes), (name, helps)


@pytest.mark.parametrize("args, message", [
    (["--mode=evaluate", "--invert"], "error: --invert is for --mode=predict, not evaluate: "),
    (["--mode=predict", "--label=3", "x.png"], "error: --label is for --mode=sample, not predict"),
    (["--mode=report", "--ensemble=runs/b"],
     "error: --ensemble is for --mode=evaluate, predict, export, not report"),
    (["--mode=export", "--port=9000"], "error: --port is for --mode=serve, not export"),
    (["--config=configs/mlp.py", "--split=validation"],
     "error: --split is for --mode=evaluate, not train"),
])
def test_a_flag_of_another_mode_is_refused(args, message, tmp_path):
  run = _cli(*args, f"--workdir={tmp_path / 'w'}")
  assert run.returncode == 1 and run.stderr.startswith(message), run.stderr[-2000:]
  assert len(run.stderr.splitlines()) == 1 and not (tmp_path / "w").exists()
