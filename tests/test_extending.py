"""Adding an architecture is one file in nets/ and one config, as docs/extending.md says: its code
blocks (a Linen model and an NNX one, each with its config), copied into a copy of the project,
train and pass the architecture's part of the suite."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO, real_data_dir

# What a copy of the project needs to train and to run its tests.
PARTS = ("nets", "configs", "training", "tests", "docs", "train.py", "README.md", "pyproject.toml")
# The test files whose tests are parametrized by architecture or config (docs/extending.md's
# "What the suite checks").
ARCHITECTURE_TESTS = ("tests/test_nets.py", "tests/test_show.py", "tests/test_train.py",
                      "tests/test_export.py")


def _doc_files() -> dict[str, str]:
  """The code blocks of docs/extending.md that are files, by the path in their first line."""
  text = REPO.joinpath("docs", "extending.md").read_text()
  files = {}
  for block in re.findall(r"```python\n(.*?)```", text, re.S):
    first, _, rest = textwrap.dedent(block).partition("\n")
    if first.startswith("# ") and first.endswith(".py"):
      files[first[2:]] = rest
  return files


@pytest.fixture(scope="module")
def project(tmp_path_factory):
  """A copy of the project with docs/extending.md's files added, and nothing else changed."""
  root = tmp_path_factory.mktemp("project")
  for part in PARTS:
    copy = shutil.copytree if (REPO / part).is_dir() else shutil.copy
    copy(REPO / part, root / part, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                      if (REPO / part).is_dir() else {}))
  before = {p: p.read_bytes() for p in root.rglob("*.py")}
  files = _doc_files()
  for path, code in files.items():
    (root / path).write_text(code)
  # The docs' files are new: none replaces a file of the project.
  assert all(p.read_bytes() == content for p, content in before.items())
  return root, files


def _run(root, *args, timeout=300):
  env = {**os.environ, "TFDS_DATA_DIR": real_data_dir()}
  return subprocess.run([sys.executable, *args], cwd=root, env=env, capture_output=True,
                        text=True, timeout=timeout)


def test_the_docs_files_pass_the_architecture_s_part_of_the_suite(project):
  root, files = project
  names = sorted(path[len("configs/"):-3] for path in files if path.startswith("configs/"))
  assert names, "docs/extending.md has no configs/NAME.py block"
  tests = _run(root, "-m", "pytest", "-n", "0", "-q", "-rs", "-p", "no:cacheprovider",
               "-k", " or ".join(names), *ARCHITECTURE_TESTS, timeout=600)
  out = tests.stdout + tests.stderr
  assert tests.returncode == 0, out[-4000:]
  for name in names:  # the rules that need a measurement skip, saying what to run
    assert f"python bench/accuracy.py --configs={name} --results=docs/results.md`" in out, \
        out[-4000:]
    assert f"configs/{name}.py is new: its first two losses are not pinned yet" in out
  passed = int(re.search(r"(\d+) passed", out).group(1))
  assert passed >= 7 * len(names), out[-2000:]  # test_nets 3, test_show 2, train 1, export 1


def test_a_new_architecture_trains_on_mnist_and_takes_overrides(project, tmp_path, data_cache):
  root, files = project
  assert set(files) == {"nets/tiny.py", "configs/tiny.py", "nets/tiny_nnx.py", "configs/tiny_nnx.py"}
  listed = _run(root, "-c", "import nets; print(nets.names()); print(nets.field_names('tiny')); "
                "print(nets.field_names('tiny_nnx'))")
  assert listed.returncode == 0, listed.stderr[-2000:]
  assert "'tiny'" in listed.stdout and "['num_classes', 'width', 'dtype']" in listed.stdout
  assert "['num_classes', 'width', 'dropout', 'dtype']" in listed.stdout  # the NNX one's
  trained = _run(root, "train.py", "--config=configs/tiny.py", f"--workdir={tmp_path / 'run'}",
                 "--config.max_train_examples=8192", "--config.num_epochs=1",
                 f"--config.cache_dir={data_cache}", "--config.progress_bar=False")
  out = trained.stdout + trained.stderr
  assert trained.returncode == 0, out[-3000:]
  assert "tiny: 101,770 parameters" in out  # 784*128 + 128 + 128*10 + 10
  accuracy = float(re.search(r"test: loss [\d.]+  accuracy ([\d.]+)%", out).group(1))
  assert accuracy > 85.0
  typo = _run(root, "train.py", "--config=configs/tiny.py", "--config.model.widht=3")
  assert typo.returncode != 0 and "widht" in typo.stderr and "Traceback" not in typo.stderr


_BROKEN = '''"""A contributor's model with one mistake."""
import flax.linen as nn
from nets import register


class Broken(nn.Module):
  FIELD
  num_classes: int = 10

  @nn.compact
  def __call__(self, x, *, CALL):
    return nn.Dense(self.num_classes)(x.reshape((x.shape[0], -1)))


register("NAME", Broken)
'''


@pytest.mark.parametrize("field, call, name, message", [
    ("width: int  # no default", "train", "broken",
     "nets/broken.py: Broken's field(s) width have no default. Give each a default"),
    ("width: int = 4  # units", "training", "broken",
     "nets/broken.py: Broken.__call__ takes no `train` keyword"),
    ("width: int = 4  # units", "train", "cnn",
     "The model name 'cnn' is registered twice: by nets/broken.py (Broken) and by nets/cnn.py (CNN)"),
    ("width: int = 4  # units\n  depth: int  # no default, after one", "train", "broken",
     "nets/broken.py cannot be imported (line 6): TypeError: non-default argument 'depth'"),
])
def test_a_broken_model_file_is_named_in_one_error_line(project, tmp_path, field, call, name,
                                                        message):
  """Every file in nets/ is imported to find the models, so a mistake in a new one stops every
  command: each says which file and what to do, in one line, for configs that never use it."""
  root, _ = project
  broken = root / "nets" / "broken.py"
  broken.write_text(_BROKEN.replace("FIELD", field).replace("CALL", call).replace("NAME", name))
  try:
    env = {"PYTHONDONTWRITEBYTECODE": "1"}  # the next case's file may have the same size and time
    for args in (["--mode=show"], [f"--workdir={tmp_path}", "--config.num_epochs=1"]):
      run = subprocess.run([sys.executable, "train.py", "--config=configs/mlp.py", *args],
                           cwd=root, env={**os.environ, **env}, capture_output=True, text=True,
                           timeout=300)
      assert run.returncode == 1 and run.stderr.startswith(f"error: {message}"), run.stderr[-3000:]
      assert len(run.stderr.strip().splitlines()) == 1, run.stderr[-3000:]
    assert not any(tmp_path.iterdir())  # refused before anything is written
  finally:
    broken.unlink()
