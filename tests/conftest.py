"""Shared helpers: every config file and every registered model is picked up automatically."""

from __future__ import annotations

import importlib
import os
import pathlib
import re

import ml_collections
import pytest

import configs
import mnist_data
from training.compute import runtime
from training import settings

# Two test workers on one GPU must not each grab most of its memory up front.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
# The same CPU settings and library-noise filters as train.py, before any test starts JAX's backend.
runtime.tune_host_allocator()
runtime.set_xla_cpu_flags()
runtime.quiet_library_noise()

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG_NAMES = configs.names()
# The tests' MNIST is tfds-prepared: without $TFDS_DATA_DIR, ../shared's (as real_data_dir finds
# it), so that a test on tfds's mock data never falls through to the IDX files' download.
_SHARED_TFDS = REPO.parent / "shared" / "tensorflow_datasets"
if not os.environ.get("TFDS_DATA_DIR") and _SHARED_TFDS.is_dir():
  os.environ["TFDS_DATA_DIR"] = str(_SHARED_TFDS)


RESULTS = REPO / "docs" / "results.md"


def results(text: str | None = None) -> dict[str, dict[str, str]]:
  """docs/results.md's table (or the table in `text`): each config's row, its cells by column
  heading, the config named by its file stem ("cnn" for `configs/cnn.py`)."""
  lines = (RESULTS.read_text() if text is None else text).splitlines()
  start = next(i for i, line in enumerate(lines) if line.startswith("| config |"))
  header = _cells(lines[start])
  rows = {}
  for line in lines[start + 2:]:
    if not line.startswith("|"):
      break
    cells = dict(zip(header, _cells(line)))
    rows[re.fullmatch(r"`configs/(\w+)\.py`", cells["config"]).group(1)] = cells
  return rows


def _cells(line: str) -> list[str]:
  return [c.strip() for c in line.strip().strip("|").split("|")]


def ships(config_name: str) -> bool:
  """Whether a config ships: it has a row in docs/results.md, the list of measured configs (a
  population config, configs/ensemble.py, by the config it extends). Those are held to every
  rule; a contributor's new config, which no one has measured yet, skips the rules that need a
  measurement (docs/extending.md). A list in a file that every reader sees, rather than git's
  tracking: a copy of the project without .git (a release, the docs' test) keeps it."""
  rows = results()
  base = load_config(config_name).get("population", 1) > 1 and base_config(config_name)
  return config_name in rows or base in rows


def base_config(config_name: str) -> str | None:
  """The configs/ module that a config file's get_config() starts from, if one."""
  text = (REPO / "configs" / f"{config_name}.py").read_text()
  found = re.search(r"^\s*c = (\w+)\.get_config\(", text, re.M)
  return found.group(1) if found else None


def load_config(name: str) -> ml_collections.ConfigDict:
  return importlib.import_module(f"configs.{name}").get_config()


# The configs of each task (training/tasks/): the classifier tests run on every classifier config.
CLASSIFIER_CONFIGS = [n for n in CONFIG_NAMES if load_config(n).get("task", "classify") == "classify"]
GAN_CONFIGS = [n for n in CONFIG_NAMES if load_config(n).get("task") == "gan"]


def shrink(config: ml_collections.ConfigDict, **overrides) -> ml_collections.ConfigDict:
  """The same config on a few examples: one epoch of a few steps, no cache, no progress bar."""
  c = ml_collections.ConfigDict(config.to_dict())
  c.update(num_epochs=1, batch_size=16, eval_batch_size=32, max_train_examples=64,
           max_eval_examples=48, progress_bar=False, cache_dir="none", log_every_steps=2,
           report=False)
  settings.set_fields(c, overrides)
  return c


def real_tfds_dir() -> str | None:
  """The folder of the prepared tfds MNIST, or None."""
  return mnist_data.tfds_dir()


def real_idx_dir() -> str:
  """The folder of MNIST's four IDX files (mnist_data.py says where they are looked for)."""
  return mnist_data.idx_dir() or pytest.fail(mnist_data.MISSING, pytrace=False)


def real_data_dir() -> str:
  """A --config.data_dir (and $TFDS_DATA_DIR for a subprocess) with the real MNIST in it."""
  return mnist_data.data_dir() or pytest.fail(mnist_data.MISSING, pytrace=False)


def needs_tfds_mnist() -> str:
  """For the tests of the tfds format itself: its folder, or a skip that says why."""
  path = real_tfds_dir()
  if path is None:
    pytest.skip("needs MNIST prepared by tfds (mnist/3.0.1 in $TFDS_DATA_DIR); the IDX files "
                "that the other tests use do not have its format")
  return path


def unused_url() -> str:
  """An http:// URL on 127.0.0.1 where nothing listens: a download from it fails at once, and no
  test reaches outside the machine."""
  import socket
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  return f"http://127.0.0.1:{port}/"


@pytest.fixture(scope="session", autouse=True)
def _temporary_files(tmp_path_factory):
  """Temporary files that no test names, in a folder of the session's own that it deletes at its
  end, rather than loose in the machine's /tmp: tfds leaves an empty folder for each builder of
  unprepared (mock) data, and headless Chromium its profile, in this process and in the ones the
  tests start. A short path: Chromium's socket there must fit a socket address (108 bytes)."""
  import shutil
  import tempfile
  tmp_path_factory.getbasetemp()  # the tests' own tmp_path stays in pytest's tree, found first
  folder = tempfile.mkdtemp(prefix="mnist-flax-tests-")
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(tempfile, "tempdir", folder)
    mp.setenv("TMPDIR", folder)
    yield
  shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory) -> str:
  """One decoded-data cache for the session: the real data is decoded once, not per test."""
  return str(tmp_path_factory.mktemp("data_cache"))


@pytest.fixture
def mock_mnist(monkeypatch):
  """tfds's random examples in place of any tfds dataset. mnist, fashion_mnist and kmnist are
  read from tfds only where prepared tfds data is found (else from their IDX files): here the
  mock counts as prepared."""
  import tensorflow_datasets as tfds
  from training.data import tfds_source
  monkeypatch.setattr(tfds_source, "is_prepared", lambda name, data_dir: True)
  with tfds.testing.mock_data(num_examples=64):
    yield


def kill_once_logged(proc, metrics, step: int, timeout_s: float = 300) -> None:
  """SIGKILLs the training process `proc` once its metrics.jsonl (`metrics`, a Path) has logged
  step `step` (or the time is up), as a power cut or the OOM killer would, and waits for it."""
  import json
  import signal
  import time
  deadline = time.time() + timeout_s
  while time.time() < deadline and proc.poll() is None:
    # Only whole lines: the writer may be half-way through the last one.
    lines = metrics.read_text().split("\n")[:-1] if metrics.exists() else []
    if lines and max(json.loads(line)["step"] for line in lines) >= step:
      break
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  code = proc.wait(timeout=60)
  assert code == -signal.SIGKILL, f"the run ended on its own (exit {code}) before the kill"


@pytest.fixture(scope="session")
def mnist_served_run(tmp_path_factory, data_cache) -> str:
  """configs/cnn.py trained for one epoch on the real MNIST (about 98.8%, 40 s on 2 cores): the
  model of the slow serve tests, which post the test digits and draw digits on the page."""
  from training import train_and_evaluate
  workdir = str(tmp_path_factory.mktemp("serve_cnn"))
  config = load_config("cnn")
  config.update(num_epochs=1, progress_bar=False, report=False, data_dir=real_data_dir(),
                cache_dir=data_cache)
  train_and_evaluate(config, workdir)
  return workdir
