"""A/B of this checkout against another revision: the same `python train.py` run from each tree,
alternating, in one session on one machine.

    python bench/ab.py --base=HEAD~1 [--config=configs/cnn.py] [--epochs=2] [--repeats=5] \
        [--set=steps_per_call=4 --set=...]

Between sessions this machine's speed moves by 10-20%, so comparisons across benchmark runs say
little; rounds that alternate the two trees put the same drift on both. Each round runs both
trees once (the order flips every round) with the data and compilation caches warm; the table
gives medians over rounds of the steady epoch (the median of the epochs after the first), the
first epoch (compilation included) and the whole process, and the per-round ratios' median.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def export_tree(rev: str, into: str) -> str:
  """The files of `rev` (committed state) in a fresh folder."""
  archive = subprocess.run(["git", "-C", REPO, "archive", "--format=tar", rev],
                           check=True, capture_output=True).stdout
  subprocess.run(["tar", "-x", "-C", into], input=archive, check=True)
  return into


def run_once(tree: str, config: str, epochs: int, sets: list[str], workdir: str) -> dict:
  """One `train.py` process in `tree`; its epoch times from the run's metrics.jsonl."""
  cmd = [sys.executable, "train.py", f"--config={config}", f"--workdir={workdir}",
         f"--config.num_epochs={epochs}", "--config.progress_bar=False",
         "--config.checkpoint.enabled=False", *[f"--config.{s}" for s in sets]]
  t0 = time.time()
  proc = subprocess.run(cmd, cwd=tree, capture_output=True, text=True)
  wall = time.time() - t0
  if proc.returncode:
    raise SystemExit(f"{' '.join(cmd)} failed in {tree}:\n{proc.stderr[-2000:]}")
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    epochs_s = [r["time/train_epoch_s"] for r in map(json.loads, f) if "epoch" in r]
  with open(os.path.join(workdir, "test_metrics.json")) as f:
    accuracy = json.load(f)["test"]["accuracy"]
  steady = statistics.median(epochs_s[1:]) if len(epochs_s) > 1 else epochs_s[0]
  return {"epoch_s": steady, "first_epoch_s": epochs_s[0], "wall_s": wall, "acc": accuracy}


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  ap.add_argument("--base", required=True, help="the revision to compare against (A)")
  ap.add_argument("--config", default="configs/cnn.py")
  ap.add_argument("--epochs", type=int, default=2)
  ap.add_argument("--repeats", type=int, default=5)
  ap.add_argument("--set", action="append", default=[], help="a config override, FIELD=VALUE")
  args = ap.parse_args()
  rows: dict[str, list[dict]] = {"A": [], "B": []}
  with tempfile.TemporaryDirectory() as tmp:
    os.makedirs(base := os.path.join(tmp, "a"))
    trees = {"A": export_tree(args.base, base), "B": REPO}
    run_once(trees["B"], args.config, 1, args.set, os.path.join(tmp, "warm"))  # fills caches
    for r in range(args.repeats):
      for name in ("AB" if r % 2 == 0 else "BA"):
        result = run_once(trees[name], args.config, args.epochs, args.set,
                          os.path.join(tmp, f"{name}{r}"))
        rows[name].append(result)
        print(f"  round {r} {name}: {result}", file=sys.stderr)
  rev = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", args.base],
                       capture_output=True, text=True).stdout.strip()
  print(f"\n{args.config} {' '.join(args.set)}, {args.epochs} epochs, medians of "
        f"{args.repeats} rounds; A = {args.base} ({rev}), B = this checkout\n")
  print("| | steady epoch s | first epoch s | process s | test acc |")
  print("|---|---|---|---|---|")
  for name in rows:
    med = {k: statistics.median(x[k] for x in rows[name]) for k in rows[name][0]}
    print(f"| {name} | {med['epoch_s']:.3f} | {med['first_epoch_s']:.2f} | {med['wall_s']:.1f} "
          f"| {med['acc']:.2%} |")
  ratios = [a["epoch_s"] / b["epoch_s"] for a, b in zip(rows["A"], rows["B"])]
  print(f"\nB's speed / A's (steady epochs): median of rounds {statistics.median(ratios):.3f}x, "
        f"range {min(ratios):.3f}-{max(ratios):.3f}x")


if __name__ == "__main__":
  main()
