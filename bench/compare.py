"""Side by side, in one run, on whatever backend is present: this project's trainer, the same
network and hyperparameters in PyTorch (data already on the device, plain loop), the same again
as an expert runs PyTorch ("pytorch compiled": the whole train step under torch.compile; on GPU
also bf16 autocast, channels_last, fused Adam and CUDA graphs; see bench/trainers.py), and the
common JAX recipe (host numpy batches, one jitted step per batch).

    python bench/compare.py --config=configs/cnn.py [--epochs=5] [--repeats=1]
        [--trainers="pytorch,pytorch compiled"] [--seeds=0-4] [--set FIELD=VALUE ...]

Each trainer runs in a fresh subprocess, one after another, so wall time and peak memory are its
own. All evaluate the full test split after every epoch. Prints one table: compile (first epoch
minus the median of the others; n/a for a 1-epoch run, where it cannot be told apart), steady-state
epoch time (median; with 1 epoch, that epoch, compilation included), images/s, time from the start
of training to the first test evaluation >= 99.0%, time from process start to the first step,
whole-process wall time, peak resident memory, and images/s relative to plain and to compiled
PyTorch. With --repeats > 1, medians over the repeats.

`--seeds` runs every trainer once per seed (`config.seed`: PyTorch's torch.manual_seed too) and
adds a table of the final test accuracy per seed with its mean +- std (sample std), for accuracy
comparisons; `--set FIELD=VALUE` changes the config for every trainer (the PyTorch mirror follows
`model.weight_init` when it is set; see bench/trainers.py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAINERS = ("this project", "pytorch", "pytorch compiled", "jax recipe")
TARGET = 0.99


def _child(trainer: str, config_path: str, epochs: int, overrides: tuple[str, ...] = ()
           ) -> dict:
  cmd = [sys.executable, os.path.join(REPO, "bench", "trainers.py"), trainer, config_path,
         str(epochs), *overrides]
  env = {**os.environ, "BENCH_T0": repr(time.time()), "PYTHONUNBUFFERED": "1"}
  t0 = time.time()
  proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
  out = proc.stdout.read()
  _, status, usage = os.wait4(proc.pid, 0)
  wall = time.time() - t0
  if status:
    raise SystemExit(f"{trainer} failed (status {status}); run {' '.join(cmd)} to see why.")
  result = json.loads(out.strip().splitlines()[-1])
  result.update(wall_s=wall, peak_rss_mib=usage.ru_maxrss / 1024)  # Linux: ru_maxrss in KiB
  return result


def _row(r: dict) -> dict:
  epochs = r["epoch_s"]
  steady = statistics.median(epochs[1:]) if len(epochs) > 1 else epochs[0]
  compile_s = epochs[0] - steady if len(epochs) > 1 else None  # 1 epoch: not separable
  reach = next((t for t, acc in r["evals"] if acc >= TARGET), None)
  return {"compile_s": compile_s, "epoch_s": steady, "images_per_s": r["examples"] / steady,
          "to_99_s": reach, "first_step_s": r["first_step_s"], "wall_s": r["wall_s"],
          "peak_rss_mib": r["peak_rss_mib"], "final_acc": r["evals"][-1][1]}


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  ap.add_argument("--config", default="configs/cnn.py")
  ap.add_argument("--epochs", type=int, default=0, help="0: the config's num_epochs")
  ap.add_argument("--repeats", type=int, default=1)
  ap.add_argument("--trainers", default=",".join(TRAINERS))
  ap.add_argument("--seeds", default="",
                  help="run each trainer once per seed: '0-4' or '0,3,7' (default: the config's)")
  ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                  help="set a config field for every trainer (repeatable), e.g. "
                       "model.weight_init=torch")
  ap.add_argument("--json", help="also write the rows here")
  args = ap.parse_args()
  trainers = [t.strip() for t in args.trainers.split(",")]
  seeds = parse_seeds(args.seeds)
  rows: dict[str, list[dict]] = {t: [] for t in trainers}
  backend = None
  for seed in seeds:
    extra = tuple(args.set) + (() if seed is None else (f"seed={seed}",))
    for _ in range(args.repeats):
      for t in trainers:  # interleaved, so drift on a noisy machine hits all of them alike
        r = _child(t, args.config, args.epochs, extra)
        backend = backend or r["device"]
        rows[t].append({**_row(r), "seed": seed})
        print(f"  ran {t}: {rows[t][-1]}", file=sys.stderr)

  med = {t: {k: _median([x[k] for x in rs]) for k in rs[0] if k != "seed"}
         for t, rs in rows.items()}
  refs = [(name, med[name]) for name in ("pytorch", "pytorch compiled") if name in med]
  print(f"\n{args.config}, {backend}, medians of {args.repeats} run(s)\n")
  cols = [("compile_s", "compile s", ".1f"), ("epoch_s", "epoch s", ".2f"),
          ("images_per_s", "images/s", ",.0f"), ("to_99_s", "to 99% s", ".1f"),
          ("first_step_s", "1st step s", ".1f"), ("wall_s", "wall s", ".1f"),
          ("peak_rss_mib", "peak MiB", ",.0f"), ("final_acc", "test acc", ".2%")]
  ref_names = {"pytorch": "speed vs pytorch", "pytorch compiled": "vs compiled"}
  width = max(len("trainer"), *map(len, med))
  print(f"| {'trainer':<{width}} | " + " | ".join([c[1] for c in cols]
                                                + [ref_names[n] for n, _ in refs]) + " |")
  print("|" + "---|" * (len(cols) + 1 + len(refs)))
  for t, m in med.items():
    cells = [("n/a" if m[k] is None else format(m[k], f)) for k, _, f in cols]
    cells += [f"{m['images_per_s'] / ref['images_per_s']:.2f}x" for _, ref in refs]
    print(f"| {t:<{width}} | " + " | ".join(cells) + " |")
  if any(m["compile_s"] is None for m in med.values()):
    print("\n1-epoch run: compilation cannot be told apart from training, so \"compile s\" is "
          "n/a and\n\"epoch s\", images/s and the speed ratios include it; \"to 99% s\" and "
          "\"wall s\" compare\nwhole runs.")
  if seeds != [None]:
    print(accuracy_table(rows, seeds))
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"config": args.config, "device": backend, "runs": rows, "medians": med}, f,
                indent=2)


def parse_seeds(text: str) -> list[int | None]:
  """'0-4' -> [0, 1, 2, 3, 4]; '0,3,7' -> [0, 3, 7]; '' -> [None] (the config's seed)."""
  if not text.strip():
    return [None]
  seeds = []
  for part in text.split(","):
    first, _, last = part.strip().partition("-")
    seeds += list(range(int(first), int(last or first) + 1))
  return seeds


def accuracy_table(rows: dict[str, list[dict]], seeds: list[int]) -> str:
  """Final test accuracy per trainer and seed (the median over repeats), mean +- sample std."""
  lines = ["\nfinal test accuracy per seed\n",
           "| trainer | " + " | ".join(f"seed {s}" for s in seeds) + " | mean +- std |",
           "|" + "---|" * (len(seeds) + 2)]
  for t, rs in rows.items():
    accs = [_median([r["final_acc"] for r in rs if r["seed"] == s]) for s in seeds]
    std = statistics.stdev(accs) if len(accs) > 1 else 0.0
    lines.append(f"| {t} | " + " | ".join(f"{a:.2%}" for a in accs)
                 + f" | {statistics.mean(accs):.2%} +- {std:.2%} |")
  return "\n".join(lines)


def _median(values):
  values = [v for v in values if v is not None]
  return statistics.median(values) if values else None


if __name__ == "__main__":
  main()
