"""Each measured accuracy figure of a shipped config is stated once, in docs/results.md: the
README's results table, each config's docstring and every statement in docs/*.md that names a
shipped config beside a `M +- S%` figure equal its row there, and each row agrees with itself
(its seeds give its mean, spread and extremes). No training: the files are read and compared."""

from __future__ import annotations

import importlib
import re
import statistics

import pytest

from conftest import CONFIG_NAMES, REPO, base_config, load_config, results

README = REPO / "README.md"
# The other docs that may state a shipped config's accuracy (results.md is the source itself).
DOCS = [p for p in sorted((REPO / "docs").glob("*.md")) if p.name != "results.md"]
_MEAN_STD = r"(\d+\.\d\d) \+- (\d+\.\d\d)%"


def row_figures(cells: dict[str, str]) -> dict[str, str]:
  """The figures a table row states, by what they measure, read by column heading (a README row
  and a results.md row alike): numbers as written, commas and emphasis dropped."""
  out = {}
  for heading, cell in cells.items():
    cell = cell.replace("*", "").replace(",", "")
    if "mean +- std" in heading:
      found = re.fullmatch(_MEAN_STD + r"(?: \((\d+)\))?", cell)
      out.update(mean=found.group(1), std=found.group(2))
      if found.group(3):
        out["seeds"] = found.group(3)
    elif heading in ("seeds", "epochs", "ensemble", "parameters"):
      out[heading] = cell.rstrip("%")
    elif heading == "min-max":
      out["min"], out["max"] = re.fullmatch(r"(\d+\.\d\d)%-(\d+\.\d\d)%", cell).groups()
    elif heading.startswith("wall clock"):
      out["wall_s"] = re.match(r"(\d+) s", cell).group(1)
  return out


def text_figures(text: str) -> dict[str, str]:
  """The figures a sentence or paragraph states as bench/accuracy.py words them:
  `M +- S% ... over N seeds (min A%, max B%)`, `ensemble E%`, `in K epochs`, `W s for`."""
  text = " ".join(text.replace(",", "").split())
  patterns = {("mean", "std", "seeds"): _MEAN_STD + r"[\w ]* over (\d+) seeds",
              ("min", "max"): r"min (\d+\.\d\d)%,? max (\d+\.\d\d)%",
              ("ensemble",): r"ensemble (\d+\.\d\d)%", ("epochs",): r"\bin (\d+) epochs?\b",
              ("wall_s",): r"(\d+) s for (?:the|all)"}
  out = {}
  for names, pattern in patterns.items():
    found = re.search(pattern, text)
    if found:
      out.update(zip(names, found.groups()))
  return out


def disagreements(stated: dict[str, str], row: dict[str, str], where: str) -> list[str]:
  truth = row_figures(row)
  return [f"{where}: {k} {v}, docs/results.md {truth[k]}" for k, v in stated.items()
          if k in truth and float(v) != float(truth[k])]


def test_each_row_agrees_with_its_seeds():
  """The mean, spread (ddof=1), extremes and count of a row are those of its seeds (each stated
  to two decimals, so the mean and spread within rounding), and its command trains that many."""
  rows = results()
  assert {"cnn", "mlp", "best", "speedrun"} <= set(rows)
  for name, row in rows.items():
    each = [float(a.rstrip("%")) for a in row["each seed's test accuracy"].split(", ")]
    f = row_figures(row)
    assert int(f["seeds"]) == len(each) > 1, name
    assert f"--config=configs/{name}.py --config.population={len(each)}" in row["command"], name
    assert (float(f["min"]), float(f["max"])) == (min(each), max(each)), name
    assert abs(statistics.mean(each) - float(f["mean"])) <= 0.006, name
    assert abs(statistics.stdev(each) - float(f["std"])) <= 0.01, name


def test_the_readme_table_is_the_results_summary():
  """The README's results table has a row for each config of docs/results.md and no other, and
  every figure in it is the results file's."""
  rows, readme = results(), results(README.read_text())
  assert set(readme) == set(rows)
  wrong = [d for name, cells in readme.items()
           for d in disagreements(row_figures(cells), rows[name], f"README.md's {name} row")]
  assert not wrong


def _row_for(config_name: str) -> dict[str, str] | None:
  """The results row whose figures config `config_name` states: its own, or for a population
  config (configs/ensemble.py) the row of the config it extends."""
  rows = results()
  if config_name in rows:
    return rows[config_name]
  if load_config(config_name).get("population", 1) > 1:
    return rows.get(base_config(config_name))
  return None


@pytest.mark.parametrize("config_name", CONFIG_NAMES)
def test_a_config_docstring_states_its_row(config_name):
  row = _row_for(config_name)
  if row is None:
    pytest.skip(f"configs/{config_name}.py has no row in docs/results.md")
  stated = text_figures(importlib.import_module(f"configs.{config_name}").__doc__ or "")
  assert {"mean", "std", "seeds", "ensemble", "epochs", "wall_s"} <= set(stated), stated
  assert not disagreements(stated, row, f"configs/{config_name}.py")


def statements(text: str) -> list[str]:
  """A Markdown file's table rows, list items and paragraphs, each a statement whose figures
  belong to the config it names."""
  out = []
  for block in re.split(r"\n\s*\n", text):
    rows = [line for line in block.splitlines() if line.startswith("|")]
    out += rows or re.split(r"\n(?=\s*(?:[-*]|\d+\.) )", block)
  return out


def doc_disagreements(text: str, where: str) -> list[str]:
  """The figures of `text` (a Markdown file) that a statement naming one shipped config gives
  otherwise than its row: a table row's `M +- S%`, a paragraph's figures as bench words them."""
  rows = results()
  out = []
  for statement in statements(text):
    named = set(re.findall(r"configs/(\w+)\.py", statement)) & set(rows)
    if len(named) != 1 or not re.search(_MEAN_STD, statement):
      continue
    name = named.pop()
    if statement.startswith("|"):
      mean, std = re.search(_MEAN_STD, statement).groups()
      stated = {"mean": mean, "std": std}
    else:
      stated = text_figures(statement)
    out += disagreements(stated, rows[name], f"{where}, on configs/{name}.py")
  return out


@pytest.mark.parametrize("path", [README, *DOCS], ids=lambda p: p.name)
def test_the_docs_state_a_shipped_config_s_accuracy_as_the_results_file_does(path):
  assert not doc_disagreements(path.read_text(), path.name)


def test_a_figure_that_drifts_is_caught():
  """A docstring, a README cell and a doc sentence each one digit off the results file."""
  cnn = results()["cnn"]
  doc = importlib.import_module("configs.cnn").__doc__.replace("99.31%", "99.32%")
  assert disagreements(text_figures(doc), cnn, "cnn") == [
      "cnn: ensemble 99.32, docs/results.md 99.31"]
  readme = README.read_text().replace("99.23 +- 0.05% (5)", "99.23 +- 0.06% (5)")
  assert [d for d in disagreements(row_figures(results(readme)["cnn"]), cnn, "README")] == [
      "README: std 0.06, docs/results.md 0.05"]
  text = "Over seeds, `configs/cnn.py` reaches 99.24 +- 0.05% test accuracy over 5 seeds.\n"
  assert doc_disagreements(text, "x.md") == [
      "x.md, on configs/cnn.py: mean 99.24, docs/results.md 99.23"]
  assert doc_disagreements(text.replace("99.24", "99.23"), "x.md") == []
