"""What a user reads is this project's: progress, results and `note:`/`error:` lines, never a
library's log format (absl's `W1206 03:17:26.172423 140497489172160 checkpoint.py:202] ...`)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np

from conftest import REPO

ABSL_PREFIX = re.compile(r"^[IWEF]\d{4} ")


def _train_py(*args: str, cwd) -> subprocess.CompletedProcess:
  env = {**os.environ, "PYTHONUNBUFFERED": "1"}
  return subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=300)


def _library_lines(proc: subprocess.CompletedProcess) -> list[str]:
  return [line for line in (proc.stdout + proc.stderr).splitlines() if ABSL_PREFIX.match(line)]


def test_the_absl_prefix_is_recognised():
  assert ABSL_PREFIX.match("W1206 03:17:26.172423 140497489172160 checkpoint.py:202] Metadata")
  assert not ABSL_PREFIX.match("note: the folder ...") and not ABSL_PREFIX.match("epoch 1/1")


def test_training_evaluation_and_prediction_print_no_library_log_line(tmp_path):
  """A short run on a folder of images whose classes are chosen by position (a note), with a
  checkpoint every step and one kept (orbax rotates them away), then evaluate and predict."""
  from PIL import Image
  rng = np.random.default_rng(0)
  for name in ("nine", "five", "eight"):
    os.makedirs(tmp_path / "words" / name)
    for i in range(12):
      Image.fromarray(rng.integers(0, 256, (8, 8), np.uint8)).save(
          tmp_path / "words" / name / f"{i}.png")
  workdir = tmp_path / "run"
  train = _train_py(
      f"--config={REPO}/configs/mlp.py", f"--workdir={workdir}", f"--config.dataset=folder:{tmp_path}/words",
      "--config.classes=0,1", "--config.folder.image_size=8", "--config.num_epochs=2",
      "--config.batch_size=4", "--config.eval_batch_size=8", "--config.model.hidden=(8,)",
      "--config.progress_bar=False", "--config.cache_dir=none", "--config.log_every_steps=1",
      "--config.checkpoint.every_steps=1", "--config.checkpoint.keep=1",
      "--config.checkpoint.keep_best=0", "--config.report=False", cwd=tmp_path)
  assert train.returncode == 0, train.stderr[-2000:]
  assert f"note: --config.classes=0,1: the folder {tmp_path}/words has no class" in train.stdout
  # What a reader finds of a checkpoint that training is rotating away: orbax warns of it.
  for metadata in workdir.glob("checkpoints/*/_CHECKPOINT_METADATA"):
    metadata.unlink()
  evaluate = _train_py("--mode=evaluate", f"--workdir={workdir}", cwd=tmp_path)
  assert evaluate.returncode == 0, evaluate.stderr[-2000:]
  predict = _train_py("--mode=predict", f"--workdir={workdir}",
                      str(tmp_path / "words" / "five" / "0.png"), cwd=tmp_path)
  assert predict.returncode == 0, predict.stderr[-2000:]
  for name, proc in [("train", train), ("evaluate", evaluate), ("predict", predict)]:
    assert not _library_lines(proc), f"{name} printed library log lines: {_library_lines(proc)}"
