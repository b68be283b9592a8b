"""Trains and evaluates an image classifier.

    python train.py --config=configs/cnn.py [--workdir=runs/cnn] [--config.num_epochs=3 ...]
"""

from __future__ import annotations

import os
import sys

from absl import app, flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/cnn.py; override its "
                                "fields with --config.FIELD=VALUE.", lock_config=True)
flags.DEFINE_string("workdir", None, "Where metrics, TensorBoard events and checkpoints go "
                    "(default: runs/<config file name>).")
flags.mark_flags_as_required(["config"])


def parse_flags(argv: list[str]) -> list[str]:
  """absl's parsing, with bad `--config.*` overrides reported as one clear line."""
  try:
    return FLAGS(argv)
  except flags.Error as e:
    sys.exit(f"error: {e}\nSee --helpfull for the flags, configs/*.py for the config fields.")
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    # ml_collections raises these for overrides of missing fields or of the wrong type.
    # Their text is a KeyError's repr ('name'\nDid you mean ...): unquote it.
    text = str(e.args[0] if e.args else e).replace("\\n", ": ").replace("\\", "")
    sys.exit(f"error: bad --config override, no such field or a value of the wrong type: "
             f"{text.replace(chr(39), '')}\nThe fields are those of the config file "
             "(configs/common.py holds the shared ones); overrides cannot add new fields.")


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  import nets  # after flag parsing: --help stays instant
  from training import USER_ERRORS, Preempted, runtime, train_and_evaluate

  config = FLAGS.config
  config_path = config_flags.get_config_filename(FLAGS["config"])
  workdir = FLAGS.workdir or os.path.join(
      "runs", os.path.splitext(os.path.basename(config_path))[0])
  runtime.setup(config)
  try:
    train_and_evaluate(config, workdir)
  except Preempted as e:
    print(str(e), file=sys.stderr)  # a clean stop: the checkpoint is complete
  except (*USER_ERRORS, nets.ModelConfigError) as e:
    # Errors about the user's input: a clear message instead of a traceback.
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
