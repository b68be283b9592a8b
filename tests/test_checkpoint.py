"""Checkpoints: exact resume, retention, refusing a mismatched model, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from training import ConfigError, Preempted, train_and_evaluate
from training.modes.train.resume import ConfigChangedError
from training.store.checkpoint import (CheckpointMismatchError, Checkpointer,
                                       DamagedCheckpointError)

from conftest import REPO, kill_once_logged, load_config, real_data_dir, shrink


STEPS_PER_EPOCH = 3  # 64 mock examples - 10% validation = 58, in batches of 16


def _config(**overrides):
  # Dropout makes the RNG part of what must resume exactly.
  return shrink(load_config("cnn"), **{"num_epochs": 4, "log_every_steps": 1,
                                       "model.dropout": 0.3, **overrides})


def _losses(workdir) -> dict[int, float]:
  out = {}
  for line in open(os.path.join(workdir, "metrics.jsonl")):
    r = json.loads(line)
    if "train/loss" in r and "epoch" not in r:
      out[r["step"]] = r["train/loss"]
  return out


def test_resume_is_bit_exact(mock_mnist, tmp_path):
  whole, _ = train_and_evaluate(_config(), str(tmp_path / "whole"))
  # Stop mid-epoch (step 5 of 12), then re-run the same config: it must continue exactly.
  with pytest.raises(Preempted, match="at step 5"):
    train_and_evaluate(_config(stop_after_steps=5), str(tmp_path / "split"))
  assert Checkpointer(str(tmp_path / "split"), _config()).latest_step() == 5
  resumed, summary = train_and_evaluate(_config(), str(tmp_path / "split"))
  assert int(resumed.step) == int(whole.step) == 4 * STEPS_PER_EPOCH
  for a, b in zip(jax.tree_util.tree_leaves(whole.params), jax.tree_util.tree_leaves(resumed.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert _losses(tmp_path / "whole") == _losses(tmp_path / "split")
  assert len(_losses(tmp_path / "whole")) == 4 * STEPS_PER_EPOCH


def test_keeps_the_last_n_plus_the_best(mock_mnist, tmp_path):
  config = _config(num_epochs=7, **{"checkpoint.keep": 2, "checkpoint.keep_best": 1})
  train_and_evaluate(config, str(tmp_path))
  epochs = [json.loads(l) for l in open(tmp_path / "metrics.jsonl") if '"epoch"' in l]
  best = max(epochs, key=lambda r: (r["validation/accuracy"], r["step"]))["step"]
  assert best < 6 * STEPS_PER_EPOCH, best  # else the best is among the last two: nothing tested
  ckpt = Checkpointer(str(tmp_path), config)
  assert ckpt.best_step() == best
  assert set(ckpt.all_steps()) == {6 * STEPS_PER_EPOCH, 7 * STEPS_PER_EPOCH, best}


@pytest.mark.parametrize("override", [{"model.features": (48, 64)}, {"model.dense": (64,)}])
def test_a_model_of_other_shapes_is_refused(mock_mnist, tmp_path, override):
  train_and_evaluate(_config(num_epochs=1), str(tmp_path))
  with pytest.raises(CheckpointMismatchError, match=r"mismatching parameters:\n.*params"):
    train_and_evaluate(_config(num_epochs=2, **override), str(tmp_path))


def test_the_mlp_config_is_refused_on_a_cnn_workdir(mock_mnist, tmp_path):
  train_and_evaluate(_config(num_epochs=1), str(tmp_path))
  mlp = shrink(load_config("mlp"), num_epochs=2)
  # A file made and removed again (the lock) would change the directory's modification time.
  touched = {p: p.stat().st_mtime_ns for p in [tmp_path, *tmp_path.rglob("*")] if p.is_dir()}
  with pytest.raises(CheckpointMismatchError, match=r"Conv_0.*checkpoint \(3, 3, 1, 32\) vs "
                     r"config missing") as e:
    train_and_evaluate(mlp, str(tmp_path))
  # The refusal comes before the run takes the workdir: nothing in it was written, even for a while.
  assert touched == {p: p.stat().st_mtime_ns for p in [tmp_path, *tmp_path.rglob("*")]
                     if p.is_dir()}
  # What changed comes first, then the parameters that differ because of it.
  assert str(e.value).startswith("The checkpoint was trained with another model: cnn -> mlp "
                                 "(checkpoint -> now).\nThe checkpoint at step 3 in ")


def test_a_finished_one_epoch_run_says_so_in_the_singular(mock_mnist, tmp_path, capsys):
  train_and_evaluate(_config(num_epochs=1), str(tmp_path))
  capsys.readouterr()
  train_and_evaluate(_config(num_epochs=1), str(tmp_path))
  assert "This run is complete (1 epoch): evaluating only." in capsys.readouterr().out


def test_a_finished_run_evaluates_with_its_history_and_a_shorter_one_is_refused(mock_mnist,
                                                                                 tmp_path):
  train_and_evaluate(_config(num_epochs=2), str(tmp_path))
  _, again = train_and_evaluate(_config(num_epochs=2), str(tmp_path))
  saved = json.loads((tmp_path / "test_metrics.json").read_text())
  assert len(again["epochs"]) == len(saved["epochs"]) == 2  # not lost by the re-run
  assert again["validation/accuracy"] == saved["epochs"][-1]["validation/accuracy"]
  # The checkpoint is past a 1-epoch config's end: refused, not reported as a 1-epoch model.
  with pytest.raises(ConfigError, match=r"at step 6, past the 1 epochs \(3 steps\).*at least 2"):
    train_and_evaluate(_config(num_epochs=1), str(tmp_path))


def test_other_settings_are_refused_and_leave_the_workdir_as_it_was(mock_mnist, tmp_path):
  train_and_evaluate(_config(num_epochs=1), str(tmp_path))
  before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
  # A seed sweep into one workdir would otherwise report the first seed's result every time.
  lr = _config().learning_rate
  with pytest.raises(ConfigChangedError, match=rf"(?s)changed \(checkpoint -> now\):\n"
                     rf"  learning_rate: {lr!r} -> 0.01\n  seed: 0 -> 1\n.*allow_config_changes"):
    train_and_evaluate(_config(num_epochs=2, seed=1, learning_rate=0.01), str(tmp_path))
  assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
  # A field that a newer version of the code added is no change of settings.
  newer = _config(num_epochs=1)
  newer.field_of_a_newer_version = 1
  train_and_evaluate(newer, str(tmp_path))
  # Asked for, the run continues with the new settings.
  state, _ = train_and_evaluate(_config(num_epochs=2, seed=1, learning_rate=0.01,
                                        **{"checkpoint.allow_config_changes": True}),
                                str(tmp_path))
  assert int(state.step) == 2 * STEPS_PER_EPOCH


# tensorstore's reads of the other files fail after orbax's event loop closes (quieted by the CLI).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
# Orbax's OCDBT layout: the tree's index in state/d/ and the arrays' chunks in
# state/ocdbt.process_0/d/. Damage to either, as a disk fault would leave it, must be explained.
@pytest.mark.parametrize("damaged", ["index_and_arrays", "arrays_only"])
def test_a_damaged_checkpoint_is_named_with_the_way_back_to_the_previous_one(mock_mnist,
                                                                             tmp_path, damaged):
  mlp = lambda epochs: shrink(load_config("mlp"), num_epochs=epochs)
  train_and_evaluate(mlp(2), str(tmp_path))
  latest = tmp_path / "checkpoints" / str(2 * STEPS_PER_EPOCH)
  for f in (latest / "state").rglob("*"):
    parts = f.relative_to(latest / "state").parts[:-1]
    if f.is_file() and "d" in parts and (damaged != "arrays_only" or len(parts) > 1):
      f.write_bytes(b"\0" * 7)
  with pytest.raises(DamagedCheckpointError,
                     match=r"Checkpoint 6 .*damaged.*\n.*previous checkpoint \(step 3\).*mv "):
    train_and_evaluate(mlp(3), str(tmp_path))
  assert latest.is_dir()  # left for a look, not deleted
  # Doing what the message says resumes from the previous checkpoint.
  os.rename(latest, tmp_path / "damaged_checkpoint_6")
  state, _ = train_and_evaluate(mlp(3), str(tmp_path))
  assert int(state.step) == 3 * STEPS_PER_EPOCH


def test_quieting_orphaned_reads_keeps_other_errors_reported():
  """Only orbax's orphaned reads are dropped: any other error reported the same
  way (here a failing __del__, with a read error's type) still shows."""
  code = """if True:
    from training.compute import runtime
    runtime.quiet_library_noise()
    class Leaky:
      def __del__(self):
        raise ValueError("a bug elsewhere")
    class Orphan:
      def __del__(self):
        raise RuntimeError("Event loop is closed")
    Leaky(), Orphan()
    print("done")
  """
  run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
  assert run.returncode == 0 and run.stdout.strip() == "done", run.stderr[-2000:]
  assert "ValueError: a bug elsewhere" in run.stderr
  assert "Event loop is closed" not in run.stderr, run.stderr[-2000:]


def test_more_epochs_is_a_harmless_change(mock_mnist, tmp_path):
  train_and_evaluate(_config(num_epochs=1), str(tmp_path))
  state, _ = train_and_evaluate(_config(num_epochs=2), str(tmp_path))
  assert int(state.step) == 2 * STEPS_PER_EPOCH


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])  # preemption, a Ctrl-C
def test_a_signal_saves_and_exits_cleanly_then_resumes(tmp_path, data_cache, sig):
  cmd = [sys.executable, "train.py", "--config=configs/mlp.py", f"--workdir={tmp_path}",
         "--config.progress_bar=False", f"--config.cache_dir={data_cache}",
         "--config.max_train_examples=4096", "--config.num_epochs=400",
         "--config.checkpoint.every_epochs=1000"]
  env = {**os.environ, "TFDS_DATA_DIR": real_data_dir(), "PYTHONUNBUFFERED": "1"}
  proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  for line in proc.stdout:  # wait until training is under way
    if line.startswith("epoch   2/"):
      break
  proc.send_signal(sig)
  out = proc.stdout.read()
  assert proc.wait(timeout=120) == 75, out  # EX_TEMPFAIL: saved, re-run to continue
  assert f"Stopped by {sig.name} at step" in out and "Traceback" not in out
  step = int(out.split(f"Stopped by {sig.name} at step ")[1].split(";")[0])
  assert step >= 64  # past epoch 2's 32 steps
  assert Checkpointer(str(tmp_path), load_config("mlp")).all_steps() == [step]
  cmd[cmd.index("--config.num_epochs=400")] = f"--config.num_epochs={step // 32 + 1}"
  resumed = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f"Resuming from the checkpoint at step {step}" in resumed.stdout + resumed.stderr


# SIGKILL: a run killed at any moment loses at most the steps since its last committed
# checkpoint, and the restart finishes with the metrics of a run that was never interrupted.
KILL_ARGS = ["--config.progress_bar=False",
             "--config.max_train_examples=4096", "--config.num_epochs=3",
             "--config.checkpoint.every_steps=10", "--config.log_every_steps=5"]


def _kill_args(config_name: str = "mlp") -> list[str]:
  return [f"--config=configs/{config_name}.py", *KILL_ARGS]
# Issues the n-th save, then kills its own process while orbax is still writing it.
KILL_IN_SAVE = """
import glob, os, runpy, signal, sys, time
sys.path.insert(0, os.getcwd())
from training.store import checkpoint
save, calls = checkpoint.Checkpointer.save, []
def save_then_die(self, state, *args, **kwargs):
  save(self, state, *args, **kwargs)
  calls.append(int(state.step))
  if len(calls) == int(os.environ["KILL_AT_SAVE"]):
    # Orbax makes the temporary directory on a thread of its own: killed once it exists, the
    # process dies mid-save however loaded the machine is.
    deadline = time.time() + 30
    while not glob.glob(os.path.join(self.directory, "*tmp*")) and time.time() < deadline:
      time.sleep(0.0005)
    os.kill(os.getpid(), signal.SIGKILL)
checkpoint.Checkpointer.save = save_then_die
sys.argv = ["train.py", *sys.argv[1:]]
runpy.run_path("train.py", run_name="__main__")
"""


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data_cache):
  """{config name: the test metrics and metrics.jsonl of its run, not interrupted}."""
  runs = {}

  def of(config_name: str = "mlp") -> dict:
    if config_name not in runs:
      workdir = tmp_path_factory.mktemp("uninterrupted")
      _run_train(workdir, data_cache, config_name)
      runs[config_name] = {"test": json.loads((workdir / "test_metrics.json").read_text())["test"],
                           "metrics": _history(workdir)}
    return runs[config_name]
  return of


def _history(workdir) -> list[dict]:
  """metrics.jsonl without its timings: what an interrupted run must reproduce line for line."""
  return [{k: v for k, v in json.loads(line).items() if not k.startswith("time/")}
          for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def _env(data_cache, **extra):
  return {**os.environ, "TFDS_DATA_DIR": real_data_dir(), "PYTHONUNBUFFERED": "1", **extra}


def _run_train(workdir, data_cache, config_name: str = "mlp") -> str:
  proc = subprocess.run([sys.executable, "train.py", *_kill_args(config_name), f"--workdir={workdir}",
                         f"--config.cache_dir={data_cache}"], cwd=REPO, env=_env(data_cache),
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stdout + proc.stderr


def _committed(workdir) -> list[int]:
  ckpt = Checkpointer.reader(str(workdir))  # does not touch what the kill left
  try:
    return ckpt.all_steps()
  finally:
    ckpt.close()


# mixer: a flax.nnx model (nets/nnx_bridge.py), with a moving average of the weights and augmentation.
@pytest.mark.parametrize("config_name", ["mlp", "mixer"])
def test_sigkill_during_training_resumes_from_the_last_commit(tmp_path, data_cache,
                                                               uninterrupted, config_name):
  proc = subprocess.Popen([sys.executable, "train.py", *_kill_args(config_name),
                           f"--workdir={tmp_path}",
                           f"--config.cache_dir={data_cache}"], cwd=REPO, env=_env(data_cache),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  kill_once_logged(proc, tmp_path / "metrics.jsonl", 45, timeout_s=120)  # mid-epoch 2 (33-64)
  committed = _committed(tmp_path)
  assert committed and 30 <= max(committed) < 96  # the save at 40 may be in flight
  out = _run_train(tmp_path, data_cache, config_name)
  assert f"Resuming from the checkpoint at step {max(committed)}" in out
  whole = uninterrupted(config_name)
  assert json.loads((tmp_path / "test_metrics.json").read_text())["test"] == whole["test"]
  # The steps logged after the last checkpoint and again by the resumed run appear once.
  assert _history(tmp_path) == whole["metrics"]


def test_sigkill_during_a_save_leaves_no_checkpoint_that_breaks_the_restart(
    tmp_path, data_cache, uninterrupted):
  proc = subprocess.run([sys.executable, "-c", KILL_IN_SAVE, *_kill_args(), f"--workdir={tmp_path}",
                         f"--config.cache_dir={data_cache}"], cwd=REPO,
                        env=_env(data_cache, KILL_AT_SAVE="4"), capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
  # Saves at steps 10, 20, 30 (epoch end 32 comes 4th): the 4th was being written when killed.
  assert _committed(tmp_path) == [20, 30]  # keep=2
  assert [p.name for p in (tmp_path / "checkpoints").glob("32.*tmp*")], "not killed mid-save"
  out = _run_train(tmp_path, data_cache)
  assert "Resuming from the checkpoint at step 30" in out
  assert not list((tmp_path / "checkpoints").glob("*tmp*"))  # the leftover was cleaned up
  assert json.loads((tmp_path / "test_metrics.json").read_text())["test"] == uninterrupted()["test"]
  assert _history(tmp_path) == uninterrupted()["metrics"]


def test_a_second_run_on_a_workdir_in_use_is_refused_and_the_first_is_unharmed(
    tmp_path, data_cache, uninterrupted):
  cmd = [sys.executable, "train.py", *_kill_args(), f"--workdir={tmp_path}",
         f"--config.cache_dir={data_cache}"]
  first = subprocess.Popen(cmd, cwd=REPO, env=_env(data_cache), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
  metrics, deadline = tmp_path / "metrics.jsonl", time.time() + 120
  while time.time() < deadline and not (metrics.exists() and metrics.read_text()):
    time.sleep(0.05)
  # The same workdir with other settings: a second terminal, a job submitted twice.
  second = subprocess.run([*cmd, "--config.learning_rate=0.01"], cwd=REPO, env=_env(data_cache),
                          capture_output=True, text=True, timeout=300)
  assert first.poll() is None, "the first run ended before the second started"
  assert second.returncode == 1
  assert second.stderr.startswith(f"error: The workdir {tmp_path} is in use by another run"), \
      second.stderr[-3000:]
  assert f"pid {first.pid}" in second.stderr and "Traceback" not in second.stderr
  _, err = first.communicate(timeout=300)
  assert first.returncode == 0, err[-3000:]
  # The first run's files are its own, as if it had run alone.
  assert json.loads((tmp_path / "config.json").read_text())["learning_rate"] == load_config(
      "mlp").learning_rate
  assert json.loads((tmp_path / "test_metrics.json").read_text())["test"] == uninterrupted()["test"]
  assert _history(tmp_path) == uninterrupted()["metrics"]
  assert not (tmp_path / ".lock").exists()  # released at the end


def test_a_reader_says_it_is_one_and_cannot_save(mock_mnist, tmp_path):
  with pytest.raises(TypeError, match=r"Checkpointer.reader\(workdir\)"):
    Checkpointer(str(tmp_path), None)  # no config: not silently read-only
  train_and_evaluate(_config(num_epochs=1), str(tmp_path))
  reader = Checkpointer.reader(str(tmp_path))
  try:
    assert reader.all_steps()
    with pytest.raises(TypeError, match="opened read-only"):
      reader.save(None)
  finally:
    reader.close()


OLD_RUN = REPO / "tests" / "data" / "checkpoint_before_layers"  # written at dd550ba: see below


def test_a_checkpoint_written_before_the_move_into_layers_restores_evaluates_and_resumes(
    tmp_path, data_cache):
  """tests/data/checkpoint_before_layers was trained (64 steps of a small CNN with batch norm,
  dropout, augmentation and a moving average, on 2,048 real images) by the code before
  training/ was cut into layers, which also recorded its predictions in expected.json."""
  import shutil
  from training import data, settings
  from training.modes import evaluate
  from training.tasks import restore
  expected = json.loads((OLD_RUN / "expected.json").read_text())
  workdir = tmp_path / "old"
  shutil.copytree(OLD_RUN, workdir)
  r = restore.restore(str(workdir), "latest")
  assert r.step == expected["step"] == 64
  test = data.load("mnist", data_dir=real_data_dir(), cache_dir=data_cache).test
  logits = np.concatenate([r.state.apply_fn(r.state.eval_variables(),
                                             test.images[i:i + 1000].astype(np.float32) / 255,
                                             train=False) for i in range(0, len(test), 1000)])
  np.testing.assert_allclose(jax.nn.softmax(logits[:8]),
                             expected["probabilities_of_the_first_8_test_images"], atol=1e-6)
  assert (logits[:256].argmax(1) == test.labels[:256]).mean() == expected[
      "test_accuracy_first_256"]
  # Evaluate scores the same function: the restored model's own answers on all 10,000.
  result = evaluate.evaluate(str(workdir), "latest", data_dir=real_data_dir())
  assert result["count"] == 10_000
  assert result["accuracy"] == pytest.approx((logits.argmax(1) == test.labels).mean(), abs=1e-9)
  config = settings.from_json(json.loads((workdir / "config.json").read_text()))
  config.update(num_epochs=3, data_dir=real_data_dir(), cache_dir=data_cache)
  state, summary = train_and_evaluate(config, str(workdir))
  assert int(state.step) == 96 and len(summary["epochs"]) == 3
