"""Trains every classifier config (or the ones named) over several seeds and prints the rows of
docs/results.md, the one source of the project's accuracy figures: the members' mean +- std,
their extremes and their ensemble.

    python bench/accuracy.py                                # every classifier config, in turn
    python bench/accuracy.py --configs=cnn,mlp              # some of them
    python bench/accuracy.py --seeds=3                      # seeds per config (default: SEEDS)
    python bench/accuracy.py --results=docs/results.md      # write the rows into that table

Each config runs as `python train.py --config=configs/<name>.py --config.population=N` in a
fresh workdir, one after another: the N seeds train in one program (docs/populations.md). The
wall time is the whole process (start-up, data loading, compilation, training, evaluation), so
it compares with what a user sees. The figures come from the run's own `test_metrics.json` (the
full 10,000-example test split): the members' test accuracy, mean +- standard deviation, and the
ensemble's (the members' probabilities averaged). For each config it also prints the sentence
for its docstring and the row for the README's summary; tests/test_results.py holds both, and
every other statement of a shipped config's accuracy, equal to docs/results.md.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script: the project's packages

import configs  # noqa: E402

# Seeds per config: 5 for the configs the README leads with, 3 for the others.
SEEDS = {"best": 5, "cnn": 5, "mlp": 5, "speedrun": 5, "large": 5}
DEFAULT_SEEDS = 3


def _population(name: str) -> int:
  import importlib
  return importlib.import_module(f"configs.{name}").get_config().get("population", 1)


def run(name: str, root: str, seeds: int, extra: list[str]) -> dict:
  workdir = os.path.join(root, name)
  cmd = [sys.executable, "train.py", f"--config=configs/{name}.py", f"--workdir={workdir}",
         "--config.progress_bar=False", f"--config.population={seeds}", *extra]
  t0 = time.time()
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
  wall = time.time() - t0
  if proc.returncode:
    raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
  summary = json.loads(pathlib.Path(workdir, "test_metrics.json").read_text())
  config = json.loads(pathlib.Path(workdir, "config.json").read_text())
  members = summary.get("members") or [summary["test"]]
  accuracy = [m["accuracy"] for m in members]
  # What a reader runs for the same figures: the command without this bench's workdir and quiet.
  command = " ".join(["python", *cmd[1:3], *cmd[5:]])
  epochs_s = sorted(e["time/epoch_s"] for e in summary["epochs"])
  return {"config": name, "command": command, "model": config["model"]["name"],
          "seeds": len(members), "accuracy": summary.get("mean", accuracy[0]),
          "std": summary.get("std", 0.0), "min": min(accuracy), "max": max(accuracy),
          "each": accuracy,
          "ensemble": (summary.get("ensemble") or summary["test"])["accuracy"],
          "macro_f1": summary["test"]["macro_f1"], "params": summary["num_params"],
          "epochs": config["num_epochs"], "wall_s": wall,
          "epoch_s": epochs_s[len(epochs_s) // 2]}


# docs/results.md's columns, in order; tests/conftest.py's `results` reads them back by heading.
COLUMNS = ("config", "command", "model", "seeds", "each seed's test accuracy",
           "test accuracy, mean +- std", "min-max", "ensemble", "macro F1 (mean)", "parameters",
           "epochs", "s/epoch, all seeds (median)", "wall clock, all seeds", "machine",
           "versions", "date, commit")


def results_row(r: dict, machine: dict) -> str:
  """Row `r` (from `run`) as a line of docs/results.md's table, on `machine` (from `_machine`)."""
  cells = [f"`configs/{r['config']}.py`", f"`{r['command']}`", r["model"], str(r["seeds"]),
           ", ".join(f"{a:.2%}" for a in r["each"]),
           f"{r['accuracy'] * 100:.2f} +- {r['std'] * 100:.2f}%", f"{r['min']:.2%}-{r['max']:.2%}",
           f"{r['ensemble']:.2%}", f"{r['macro_f1']:.4f}", f"{r['params']:,}", str(r["epochs"]),
           f"{r['epoch_s']:.1f}", f"{r['wall_s']:,.0f} s", machine["machine"],
           machine["versions"], machine["date"]]
  return "| " + " | ".join(cells) + " |"


def markdown(rows: list[dict], machine: dict) -> str:
  """The table of docs/results.md with these rows, best first."""
  lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
  best_first = sorted(rows, key=lambda r: -r["accuracy"])
  return "\n".join(lines + [results_row(r, machine) for r in best_first])


def docstring_line(r: dict, machine: dict) -> str:
  """The sentence of a config's docstring that states its row."""
  return (f"Reaches {r['accuracy'] * 100:.2f} +- {r['std'] * 100:.2f}% test accuracy over "
          f"{r['seeds']} seeds (min {r['min']:.2%}, max {r['max']:.2%}), their ensemble "
          f"{r['ensemble']:.2%}, in {r['epochs']} epoch{'s' * (r['epochs'] != 1)}: "
          f"{r['wall_s']:,.0f} s for the {r['seeds']} seeds in one process on a "
          f"{machine['machine']} (docs/results.md).")


def readme_row(r: dict) -> str:
  """The row of the README's summary table (its model column is for a person to describe)."""
  return (f"| `configs/{r['config']}.py` | {r['model']} | {r['accuracy'] * 100:.2f} +- "
          f"{r['std'] * 100:.2f}% ({r['seeds']}) | {r['ensemble']:.2%} | {r['epochs']} | "
          f"{r['wall_s']:,.0f} s |")


def write_results(path: pathlib.Path, rows: list[dict], machine: dict) -> None:
  """Puts `rows` into the table of the results file at `path`, each replacing its config's old
  row, the others kept; the table stays sorted by mean accuracy, best first."""
  lines = path.read_text().splitlines()
  start = next(i for i, line in enumerate(lines) if line.startswith("| config |"))
  end = next((i for i in range(start + 2, len(lines)) if not lines[i].startswith("|")), len(lines))
  new = {f"`configs/{r['config']}.py`": (r["accuracy"], results_row(r, machine)) for r in rows}
  kept = {}
  for line in lines[start + 2:end]:
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    mean = float(cells[COLUMNS.index("test accuracy, mean +- std")].split()[0]) / 100
    kept[cells[0]] = (mean, line)
  table = sorted({**kept, **new}.values(), key=lambda row: -row[0])
  lines[start + 2:end] = [line for _, line in table]
  path.write_text("\n".join(lines) + "\n")


def _machine() -> dict:
  """Where and with what the rows were measured, for their last three columns."""
  import datetime
  import flax
  import jax
  device = jax.devices()[0]
  where = (f"{os.cpu_count()}-core CPU" if jax.default_backend() == "cpu"
           else f"{jax.device_count()} x {device.device_kind}")
  git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                       text=True)
  commit = git.stdout.strip() if git.returncode == 0 else "no git"
  return {"machine": where, "date": f"{datetime.date.today().isoformat()}, {commit}",
          "versions": f"jax {jax.__version__}, flax {flax.__version__}, "
                      f"Python {platform.python_version()}"}


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  ap.add_argument("--configs", default="", help="comma-separated names (default: every "
                  "classifier config)")
  ap.add_argument("--seeds", type=int, default=0, help="seeds per config, trained as one "
                  f"population (0: {SEEDS} and {DEFAULT_SEEDS} for the rest)")
  ap.add_argument("--results", help="write the rows into this results file's table "
                  "(docs/results.md), each replacing its config's old row")
  ap.add_argument("--json", help="also write the rows to this file")
  # Anything else (e.g. --config.dtype=bfloat16) is passed to every run.
  args, overrides = ap.parse_known_args()
  known = configs.names()
  # A config that is already a population (ensemble.py: best.py's 5 seeds) is the row of the
  # config it extends, so the full table leaves it out; named, it keeps its own population.
  import jax  # to name the machine in the table, and leave large.py out on a CPU
  # A config whose accuracy waits for a device (large.py: hours an epoch here) is left out of
  # the full table on a CPU; named, it runs anywhere.
  classifiers = [n for n in known if configs.task(n) == "classify" and _population(n) == 1
                 and not (configs.waits_for_device(n) and jax.default_backend() == "cpu")]
  names = args.configs.split(",") if args.configs else classifiers
  unknown = sorted(set(names) - set(known))
  if unknown:
    raise SystemExit(f"Unknown config(s) {unknown}; known: {', '.join(known)}.")
  machine = _machine()
  rows = []
  with tempfile.TemporaryDirectory() as root:
    for name in names:
      own = _population(name)
      seeds = args.seeds or SEEDS.get(name) or (own if own > 1 else DEFAULT_SEEDS)
      rows.append(run(name, root, seeds, overrides))
      r = rows[-1]
      print(f"{name}: for configs/{name}.py's docstring:\n  {docstring_line(r, machine)}\n"
            f"  for the README's table:\n  {readme_row(r)}", file=sys.stderr, flush=True)
  print(markdown(rows, machine))
  if args.results:
    write_results(pathlib.Path(args.results), rows, machine)
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
  main()
