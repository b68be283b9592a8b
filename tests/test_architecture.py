"""The house in layers: every import of the code (those inside functions included) goes down the
layers that docs/design.md declares, none goes up, none closes a circle; modules and functions
stay short enough to read at once.

The layers are the table under "## Layers" in docs/design.md, top to bottom: the one place
where they are declared, next to their diagram. Two imports are made by name at run time and so
are not read here: `nets` and `training.tasks.base` import their own plug-in modules (each
registers itself), which lie in their own package.
"""

from __future__ import annotations

import ast
import functools
import pathlib
import re

import pytest

from conftest import REPO

MAX_FUNCTION_LINES = 60  # a function a reader takes in at once (the style guide's ~60)
MAX_MODULE_LINES = 400  # in training/


def _module_name(path: pathlib.Path) -> str:
  parts = list(path.relative_to(REPO).with_suffix("").parts)
  if parts[-1] == "__init__":
    parts.pop()
  return ".".join(parts)


@functools.cache
def _modules() -> dict[str, pathlib.Path]:
  """Every module of the code that the layers cover: train.py, nets/, configs/, training/."""
  paths = [REPO / "train.py", *REPO.glob("nets/**/*.py"), *REPO.glob("configs/**/*.py"),
           *REPO.glob("training/**/*.py")]
  return {_module_name(p): p for p in paths}


def _imports_of(path: pathlib.Path, name: str) -> list[tuple[str, int]]:
  """(module of this repository, line) for every import in `path`, at any depth. `from X import
  Y` names the module X.Y when Y is one, else X."""
  modules, package = _modules(), name if path.name == "__init__.py" else name.rpartition(".")[0]
  found = []
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      targets = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:  # a relative import
        base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                        + ([base] if base else []))
      targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                 for a in node.names]
    else:
      continue
    for target in targets:
      while target and target not in modules:  # `import a.b.c` of a name inside a module
        target = target.rpartition(".")[0]
      if target and target != name:
        found.append((target, node.lineno))
  return found


@functools.cache
def _graph() -> dict[str, list[tuple[str, int]]]:
  return {name: _imports_of(path, name) for name, path in _modules().items()}


@functools.cache
def _layers() -> list[tuple[str, list[str]]]:
  """(layer, its modules) from docs/design.md's table, top layer first: a folder ("training.run.")
  stands for every module in it, a file for itself."""
  text = (REPO / "docs" / "design.md").read_text()
  section = text.split("\n## Layers\n", 1)[1].split("\n## ", 1)[0]
  layers = []
  for row in re.findall(r"^\|(.+)\|\s*$", section, re.M):
    cells = [c.strip() for c in row.split("|")]
    paths = re.findall(r"`([^`]+)`", cells[1]) if len(cells) > 1 else []
    if paths and not set(cells[0]) <= set("-: "):
      layers.append((cells[0], [p.replace("/", ".") if p.endswith("/") else
                                p.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
                                for p in paths]))
  assert layers, "docs/design.md has no layer table under '## Layers'"
  return layers


def _layer(module: str) -> int | None:
  """The layer's height (0: the bottom one), by the longest declared prefix of `module`."""
  best, height = -1, None
  for i, (_, declared) in enumerate(_layers()):
    for name in declared:
      folder = name.endswith(".")
      if (module + "." == name or module.startswith(name)) if folder else module == name:
        if len(name) > best:
          best, height = len(name), len(_layers()) - 1 - i
  return height


def test_every_module_is_in_a_declared_layer():
  missing = sorted(m for m in _modules() if _layer(m) is None)
  assert not missing, f"in no layer of docs/design.md's table: {missing}"


def test_no_import_goes_up_a_layer():
  names = [name for name, _ in _layers()][::-1]
  up = [f"{_modules()[a].relative_to(REPO)}:{line} imports {b} ({names[_layer(a)]} -> "
        f"{names[_layer(b)]})" for a, targets in _graph().items() for b, line in targets
        if _layer(a) is not None and _layer(b) is not None and _layer(b) > _layer(a)]
  assert not up, "imports that go up a layer:\n" + "\n".join(up)


def _cycles(graph: dict[str, list[tuple[str, int]]]) -> list[list[str]]:
  """The strongly connected components of more than one module (Tarjan's algorithm)."""
  index, low, stack, on_stack, out = {}, {}, [], set(), []

  def visit(v: str) -> None:
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w, _ in graph.get(v, []):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        out.append(sorted(component))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return out


def test_no_import_cycles():
  cycles = _cycles(_graph())
  described = []
  for cycle in cycles:
    ties = [f"  {a} -> {b} (line {line})" for a in cycle for b, line in _graph()[a] if b in cycle]
    described.append(" <-> ".join(cycle) + "\n" + "\n".join(ties))
  assert not cycles, "import cycles:\n" + "\n".join(described)


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import(tmp_path):
  """The check above cannot pass by missing what it looks for: an import hidden in a function
  closes a circle that _cycles sees."""
  source = tmp_path / "a.py"
  source.write_text("import os\n\ndef later():\n  from training.run import loop\n")
  found = [target for target, _ in _imports_of(source, "training.data.sources")]
  assert found == ["training.run.loop"]
  assert _cycles({"x": [("y", 1)], "y": [("x", 4)], "z": [("x", 1)]}) == [["x", "y"]]


def _functions(tree: ast.AST):
  for node in ast.walk(tree):
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
      yield node


@pytest.mark.parametrize("root", ["training", "nets", "train.py"])
def test_functions_are_short_enough_to_read_at_once(root):
  paths = [REPO / root] if root.endswith(".py") else sorted((REPO / root).glob("**/*.py"))
  long = [f"{p.relative_to(REPO)}:{f.lineno} {f.name}() is {f.end_lineno - f.lineno + 1} lines"
          for p in paths for f in _functions(ast.parse(p.read_text()))
          if f.end_lineno - f.lineno + 1 > MAX_FUNCTION_LINES]
  assert not long, "\n".join(long)


def test_modules_of_the_library_stay_small():
  long = [f"{p.relative_to(REPO)}: {n} lines" for p in sorted(REPO.glob("training/**/*.py"))
          if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES]
  assert not long, "\n".join(long)


def test_each_package_says_what_it_holds_and_may_import():
  for init in sorted(REPO.glob("training/*/__init__.py")):
    doc = ast.get_docstring(ast.parse(init.read_text())) or ""
    assert "May import" in doc or "may import" in doc, f"{init.relative_to(REPO)}'s docstring"
