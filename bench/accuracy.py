"""Trains every classifier config (or the ones named) over several seeds and prints the accuracy
table: the members' mean +- std and their ensemble.

    python bench/accuracy.py                      # every classifier config, in turn
    python bench/accuracy.py --configs=cnn,mlp    # some of them
    python bench/accuracy.py --seeds=3            # seeds per config (default: SEEDS)
    python bench/accuracy.py --markdown=table.md  # also write the table as Markdown

Each config runs as `python train.py --config=configs/<name>.py --config.population=N` in a
fresh workdir, one after another: the N seeds train in one program (docs/populations.md). The
wall time is the whole process (start-up, data loading, compilation, training, evaluation), so
it compares with what a user sees. The figures come from the run's own `test_metrics.json` (the
full 10,000-example test split): the members' test accuracy, mean +- standard deviation, and the
ensemble's (the members' probabilities averaged).
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
  return {"config": name, "model": config["model"]["name"], "seeds": len(members),
          "accuracy": summary.get("mean", accuracy[0]), "std": summary.get("std", 0.0),
          "min": min(accuracy), "max": max(accuracy), "each": accuracy,
          "ensemble": (summary.get("ensemble") or summary["test"])["accuracy"],
          "macro_f1": summary["test"]["macro_f1"], "params": summary["num_params"],
          "epochs": config["num_epochs"], "wall_s": wall,
          "epoch_s": sorted(e["time/epoch_s"] for e in summary["epochs"])[len(summary["epochs"]) // 2]}


def markdown(rows: list[dict], machine: str) -> str:
  lines = [f"Measured on {machine}.", "",
           "| config | model | test accuracy, mean +- std (seeds) | ensemble | min-max | macro F1 "
           "| parameters | epochs | s/epoch (median) | wall clock, all seeds |",
           "|---|---|---|---|---|---|---|---|---|---|"]
  for r in sorted(rows, key=lambda r: -r["accuracy"]):
    lines.append(f"| `configs/{r['config']}.py` | {r['model']} | {r['accuracy'] * 100:.2f} +- "
                 f"{r['std'] * 100:.2f}% ({r['seeds']}) | {r['ensemble']:.2%} | "
                 f"{r['min']:.2%}-{r['max']:.2%} | {r['macro_f1']:.4f} | {r['params']:,} | "
                 f"{r['epochs']} | {r['epoch_s']:.1f} | {r['wall_s']:.0f} s |")
  return "\n".join(lines)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  ap.add_argument("--configs", default="", help="comma-separated names (default: every "
                  "classifier config)")
  ap.add_argument("--seeds", type=int, default=0, help="seeds per config, trained as one "
                  f"population (0: {SEEDS} and {DEFAULT_SEEDS} for the rest)")
  ap.add_argument("--markdown", help="also write the table to this file")
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
  machine = (f"{os.cpu_count()} CPU cores, {jax.devices()[0].device_kind} "
             f"({jax.default_backend()}), jax {jax.__version__}, {platform.python_version()}")
  rows = []
  with tempfile.TemporaryDirectory() as root:
    for name in names:
      own = _population(name)
      seeds = args.seeds or SEEDS.get(name) or (own if own > 1 else DEFAULT_SEEDS)
      rows.append(run(name, root, seeds, overrides))
      r = rows[-1]
      print(f"{name}: {r['accuracy'] * 100:.2f} +- {r['std'] * 100:.2f}% over {seeds} seeds, "
            f"ensemble {r['ensemble']:.2%}, in {r['wall_s']:.0f} s", file=sys.stderr, flush=True)
  table = markdown(rows, machine)
  print(table)
  if args.markdown:
    pathlib.Path(args.markdown).write_text(table + "\n")
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
  main()
