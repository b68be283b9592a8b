"""Adding an architecture is one file in nets/ and one config, as docs/extending.md says."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap

from conftest import REPO, real_data_dir


def _doc_files() -> dict[str, str]:
  """The code blocks of docs/extending.md's steps, by the path in their first line."""
  section = REPO.joinpath("docs", "extending.md").read_text()
  blocks = re.findall(r"```python\n(.*?)```", section, re.S)
  files = {}
  for block in blocks:
    code = textwrap.dedent(block)
    first, _, rest = code.partition("\n")
    if first.startswith("# ") and first.endswith(".py"):
      files[first[2:]] = rest
  return files


def test_a_new_architecture_is_one_file_and_one_config(tmp_path, data_cache):
  files = _doc_files()
  assert set(files) == {"nets/tiny.py", "configs/tiny.py"}
  project = tmp_path / "project"
  for part in ("nets", "configs", "training"):
    shutil.copytree(REPO / part, project / part, ignore=shutil.ignore_patterns("__pycache__"))
  shutil.copy(REPO / "train.py", project / "train.py")
  before = {p: p.read_bytes() for p in project.rglob("*.py")}
  for path, code in files.items():
    (project / path).write_text(code)
  # Only the two new files differ from the project as it was.
  assert all(p.read_bytes() == content for p, content in before.items())

  env = {**os.environ, "TFDS_DATA_DIR": real_data_dir()}
  run = lambda *args: subprocess.run([sys.executable, *args], cwd=project, env=env,
                                     capture_output=True, text=True, timeout=300)
  listed = run("-c", "import nets; print(nets.names()); print(nets.field_names('tiny'))")
  assert listed.returncode == 0, listed.stderr[-2000:]
  assert "'tiny'" in listed.stdout and "['num_classes', 'width', 'dtype']" in listed.stdout
  trained = run("train.py", "--config=configs/tiny.py", f"--workdir={tmp_path / 'run'}",
                "--config.max_train_examples=8192", "--config.num_epochs=1",
                f"--config.cache_dir={data_cache}", "--config.progress_bar=False")
  out = trained.stdout + trained.stderr
  assert trained.returncode == 0, out[-3000:]
  assert "tiny: 50,890 parameters" in out  # 784*64 + 64 + 64*10 + 10
  accuracy = float(re.search(r"test: loss [\d.]+  accuracy ([\d.]+)%", out).group(1))
  assert accuracy > 85.0
  typo = run("train.py", "--config=configs/tiny.py", "--config.model.widht=3")
  assert typo.returncode != 0 and "widht" in typo.stderr and "Traceback" not in typo.stderr
