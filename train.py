"""Trains and evaluates an image classifier; evaluates or applies a trained one.

    python train.py --config=configs/cnn.py [--workdir=runs/cnn] [--config.num_epochs=3 ...]
    python train.py --mode=evaluate --workdir=runs/cnn [--checkpoint=best|latest|STEP] [--split=test]
    python train.py --mode=predict --workdir=runs/cnn digit.png photo.jpg [--invert]

Multi-host: run the same command on every host, adding --coordinator_address=HOST0:PORT
--num_processes=N --process_id=I (or --distributed where the cluster is detected: TPU pod slices,
SLURM, Open MPI).
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/cnn.py; override its "
                                "fields with --config.FIELD=VALUE.", lock_config=True)
flags.DEFINE_string("workdir", None, "Where metrics, TensorBoard events and checkpoints go "
                    "(default: runs/<config file name>).")
flags.DEFINE_enum("mode", "train", ["train", "evaluate", "predict"],
                  "train (resumes from the workdir's checkpoints), evaluate a trained workdir, "
                  "or predict the classes of the image files given as arguments.")
flags.DEFINE_string("checkpoint", "best", "evaluate/predict: best (by validation accuracy), "
                    "latest, or a step number.")
flags.DEFINE_enum("split", "test", ["test", "validation", "train"], "evaluate: the split.")
flags.DEFINE_string("data_dir", None, "evaluate: the tfds data dir, if not the training run's.")
flags.DEFINE_bool("invert", False, "predict: the images are dark ink on a light background.")
flags.DEFINE_string("coordinator_address", None, "Multi-process: host:port of process 0.")
flags.DEFINE_integer("num_processes", None, "Multi-process: how many processes run together.")
flags.DEFINE_integer("process_id", None, "Multi-process: this process's id, 0..num_processes-1.")
flags.DEFINE_bool("distributed", False, "Multi-process, with the processes detected from the "
                  "cluster (TPU pod slice, SLURM, Open MPI); implied under SLURM/Open MPI with "
                  "more than one task or when $JAX_COORDINATOR_ADDRESS is set.")
flags.DEFINE_integer("distributed_timeout", 300, "Seconds to wait for all processes to connect.")
flags.DEFINE_enum("fit", None, ["digit", "resize"], "predict: how images of another size are "
                  "fitted: digit (MNIST's box-and-centre; default for mnist) or resize.")


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
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  if FLAGS.mode != "predict" and len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if FLAGS.mode == "train" and FLAGS.config is None:
    raise app.UsageError("--config is required to train, e.g. --config=configs/cnn.py.")
  if FLAGS.mode != "train" and not FLAGS.workdir:
    raise app.UsageError(f"--mode={FLAGS.mode} needs --workdir, the trained run's directory.")
  import nets  # after flag parsing: --help stays instant
  from training import USER_ERRORS, Preempted, distributed, inference, runtime, train_and_evaluate

  try:
    runtime.setup(FLAGS.config if FLAGS.mode == "train" else None)  # before JAX's backend starts
    distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                           auto=FLAGS.distributed, timeout_s=FLAGS.distributed_timeout)
    if FLAGS.mode == "evaluate":
      inference.evaluate(FLAGS.workdir, FLAGS.checkpoint, FLAGS.split, FLAGS.data_dir)
    elif FLAGS.mode == "predict":
      predictions = inference.predict(FLAGS.workdir, argv[1:], FLAGS.checkpoint, FLAGS.invert,
                                      FLAGS.fit)
      print(inference.format_predictions(predictions))
    else:
      config = FLAGS.config
      config_path = config_flags.get_config_filename(FLAGS["config"])
      workdir = FLAGS.workdir or os.path.join(
          "runs", os.path.splitext(os.path.basename(config_path))[0])
      train_and_evaluate(config, workdir)
  except Preempted as e:
    print(str(e), file=sys.stderr)  # a clean stop: the checkpoint is complete
  except (*USER_ERRORS, nets.ModelConfigError) as e:
    # Errors about the user's input: a clear message instead of a traceback.
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
