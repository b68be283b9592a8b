"""The modes on a read-only workdir (a shared or archived run): each prints its results and says
in one line what it could not save; none ends in a traceback, and the workdir is untouched.

The workdir is made read-only for real: with `chmod` for a user other than root, and for root
(whom `chmod` does not stop) by a read-only bind mount in a mount namespace of the command's
own (`unshare -m`); where neither works the tests are skipped. tests/test_report.py checks the
same for the report in-process, with every write failing as on a read-only file system.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest
from PIL import Image

from training import errors, train_and_evaluate

from conftest import REPO, load_config, real_data_dir, shrink

BIND_READ_ONLY = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, data_cache) -> str:
  """A short real-MNIST MLP run (2 epochs of 8 steps)."""
  workdir = str(tmp_path_factory.mktemp("read_only") / "run")
  train_and_evaluate(shrink(load_config("mlp"), num_epochs=2, max_train_examples=1024,
                            batch_size=128, max_eval_examples=0, eval_batch_size=1000,
                            data_dir=real_data_dir(), cache_dir=data_cache), workdir)
  return workdir


def _read_only(path: str) -> list[str]:
  """The prefix of a command that sees `path` read-only (after `chmod`, for a user other than
  root); skips the test where neither way makes writing there fail."""
  if os.geteuid() != 0:
    subprocess.run(["chmod", "-R", "a-w", path], check=True)
    prefix = []
  else:
    prefix = ["unshare", "-m", "sh", "-c", BIND_READ_ONLY, path]
  try:
    probe = subprocess.run([*prefix, "touch", os.path.join(path, "probe")], capture_output=True,
                           text=True, timeout=60)
  except OSError as e:  # no unshare
    pytest.skip(f"cannot make {path} read-only here: {e}")
  if probe.returncode == 0 or (prefix and "Read-only file system" not in probe.stderr):
    if os.path.exists(os.path.join(path, "probe")):
      os.remove(os.path.join(path, "probe"))
    pytest.skip(f"cannot make {path} read-only here (as root it needs `unshare -m`, that is "
                f"CAP_SYS_ADMIN): {probe.stderr.strip()[:200]}")
  return prefix


# What the notes say: a read-only mount, or a directory without write permission.
WHY = "read-only" if os.geteuid() == 0 else "not writable"
OS_WHY = "Read-only file system" if os.geteuid() == 0 else "Permission denied"


@pytest.fixture
def read_only(request):
  """`read_only(path)`: the prefix of a command that sees `path` read-only; write access is
  given back afterwards where chmod took it."""
  taken = []

  def make(path: str) -> list[str]:
    taken.append(path)
    return _read_only(path)
  yield make
  if os.geteuid() != 0:
    for path in taken:
      subprocess.run(["chmod", "-R", "u+w", path], check=False)


def _cli(prefix: list[str], *args: str) -> subprocess.CompletedProcess:
  env = {**os.environ, "TFDS_DATA_DIR": real_data_dir()}
  return subprocess.run([*prefix, sys.executable, str(REPO / "train.py"), *args], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=600)


def _files(path: str) -> dict[str, float]:
  return {os.path.join(d, n): os.path.getmtime(os.path.join(d, n))
          for d, _, names in os.walk(path) for n in names}


def test_evaluate_report_predict_and_export_of_a_read_only_workdir(run_dir, read_only, tmp_path):
  before = _files(run_dir)
  ro = read_only(run_dir)
  evaluated = _cli(ro, "--mode=evaluate", f"--workdir={run_dir}")
  out = evaluated.stdout + evaluated.stderr
  assert evaluated.returncode == 0 and "Traceback" not in out, out[-3000:]
  assert "test: loss " in out and "(10000 examples)" in out
  assert out.strip().splitlines()[-1] == (f"note: could not write eval_test_step16.json into "
                                          f"{run_dir}: the workdir is {WHY}.")

  reported = _cli(ro, "--mode=report", f"--workdir={run_dir}")
  assert reported.returncode == 0 and "Traceback" not in reported.stderr, reported.stderr[-3000:]
  lines = reported.stdout.strip().splitlines()
  assert lines[1].startswith("test (") and " examples" in lines[1] and lines[-1] == (
      "note: could not write learning_curves.png, confusion_matrix.png, per_class.png, "
      f"mistakes.png, report.html and the TensorBoard images into {run_dir}: the workdir is "
      f"{WHY}.")

  digit = tmp_path / "blank.png"
  Image.new("L", (28, 28), 0).save(digit)
  predicted = _cli(ro, "--mode=predict", f"--workdir={run_dir}", str(digit),
                   f"--output={tmp_path / 'p.csv'}")
  assert predicted.returncode == 0, predicted.stderr[-3000:]
  assert (tmp_path / "p.csv").is_file()  # --output elsewhere works
  into_run = _cli(ro, "--mode=predict", f"--workdir={run_dir}", str(digit),
                  f"--output={run_dir}/p.csv")
  assert into_run.returncode == 1 and into_run.stderr.strip() == (
      f"error: Cannot write --output={run_dir}/p.csv: {OS_WHY}; pass a file in a writable "
      "directory.")

  exported = _cli(ro, "--mode=export", f"--workdir={run_dir}")
  assert exported.returncode == 1 and "Traceback" not in exported.stderr, exported.stderr[-3000:]
  assert f"made for {run_dir}/export:" in exported.stdout and "checked: jax within" in exported.stdout
  assert exported.stderr.strip() == (
      f"error: could not write model.jax, model.json into {run_dir}/export: that directory is "
      f"{WHY}. Pass --output=DIR (a writable directory) to write them there.")
  elsewhere = _cli(ro, "--mode=export", f"--workdir={run_dir}", f"--output={tmp_path / 'x'}")
  assert elsewhere.returncode == 0 and (tmp_path / "x" / "model.jax").is_file()
  assert _files(run_dir) == before


def test_sample_of_a_read_only_gan_workdir(read_only, mock_mnist, tmp_path):
  judge, gan = str(tmp_path / "judge"), str(tmp_path / "gan")
  train_and_evaluate(shrink(load_config("mlp"), **{"model.hidden": (32,)}), judge)
  train_and_evaluate(shrink(load_config("dcgan"), **{
      "gan.eval_classifier": judge, "gan.eval_samples": 64, "model.widths": (16, 8),
      "model.d_widths": (8, 16)}), gan)
  before = _files(gan)
  ro = read_only(gan)
  sampled = _cli(ro, "--mode=sample", f"--workdir={gan}", "--num=4")
  assert sampled.returncode == 1 and "Traceback" not in sampled.stderr, sampled.stderr[-3000:]
  assert sampled.stderr.strip() == (
      f"error: could not write sample_step4_seed0.png into {gan}/samples: the workdir is "
      f"{WHY}. Pass --output=FILE.png to write them elsewhere.")
  elsewhere = _cli(ro, "--mode=sample", f"--workdir={gan}", "--num=4",
                   f"--output={tmp_path / 's.png'}")
  assert elsewhere.returncode == 0 and (tmp_path / "s.png").is_file(), elsewhere.stderr[-2000:]
  assert _files(gan) == before


def test_the_writable_probe_creates_nothing_and_says_why(tmp_path, monkeypatch):
  """One probe (training.errors.check_writable) for a workdir and a report's folder: it asks the
  OS, so a refused run leaves no file made and removed again."""
  errors.check_writable(str(tmp_path / "new" / "deeper"))  # to be made: its parent is asked
  assert list(tmp_path.iterdir()) == []
  (tmp_path / "file").write_text("x")
  with pytest.raises(NotADirectoryError):
    errors.check_writable(str(tmp_path / "file" / "sub"))
  monkeypatch.setattr(os, "access", lambda path, mode: False)  # root may write anywhere
  with pytest.raises(OSError) as e:
    errors.check_writable(str(tmp_path))
  assert (e.value.errno, e.value.strerror) == (errno.EACCES, "Permission denied")
