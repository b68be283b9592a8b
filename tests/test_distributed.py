"""Data parallelism: 8 (virtual CPU) devices against 1, two processes on loopback, bad launches."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from training.modes import evaluate

from conftest import REPO, real_data_dir

# Runs in a child process: the device count is fixed when JAX starts.
EIGHT_DEVICES = r"""
import json, os, sys
sys.path.insert(0, "tests")
import conftest  # the CPU settings every test run uses
import jax, numpy as np, tensorflow_datasets as tfds
from conftest import load_config, shrink
from training import ConfigError, Preempted, train_and_evaluate
from training.compute import device, mesh as mesh_lib
from training.tasks.classify import steps

root, out = sys.argv[1], {"devices": jax.device_count()}

def losses(workdir):
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  return [r["train/loss"] for r in rows if "train/loss" in r and "epoch" not in r]

def config(mesh, **kw):
  return shrink(load_config("cnn"), num_epochs=2, log_every_steps=1, mesh_shape=mesh,
                **{"model.dropout": 0.3, **kw})

with tfds.testing.mock_data(num_examples=64):
  for n in (8, 1):
    state, summary = train_and_evaluate(config((n,)), f"{root}/whole{n}")
    out[f"losses{n}"], out[f"test{n}"] = losses(f"{root}/whole{n}"), summary["test"]["loss"]
    out[f"params_replicated{n}"] = all(
        p.sharding.is_fully_replicated and len(p.sharding.device_set) == n
        for p in jax.tree_util.tree_leaves(state.params))
  for a, b in ((8, 1), (1, 8)):  # saved on a devices, restored on b
    try:
      train_and_evaluate(config((a,), stop_after_steps=4), f"{root}/resume{a}to{b}")
    except Preempted:  # the run must stop here, so that the next call resumes it on b devices
      out[f"stopped{a}to{b}"] = len(losses(f"{root}/resume{a}to{b}"))
    _, summary = train_and_evaluate(config((b,)), f"{root}/resume{a}to{b}")
    out[f"losses{a}to{b}"] = losses(f"{root}/resume{a}to{b}")
  for mesh, batch in (((8,), 12), ((16,), 16)):
    try:
      train_and_evaluate(config(mesh, batch_size=batch))
    except ConfigError as e:
      out[f"error{mesh[0]}_{batch}"] = str(e)

mesh = mesh_lib.make_mesh((-1,), ("data",))
driver = device.DeviceSteps(mesh, 16, 32, 10, **steps.device_steps())
images = np.arange(64 * 4, dtype=np.uint8).reshape(64, 2, 2, 1)
labels = np.arange(64, dtype=np.int32)
perm = driver.permutation(jax.random.PRNGKey(0), 1, 64)
batch = driver.gather(*driver.put_train(images, labels), perm, 1)
shards = batch["image"].addressable_shards
out["batch_spec"] = [str(axis) for axis in batch["image"].sharding.spec]
out["batch_shards"] = [list(s.data.shape) for s in shards]
out["batch_shard_devices"] = len({s.device for s in shards})
out["batch_labels_right"] = bool(np.array_equal(np.asarray(batch["label"]),
                                                np.asarray(perm)[16:32]))
print("RESULT " + json.dumps(out))
"""


def _child_env(**extra):
  return {**os.environ, "TFDS_DATA_DIR": real_data_dir(), "PYTHONUNBUFFERED": "1", **extra}


def _eight_devices_env():
  return _child_env(XLA_FLAGS=(os.environ.get("XLA_FLAGS", "")
                               + " --xla_force_host_platform_device_count=8").strip())


@pytest.fixture(scope="module")
def eight(tmp_path_factory):
  env = _eight_devices_env()
  proc = subprocess.run([sys.executable, "-c", EIGHT_DEVICES,
                         str(tmp_path_factory.mktemp("eight"))], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))
  return json.loads(line[len("RESULT "):])


def test_eight_devices_train_like_one(eight):
  assert eight["devices"] == 8
  assert len(eight["losses8"]) == len(eight["losses1"]) == 6
  np.testing.assert_allclose(eight["losses8"], eight["losses1"], rtol=1e-5)
  assert eight["test8"] == pytest.approx(eight["test1"], rel=1e-5)


def test_the_batch_is_sharded_and_the_parameters_replicated(eight):
  assert eight["batch_spec"] == ["data"]
  assert eight["batch_shard_devices"] == 8
  assert eight["batch_shards"] == [[2, 2, 2, 1]] * 8  # 16 examples, 2 per device
  assert eight["batch_labels_right"]  # the shards together are step 1's examples, in order
  assert eight["params_replicated8"] and eight["params_replicated1"]


def test_checkpoints_restore_onto_another_device_count(eight):
  for a, b in ((8, 1), (1, 8)):
    assert eight.get(f"stopped{a}to{b}") == 4  # stopped after 4 of 6 steps, then resumed
    np.testing.assert_allclose(eight[f"losses{a}to{b}"], eight["losses1"], rtol=1e-5,
                               err_msg=f"saved on {a} devices, resumed on {b}")


def test_mesh_and_batch_errors_come_before_compiling(eight):
  assert "batch_size=12 does not divide over the 8 devices" in eight["error8_12"]
  assert "multiple of 8" in eight["error8_12"]
  assert "needs 16 devices; there are 8" in eight["error16_16"]


# The tests above log (so the host waits) every step; a real run dispatches a whole log interval
# of steps before it reads anything back, and on jaxlib 0.7.1-0.11.2 overlapping calls on several
# CPU devices deadlocked in their all-reduce (this test failed before the fix in DeviceSteps, and
# 3 of 3 runs like it aborted).
MANY_STEPS = r"""
import json, sys
sys.path.insert(0, "tests")
import conftest
import jax, tensorflow_datasets as tfds
from conftest import load_config, shrink
from training import train_and_evaluate
with tfds.testing.mock_data(num_examples=3200):
  state, summary = train_and_evaluate(shrink(
      load_config("mlp"), max_train_examples=3200, log_every_steps=1000, mesh_shape=(8,)))
print("RESULT " + json.dumps({"devices": jax.device_count(), "steps": int(state.step),
                              "loss": summary["epochs"][-1]["train/loss"]}))
"""


def test_eight_cpu_devices_train_through_a_log_interval_without_deadlock():
  env = _eight_devices_env()
  proc = subprocess.run([sys.executable, "-c", MANY_STEPS], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(next(l for l in proc.stdout.splitlines()
                           if l.startswith("RESULT "))[len("RESULT "):])
  assert result["devices"] == 8
  assert result["steps"] == 180  # 90% of 3200 examples for training, batches of 16
  assert np.isfinite(result["loss"])


WORKER = r"""
import json, sys
sys.path.insert(0, "tests")
import conftest
from conftest import load_config, shrink
from training import train_and_evaluate
from training.compute import distributed
pid, port, workdir, out, cache = sys.argv[1:]
assert distributed.initialize(f"localhost:{port}", 2, int(pid), timeout_s=120)
import jax
config = shrink(load_config("mlp"), num_epochs=2, max_train_examples=2048, max_eval_examples=0,
                batch_size=64, eval_batch_size=1000, log_every_steps=8, cache_dir=cache)
_, summary = train_and_evaluate(config, workdir)
epochs = [{k: v for k, v in e.items() if not k.startswith("time/")} for e in summary["epochs"]]
json.dump({"test": summary["test"], "epochs": epochs, "processes": jax.process_count(),
           "devices": jax.device_count(), "local_devices": jax.local_device_count()},
          open(out, "w"))
"""


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_processes_train_together_and_their_checkpoint_restores_in_one(tmp_path,
                                                                             data_cache):
  port, workdir = _free_port(), tmp_path / "run"
  procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(i), str(port), str(workdir),
                             str(tmp_path / f"out{i}.json"), data_cache], cwd=REPO,
                            env=_child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True) for i in (0, 1)]
  outputs = [p.communicate(timeout=600)[0] for p in procs]
  assert [p.returncode for p in procs] == [0, 0], "\n\n".join(o[-3000:] for o in outputs)
  r0, r1 = (json.loads((tmp_path / f"out{i}.json").read_text()) for i in (0, 1))
  assert r0["processes"] == 2 and r0["devices"] == 2 and r0["local_devices"] == 1
  assert r0["test"] == r1["test"] and r0["epochs"] == r1["epochs"]
  assert r0["test"]["count"] == 10_000 and r0["test"]["accuracy"] > 0.85
  # Only process 0 reports and writes the metrics: every log step once.
  assert "mlp: 669,706 parameters" in outputs[0] and "parameters" not in outputs[1]
  rows = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  logged = [r["step"] for r in rows if "train/loss" in r and "epoch" not in r]
  assert logged == list(range(8, 65, 8))  # 2 epochs of 32 steps, a log every 8
  # The checkpoint both processes wrote restores in this single process, onto one device.
  single = evaluate.evaluate(str(workdir), "latest", data_dir=real_data_dir())
  assert single["count"] == 10_000
  assert single["accuracy"] == r0["test"]["accuracy"]
  assert single["loss"] == pytest.approx(r0["test"]["loss"], rel=1e-5)


@pytest.mark.parametrize("args, message", [
    (["--num_processes=2"], "missing: --coordinator_address, --process_id"),
    (["--coordinator_address=localhost:1234", "--num_processes=2", "--process_id=2"],
     r"--process_id=2 is not in 0..1"),
    (["--coordinator_address=1234", "--num_processes=2", "--process_id=0"], "is not host:port"),
    (["--coordinator_address=localhost:1234", "--num_processes=0", "--process_id=0"],
     "--num_processes=0 must be at least 1"),  # it blamed --process_id
    (["--distributed_timeout=-3"], "--distributed_timeout=-3 must be at least 1"),
    (["--coordinator_address=localhost:{port}", "--num_processes=2", "--process_id=1",
      "--distributed_timeout=2"], "Process 1 could not reach the coordinator at localhost:"),
])
def test_misconfigured_launches_fail_clearly(args, message):
  args = [a.format(port=_free_port()) for a in args]
  proc = subprocess.run([sys.executable, "train.py", "--config=configs/mlp.py", *args],
                        cwd=REPO, env=_child_env(), capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0
  assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
