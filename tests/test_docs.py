"""The docs hold what they point at: every relative link and #anchor in README.md and docs/
resolves (by GitHub's anchor rules), every file path named in the docs and the code's docstrings
exists, and every `--config.X` that the docs, the error messages and the notes tell a user to pass
is a real field of some config."""

from __future__ import annotations

import ast
import functools
import pathlib
import re

import pytest
from flax import traverse_util

from conftest import CONFIG_NAMES, REPO, load_config

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# Where a user is told about fields: the docs, and the string literals of the code that prints
# (errors, notes, help), the configs' comments included.
SOURCES = [*DOCS, REPO / "train.py", *sorted(REPO.glob("training/**/*.py")),
           *sorted(REPO.glob("configs/*.py"))]


def _prose(text: str) -> str:
  """Markdown without its fenced code blocks (their text is code, not links)."""
  return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def slug(heading: str) -> str:
  """GitHub's anchor of a heading: its rendered text lower-cased, each space a hyphen, all but
  letters, digits, hyphens and underscores dropped."""
  text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link counts by its text
  text = re.sub(r"[`*]", "", text).strip().lower()
  return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


@functools.cache
def anchors(path: pathlib.Path) -> frozenset[str]:
  """The anchors of a Markdown file's headings; a repeated heading gets -1, -2, ..."""
  seen: dict[str, int] = {}
  out = set()
  for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", _prose(path.read_text()), re.M):
    base = slug(heading)
    n = seen.get(base, 0)
    out.add(base if n == 0 else f"{base}-{n}")
    seen[base] = n + 1
  return frozenset(out)


def broken_links(path: pathlib.Path, text: str) -> list[str]:
  """The relative links of Markdown `text` (the file `path`) whose file or #anchor is missing."""
  out = []
  for target in re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", _prose(text)):
    if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:: not this repository's
      continue
    file, _, anchor = target.partition("#")
    where = (path.parent / file).resolve() if file else path
    if not where.exists():
      out.append(f"{path.name}: {target} (no such file)")
    elif anchor and where.suffix == ".md" and anchor not in anchors(where):
      out.append(f"{path.name}: {target} (no heading #{anchor} in {where.name})")
  return out


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_every_relative_link_and_anchor_resolves(path):
  assert not broken_links(path, path.read_text())


def test_the_link_check_finds_a_missing_file_and_a_missing_anchor():
  readme = REPO / "README.md"
  text = ("[a](docs/design.md#layers) [b](docs/nothing.md) [c](docs/design.md#no-such-heading) "
          "[d](#results) [e](https://example.com/x#y)\n```\n[f](inside/a/code/block.md)\n```\n")
  assert broken_links(readme, text) == [
      "README.md: docs/nothing.md (no such file)",
      "README.md: docs/design.md#no-such-heading (no heading #no-such-heading in design.md)"]


@pytest.mark.parametrize("heading, anchor", [
    ("Stopping: how fast, and the records after it", "stopping-how-fast-and-the-records-after-it"),
    ("Populations (`bench/population.py`)", "populations-benchpopulationpy"),
    ("The speedrun's accuracy gap to PyTorch, over seeds",
     "the-speedruns-accuracy-gap-to-pytorch-over-seeds"),
    ("GPU: one NVIDIA H200", "gpu-one-nvidia-h200")])
def test_anchors_follow_githubs_rules(heading, anchor):
  assert slug(heading) == anchor


# A path of this repository named in prose: docs/x.md#anchor, training/x/y.py, bench/z.py, ...
_PATH = re.compile(r"(?<![\w./-])((?:docs|training|configs|nets|bench|tests|examples|\.ci)/"
                   r"[\w./-]*\w)(#[\w-]+)?")


def named_paths(text: str) -> list[tuple[str, str]]:
  return [(m.group(1), (m.group(2) or "")[1:]) for m in _PATH.finditer(text)]


# What docs/extending.md and the README tell a reader to write (a model and its config), and the
# mistakes the docs show being refused: named on purpose, though no such file or field exists.
TO_WRITE = {"nets/tiny.py", "configs/tiny.py", "nets/tiny_nnx.py", "configs/tiny_nnx.py",
            "configs/name.py", "model.width"}
MISTAKES = {"optimizer.lr"}


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_path_named_exists(path):
  missing = []
  for name, anchor in named_paths(path.read_text()):
    where = REPO / name
    if name in TO_WRITE:
      continue
    if not where.exists():
      missing.append(name)
    elif anchor and where.suffix == ".md" and anchor not in anchors(where):
      missing.append(f"{name}#{anchor}")
  assert not missing, f"{path.relative_to(REPO)} names what is not there: {missing}"


@functools.cache
def config_fields() -> frozenset[str]:
  """Every dotted field of every config, and the model fields that any nets/ module declares
  (a model field is set as --config.model.FIELD whichever config names it)."""
  import nets
  fields = set()
  for name in CONFIG_NAMES:
    flat = traverse_util.flatten_dict(load_config(name).to_dict(), sep=".")
    fields |= set(flat) | {k.rsplit(".", 1)[0] for k in flat if "." in k}  # groups too
  for model in nets.names(kind=None):
    fields |= {f"model.{f}" for f in nets.field_names(model)}
  return frozenset(fields)


def _strings(path: pathlib.Path) -> str:
  """What a user may read of a file: Markdown whole; of Python, its string literals and comments."""
  text = path.read_text()
  if path.suffix != ".py":
    return text
  literals = [n.value for n in ast.walk(ast.parse(text))
              if isinstance(n, ast.Constant) and isinstance(n.value, str)]
  return "\n".join(literals + re.findall(r"#.*", text))


_FIELD = re.compile(r"--config\.([A-Za-z_][\w.]*\w)")


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_config_field_named_is_real(path):
  named = sorted(set(_FIELD.findall(_strings(path))))
  # FIELD, X and the like stand for any field in the text that explains overrides.
  unknown = [f for f in named if f not in config_fields() | TO_WRITE | MISTAKES
             and not f.split(".")[-1].isupper()]
  assert not unknown, f"{path.relative_to(REPO)} names fields no config has: {unknown}"


def test_the_field_check_refuses_a_field_that_does_not_exist():
  assert "gan.eval_classifier" in config_fields() and "model.features" in config_fields()
  assert "eval_classifier" not in config_fields()
  assert _FIELD.findall("pass --config.eval_classifier=runs/speedrun.") == ["eval_classifier"]


def test_design_md_lists_the_fields_a_resume_may_change():
  """docs/design.md's paragraph names exactly the fields that training/store/checkpoint.py lets a
  resume change (and the checkpoint.* group)."""
  from training.modes.train.resume import RESUMABLE_CHANGES
  text = (REPO / "docs" / "design.md").read_text()
  section = text.split("\n## Refusing a changed config\n", 1)[1].split("\n## ", 1)[0]
  paragraph = section.split("What may differ", 1)[1].split("Anything else", 1)[0]
  named = set(re.findall(r"`([\w.*]+)`", paragraph)) - {"RESUMABLE_CHANGES", "checkpoint.*"}
  assert named == set(RESUMABLE_CHANGES)
