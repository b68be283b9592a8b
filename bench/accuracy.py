"""Trains every config (or the ones named) with its defaults and prints the accuracy table.

    python bench/accuracy.py                      # all configs/*.py with get_config, in turn
    python bench/accuracy.py --configs=cnn,mlp    # some of them
    python bench/accuracy.py --markdown=table.md  # also write the table as Markdown

Each config runs as `python train.py --config=configs/<name>.py` in a fresh workdir, one after
another; the wall time is the whole process (start-up, data loading, compilation, training,
evaluation), so it compares with what a user sees. The figures come from the run's own
`test_metrics.json` (the full 10,000-example test split).
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


def run(name: str, root: str, extra: list[str]) -> dict:
  workdir = os.path.join(root, name)
  cmd = [sys.executable, "train.py", f"--config=configs/{name}.py", f"--workdir={workdir}",
         "--config.progress_bar=False", *extra]
  t0 = time.time()
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
  wall = time.time() - t0
  if proc.returncode:
    raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
  summary = json.loads(pathlib.Path(workdir, "test_metrics.json").read_text())
  config = json.loads(pathlib.Path(workdir, "config.json").read_text())
  return {"config": name, "model": config["model"]["name"], "accuracy": summary["test"]["accuracy"],
          "macro_f1": summary["test"]["macro_f1"], "params": summary["num_params"],
          "epochs": config["num_epochs"], "wall_s": wall,
          "epoch_s": sorted(e["time/epoch_s"] for e in summary["epochs"])[len(summary["epochs"]) // 2]}


def markdown(rows: list[dict], machine: str) -> str:
  lines = [f"Measured on {machine}.", "",
           "| config | model | test accuracy | macro F1 | parameters | epochs | s/epoch (median) "
           "| wall clock |", "|---|---|---|---|---|---|---|---|"]
  for r in sorted(rows, key=lambda r: -r["accuracy"]):
    lines.append(f"| `configs/{r['config']}.py` | {r['model']} | {r['accuracy']:.2%} | "
                 f"{r['macro_f1']:.4f} | {r['params']:,} | {r['epochs']} | {r['epoch_s']:.1f} | "
                 f"{r['wall_s']:.0f} s |")
  return "\n".join(lines)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  ap.add_argument("--configs", default="", help="comma-separated names (default: all)")
  ap.add_argument("--markdown", help="also write the table to this file")
  ap.add_argument("--json", help="also write the rows to this file")
  # Anything else (e.g. --config.dtype=bfloat16) is passed to every run.
  args, overrides = ap.parse_known_args()
  known = configs.names()
  names = args.configs.split(",") if args.configs else known
  unknown = sorted(set(names) - set(known))
  if unknown:
    raise SystemExit(f"Unknown config(s) {unknown}; known: {', '.join(known)}.")
  import jax  # only to name the machine in the table
  machine = (f"{os.cpu_count()} CPU cores, {jax.devices()[0].device_kind} "
             f"({jax.default_backend()}), jax {jax.__version__}, {platform.python_version()}")
  rows = []
  with tempfile.TemporaryDirectory() as root:
    for name in names:
      rows.append(run(name, root, overrides))
      r = rows[-1]
      print(f"{name}: {r['accuracy']:.2%} in {r['wall_s']:.0f} s", file=sys.stderr, flush=True)
  table = markdown(rows, machine)
  print(table)
  if args.markdown:
    pathlib.Path(args.markdown).write_text(table + "\n")
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
  main()
