"""The house in rooms on floors: every import of the code (those inside functions, and those made
by name through importlib.import_module, included) goes down the floors that docs/design.md
declares, none goes up or sideways to a sibling room, none closes a circle; each package's
docstring says what it may import, in agreement with the table; modules and functions stay short
enough to read at once.

The floors are the table under "## Layers" in docs/design.md: the one place where they are
declared, next to their diagram. A room may import its own modules and any room on a lower floor;
rooms on one floor are siblings that know nothing of each other.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import pathlib
import re

import pytest

from conftest import REPO

MAX_FUNCTION_LINES = 60  # a function a reader takes in at once (the style guide's ~60)
MAX_MODULE_LINES = 300  # in training/: the house issue's bound
# The callables that import a module named by a string.
IMPORTERS = {"import_module", "__import__"}


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


def _resolve(target: str, modules: dict[str, pathlib.Path]) -> str:
  """The module of this repository that `target` names (`a.b.c` of a name inside `a.b` is a.b)."""
  while target and target not in modules:
    target = target.rpartition(".")[0]
  return target


def _named_import(node: ast.Call) -> str | None:
  """The module an `importlib.import_module(...)` call names: its string, or an f-string's
  constant start (f"training.tasks.{name}" names the package training.tasks)."""
  func = node.func
  called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
  if called not in IMPORTERS or not node.args:
    return None
  arg = node.args[0]
  if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
    return arg.value
  if isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
    return arg.values[0].value.rstrip(".")
  return None


def _imports_of(path: pathlib.Path, name: str, source: str | None = None
                ) -> list[tuple[str, int]]:
  """(module of this repository, line) for every import in `path` (or in `source`, read as
  `path`), at any depth. `from X import Y` names the module X.Y when Y is one, else X."""
  modules, package = _modules(), name if path.name == "__init__.py" else name.rpartition(".")[0]
  found = []
  tree = ast.parse(path.read_text() if source is None else source, str(path))
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      targets = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:  # a relative import
        base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                        + ([base] if base else []))
      targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                 for a in node.names]
    elif isinstance(node, ast.Call) and (named := _named_import(node)):
      # f"training.tasks.{name}" from inside training.tasks: a plug-in of its own package.
      targets = [] if name.startswith(named + ".") else [named]
    else:
      continue
    for target in targets:
      target = _resolve(target, modules)
      if target and target != name:
        found.append((target, node.lineno))
  return found


@functools.cache
def _graph() -> dict[str, list[tuple[str, int]]]:
  return {name: _imports_of(path, name) for name, path in _modules().items()}


@dataclasses.dataclass(frozen=True)
class Room:
  name: str
  floor: int
  modules: tuple[str, ...]  # a folder ("training.modes.train.") stands for every module in it


@functools.cache
def _rooms() -> tuple[Room, ...]:
  """The rooms of docs/design.md's table under '## Layers' (floor | room | modules | ...)."""
  text = (REPO / "docs" / "design.md").read_text()
  section = text.split("\n## Layers\n", 1)[1].split("\n## ", 1)[0]
  rooms = []
  for row in re.findall(r"^\|(.+)\|\s*$", section, re.M):
    cells = [c.strip() for c in row.split("|")]
    if len(cells) < 3 or not cells[0].isdigit():
      continue
    paths = re.findall(r"`([^`]+)`", cells[2])
    rooms.append(Room(cells[1], int(cells[0]), tuple(
        p.replace("/", ".") if p.endswith("/") else
        p.removesuffix(".py").removesuffix("/__init__").replace("/", ".") for p in paths)))
  assert rooms, "docs/design.md has no table of floors and rooms under '## Layers'"
  return tuple(rooms)


def _room(module: str) -> Room | None:
  """The room of `module`, by the longest declared prefix."""
  best, found = -1, None
  for room in _rooms():
    for name in room.modules:
      folder = name.endswith(".")
      if (module + "." == name or module.startswith(name)) if folder else module == name:
        if len(name) > best:
          best, found = len(name), room
  return found


def _may_import(a: Room, b: Room) -> bool:
  return a == b or b.floor < a.floor


def _violations(graph: dict[str, list[tuple[str, int]]]) -> list[str]:
  """Every import that goes up a floor or sideways to a sibling room."""
  out = []
  for a, targets in sorted(graph.items()):
    for b, line in targets:
      ra, rb = _room(a), _room(b)
      if ra and rb and not _may_import(ra, rb):
        way = "a sibling on its floor" if ra.floor == rb.floor else "up a floor"
        where = _modules()[a].relative_to(REPO) if a in _modules() else a
        out.append(f"{where}:{line} imports {b} ({ra.name} -> {rb.name}: {way})")
  return out


def test_every_module_is_in_a_declared_room():
  missing = sorted(m for m in _modules() if _room(m) is None)
  assert not missing, f"in no room of docs/design.md's table: {missing}"


def test_no_import_goes_up_a_floor_or_to_a_sibling():
  bad = _violations(_graph())
  assert not bad, "imports the table forbids:\n" + "\n".join(bad)


def test_the_check_catches_a_sibling_import():
  """store and model share a floor: the store importing the model is refused."""
  source = "from training.compute import build\n"
  graph = {"training.store.checkpoint": _imports_of(
      REPO / "training/store/checkpoint.py", "training.store.checkpoint", source)}
  assert _violations(graph) == [
      "training/store/checkpoint.py:1 imports training.compute.build (store -> compute: a sibling "
      "on its floor)"]


@pytest.mark.parametrize("module, source, target", [
    ("training.modes.train.loop", "from training.modes import report\n", "training.modes.report"),
    ("training.modes.evaluate", "from training.modes.train import loop\n",
     "training.modes.train.loop")])
def test_the_check_catches_a_mode_that_imports_another(module, source, target):
  """The training mode and the other modes share a floor: neither may import the other, so a
  run's report follows its training through the command line, not through the loop."""
  path = REPO / (module.replace(".", "/") + ".py")
  bad = _violations({module: _imports_of(path, module, source)})
  assert len(bad) == 1 and f":1 imports {target} (" in bad[0] and "a sibling on its floor" in bad[0], bad


@pytest.mark.parametrize("call", ['importlib.import_module("training.modes.train.loop")',
                                  'import_module(f"training.modes.{name}")'])
def test_the_check_catches_an_import_by_name_of_a_higher_floor(call):
  source = f"import importlib\nfrom importlib import import_module\n\ndef later(name):\n  {call}\n"
  graph = {"training.data.sources": _imports_of(
      REPO / "training/data/sources.py", "training.data.sources", source)}
  bad = _violations(graph)
  assert len(bad) == 1 and ":5 imports training." in bad[0] and "up a floor" in bad[0], bad


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
  source.write_text("import os\n\ndef later():\n  from training.modes.train import loop\n")
  found = [target for target, _ in _imports_of(source, "training.data.sources")]
  assert found == ["training.modes.train.loop"]
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


def _docstring_disagreements(package: str, doc: str) -> list[str]:
  """How a package's docstring disagrees with the table and with the package's own imports: its
  "May import" sentence names rooms (training.x, nets, configs, "the base modules", or "every
  layer below"); each must be one the table lets it import, and it must import no other."""
  own = _room(package)
  found = re.search(r"May import:?(.*?)(?:\.\s|\.$|$)", doc, re.S | re.I)
  if not found:
    return [f"{package}: no 'May import' sentence in its docstring"]
  sentence, below = " ".join(found.group(1).split()), [r for r in _rooms() if r.floor < own.floor]
  named = {_room(n) for n in re.findall(r"\b(training\.\w+|nets|configs)\b", sentence)}
  named |= {r for r in _rooms() if r.name == "base" and "base modules" in sentence}
  named |= set(below) if re.search(r"every (layer|floor) below", sentence) else set()
  out = [f"{package}: its docstring allows {r.name}, which the table forbids (floor {r.floor} "
         f"from {own.name} on floor {own.floor})"
         for r in sorted(named - {None}, key=lambda r: r.name) if not _may_import(own, r)]
  used = {_room(b) for a, targets in _graph().items() if _room(a) == own and (
          a == package or a.startswith(package + ".")) for b, _ in targets} - {own, None}
  out += [f"{package}: imports {r.name}, which its docstring does not allow"
          for r in sorted(used - named, key=lambda r: r.name)]
  return out


def _packages() -> list[str]:
  """The packages that are rooms: training/'s, and one inside another room (modes/train/)."""
  folders = {name for room in _rooms() for name in room.modules if name.endswith(".")}
  return sorted(name for p in REPO.glob("training/**/__init__.py")
                if (name := _module_name(p)) + "." in folders)


@pytest.mark.parametrize("package", _packages())
def test_each_package_docstring_may_import_what_the_table_allows(package):
  init = REPO / package.replace(".", "/") / "__init__.py"
  doc = ast.get_docstring(ast.parse(init.read_text())) or ""
  assert not _docstring_disagreements(package, doc)


@pytest.mark.parametrize("doc, wrong", [
    ("May import: training.compute and the base modules.", "allows compute, which the table forbids"),
    ("May import: training.modes.", "allows modes, which the table forbids"),
    ("May import: nets.", "imports base, which its docstring does not allow"),
    ("It keeps files.", "no 'May import' sentence")])
def test_a_docstring_that_disagrees_with_the_table_is_caught(doc, wrong):
  """The store's docstring rewritten: one that allows a sibling, one that allows a higher floor,
  one that leaves out what the store imports, one with no sentence at all."""
  found = _docstring_disagreements("training.store", doc)
  assert any(wrong in line for line in found), found
