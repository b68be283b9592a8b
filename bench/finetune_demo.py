"""Fine-tuning demonstration: pretrain on digits 0-4, then learn digits 5-9 from 10, 100 and 1,000
examples per class, starting from scratch, from the pretrained run with a frozen backbone (only
the classifier head trains), or from it with every layer trained (at the full learning rate, or
the loaded layers at a tenth of it); prints a Markdown table of the test accuracy on 5-9 (mean
+- std, min and max over seeds) and the equivalent train.py commands.

    python bench/finetune_demo.py                                  # cnn, mnist, seeds 0-4
    python bench/finetune_demo.py --models=cnn,resnet --markdown=table.md
    python examples/mnist_to_folder.py --out=/tmp/mnist_folder     # the same on PNG files
    python bench/finetune_demo.py --dataset=folder:/tmp/mnist_folder

Everything runs in this process through `train_and_evaluate`. Each model is pretrained once
(seed 0, into WORKDIR/<dataset>/pre_<model>: a re-run reuses it); every fine-tuning or scratch
run uses the model's config with the settings below, and `seed` and `split_seed` set to the seed,
so each seed also draws other training examples. The fine-tuning runs keep no validation split
(the examples are few) and write nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import os
import pathlib
import platform
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script: the project's packages

PRETRAIN = {"classes": "0,1,2,3,4", "num_epochs": 2}
TARGET = {"classes": "5,6,7,8,9", "validation_fraction": 0.0}
# Per examples-per-class: a batch and epoch count giving 100-200 steps, so the table runs in
# minutes on two CPU cores.
SIZES = {10: {"batch_size": 10, "num_epochs": 20}, 100: {"batch_size": 50, "num_epochs": 20},
         1000: {"batch_size": 100, "num_epochs": 4}}
# Each config's classifier head: a frozen backbone is every other parameter.
HEADS = {"cnn": "Dense_1", "resnet": "Dense_0", "mobilenet": "Dense_0", "mlp": "Dense_2"}
# The last: every layer trains, the loaded ones at a tenth of the learning rate (the new head at
# the full rate), so few examples move the pretrained features less.
SETTINGS = ("from scratch", "frozen backbone", "full fine-tuning", "loaded layers at 0.1x lr")


def overrides(model: str, setting: str, per_class: int, seed: int, pretrained: str) -> dict:
  """The config fields of one run, beyond the model's config."""
  fields = {**TARGET, "max_per_class": per_class, **SIZES[per_class], "seed": seed,
            "split_seed": seed}
  if setting != "from scratch":
    fields["init_from"] = pretrained
  if setting == "frozen backbone":
    fields["freeze"] = f"^(?!{HEADS[model]}/)"  # every parameter but the head's
  if setting == "loaded layers at 0.1x lr":
    fields["init_lr_multiplier"] = 0.1
  return fields


def make_config(model: str, dataset: str, fields: dict):
  from training import settings  # after the argument parsing, as the rest of the project
  config = importlib.import_module(f"configs.{model}").get_config()
  settings.set_fields(config, {"dataset": dataset, "progress_bar": False, "report": False,
                               **fields})
  return config


def train(config, workdir: str | None) -> float:
  """The run's test accuracy; its log lines are kept out of the table's output."""
  from training import train_and_evaluate
  with contextlib.redirect_stdout(io.StringIO()):
    _, summary = train_and_evaluate(config, workdir)
  return summary["test"]["accuracy"]


def command(model: str, dataset: str, fields: dict, workdir: str) -> str:
  args = [f"--config=configs/{model}.py", f"--workdir={workdir}"]
  if dataset != "mnist":
    args.append(f"--config.dataset={dataset}")
  args += [f"--config.{k}={v!r}" if isinstance(v, str) and ("(" in v or "^" in v)
           else f"--config.{k}={v}" for k, v in fields.items()]
  return "python train.py " + " ".join(args)


def run_model(model: str, dataset: str, root: str, seeds: list[int], sizes: list[int]
              ) -> tuple[dict, list[str], float]:
  """({(setting, per_class): [accuracy per seed]}, the commands, the pretrained accuracy)."""
  pretrained = os.path.join(root, f"pre_{model}")
  t, reused = time.time(), os.path.isdir(pretrained)
  pre_acc = train(make_config(model, dataset, PRETRAIN), pretrained)
  print(f"{model}: {'reused the run pretrained' if reused else 'pretrained'} on 0-4 in "
        f"{pretrained} ({time.time() - t:.0f} s), test accuracy on 0-4 {pre_acc:.2%}", flush=True)
  commands = [command(model, dataset, PRETRAIN, f"runs/ft/pre_{model}")]
  results = {}
  for per_class in sizes:
    for setting in SETTINGS:
      accs = []
      for seed in seeds:
        fields = overrides(model, setting, per_class, seed, pretrained)
        accs.append(train(make_config(model, dataset, fields), None))
        if seed == seeds[0]:
          shown = {**fields, **({"init_from": f"runs/ft/pre_{model}"} if "init_from" in fields
                                else {})}
          commands.append(command(model, dataset, shown, f"runs/ft/{model}_{per_class}_"
                                  f"{setting.split()[0]}_seed{seed}"))
      results[setting, per_class] = accs
      print(f"  {per_class:>4}/class  {setting:<17} {np.mean(accs):.2%} "
            f"({', '.join(f'{a:.2%}' for a in accs)})", flush=True)
  return results, commands, pre_acc


def table(model: str, results: dict, sizes: list[int], seeds: list[int]) -> str:
  lines = [f"| {model}: examples per class | " + " | ".join(SETTINGS) + " |",
           "|---|" + "---|" * len(SETTINGS)]
  for per_class in sizes:
    cells = []
    for setting in SETTINGS:
      a = np.array(results[setting, per_class]) * 100
      cells.append(f"{a.mean():.1f} +- {a.std(ddof=1):.1f}% ({a.min():.1f}-{a.max():.1f})"
                   if len(a) > 1 else f"{a.mean():.1f}%")
    lines.append(f"| {per_class} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + (f"\n\nTest accuracy on digits 5-9: mean +- std (sample) and "
                             f"(min-max) over seeds {seeds}.")


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  ap.add_argument("--models", default="cnn", help="comma-separated configs: " + ", ".join(HEADS))
  ap.add_argument("--dataset", default="mnist", help="mnist, or folder:/path of MNIST PNGs")
  ap.add_argument("--seeds", default="0,1,2,3,4")
  ap.add_argument("--sizes", default="10,100,1000", help="examples per class")
  ap.add_argument("--workdir", default="runs/finetune_demo", help="where pretrained runs go")
  ap.add_argument("--markdown", help="also write the tables and commands to this file")
  args = ap.parse_args()
  from training.compute import runtime
  runtime.setup()  # the persistent compilation cache, as train.py uses it
  seeds = [int(s) for s in args.seeds.split(",")]
  sizes = [int(s) for s in args.sizes.split(",")]
  root = os.path.join(args.workdir, args.dataset.replace("folder:", "folder_").replace("/", "_"))
  t0, out = time.time(), []
  for model in args.models.split(","):
    results, commands, pre_acc = run_model(model, args.dataset, root, seeds, sizes)
    out += [table(model, results, sizes, seeds) + f" Pretrained on 0-4: {pre_acc:.2%} on 0-4.",
            "", "```bash", *commands, "```", ""]
  import jax
  import flax
  out.append(f"{args.dataset}, {time.time() - t0:.0f} s in all on {platform.machine()} "
             f"{os.cpu_count()} CPUs, {jax.devices()[0].platform}; jax {jax.__version__}, "
             f"flax {flax.__version__}.")
  print("\n" + "\n".join(out))
  if args.markdown:
    pathlib.Path(args.markdown).write_text("\n".join(out) + "\n")


if __name__ == "__main__":
  main()
