"""The suite's own guard: a test that hangs (a server that never answers, a process that holds a
pipe) fails with its stack within pyproject.toml's limit, rather than outlasting the CI."""

import subprocess
import sys

from conftest import REPO

HANGS = """
import time

def test_that_hangs():
  time.sleep(600)
"""


def test_the_suite_has_a_time_limit_per_test(pytestconfig):
  assert 300 <= int(pytestconfig.getini("timeout")) <= 1200


def test_a_test_that_hangs_fails_with_its_stack(tmp_path):
  (tmp_path / "test_hangs.py").write_text(HANGS)
  run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider",
                        "--timeout=2", f"--rootdir={tmp_path}", "-c", str(REPO / "pyproject.toml"),
                        str(tmp_path / "test_hangs.py")],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
  assert run.returncode == 1, run.stdout[-3000:]
  assert "Timeout (>2.0s)" in run.stdout and "time.sleep(600)" in run.stdout, run.stdout[-3000:]
