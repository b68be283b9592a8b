"""Trains and evaluates an image classifier; evaluates or applies a trained one.

    python train.py --config=configs/cnn.py [--workdir=runs/cnn] [--config.num_epochs=3 ...]
    python train.py --mode=evaluate --workdir=runs/cnn [--checkpoint=best|latest|STEP] [--split=test]
    python train.py --mode=predict --workdir=runs/cnn digit.png scan.jpg [--invert] [--output=p.csv]
    python train.py --mode=report --workdir=runs/cnn          # figures + report.html in the workdir
    python train.py --mode=report runs/cnn                    # the same
    python train.py --mode=report runs/cnn runs/mlp [--workdir=runs/comparison]   # runs compared
    python train.py --mode=export --workdir=runs/cnn [--output=DIR] [--formats=jax,onnx]
    python train.py --config=configs/cnn.py --mode=show    # the settings and the model, untrained
    python train.py --mode=show --workdir=runs/cnn         # a trained run's settings
    python train.py --mode=sample --workdir=runs/cgan [--label=7] [--num=64]   # a GAN's samples
    python train.py --mode=serve --workdir=runs/cnn [--port=8000] [--host=127.0.0.1]   # HTTP API

Multi-host: run the same command on every host, adding --coordinator_address=HOST0:PORT
--num_processes=N --process_id=I (or --distributed where the cluster is detected: TPU pod slices,
SLURM, Open MPI).
"""

from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
EX_TEMPFAIL = 75  # exit status of a preempted or stopped run: saved, re-run to continue
config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/cnn.py; override its "
                                "fields with --config.FIELD=VALUE (--mode=show lists them, with "
                                "the models).", lock_config=True)
flags.DEFINE_string("workdir", None, "Where metrics, TensorBoard events and checkpoints go "
                    "(default: runs/<config file name>).")
flags.DEFINE_enum("mode", "train", ["train", "evaluate", "predict", "report", "export", "show",
                                    "sample", "serve"],
                  "train (resumes from the workdir's checkpoints); show: the --config's fields "
                  "with their comments, its model's layers and the registered models (with "
                  "--workdir alone: a trained run's settings); evaluate a trained workdir, "
                  "predict the classes of the image files given as arguments, or report: "
                  "figures and report.html of --workdir (or of the one run given as argument), "
                  "or the runs given as arguments compared (into --workdir, default "
                  "runs/comparison); export: a checkpoint as files "
                  "that run without this code (jax.export, ONNX; see docs/export.md); sample: a "
                  "PNG grid of a trained GAN's images; serve: an HTTP API and a draw-a-digit page for "
                  "a trained workdir or an export folder (see docs/serve.md).")
flags.DEFINE_string("checkpoint", "best", "evaluate/predict/report/export/sample/serve: best "
                    "(by validation accuracy), latest, or a step number.")
flags.DEFINE_enum("split", "test", ["test", "validation", "train"], "evaluate: the split.")
flags.DEFINE_string("data_dir", None, "evaluate/report: the data directory (prepared tfds data "
                    "or IDX files), or the image folder of a folder run (moved since training), "
                    "if not the training run's.")
flags.DEFINE_string("data_url", None, "evaluate/report: the base URL to download missing IDX "
                    "files from, if not the training run's (default: the dataset's mirrors).")
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
flags.DEFINE_string("output", None, "export: the directory (default <workdir>/export); sample: "
                    "the PNG file (default <workdir>/samples/sample_....png); predict: a .csv "
                    "or .jsonl file of the predictions (file, class, probability, every "
                    "class's probability, notes).")
flags.DEFINE_list("formats", ["jax", "onnx"], "export: the formats to write; one that cannot be "
                  "made (ONNX without jax2onnx, or an operation it cannot express) is left out "
                  "and said so, the others are written; triton: also a Triton Inference Server "
                  "model repository of the ONNX model (docs/serve.md).")
flags.DEFINE_integer("label", None, "sample: the class to draw (a conditional GAN); default: "
                     "every class in turn.")
flags.DEFINE_integer("num", 64, "sample: how many images.")
flags.DEFINE_integer("sample_seed", 0, "sample: the noise's seed.")
flags.DEFINE_bool("overwrite", False, "export: replace an existing export in --output.")
flags.DEFINE_string("host", "127.0.0.1", "serve: the address to listen on (loopback: this "
                    "machine only; 0.0.0.0: every network).")
flags.DEFINE_integer("port", 8000, "serve: the port (0: any free one, named at start-up).")
flags.DEFINE_integer("max_batch", 64, "serve: images per device call at most (compiled at "
                     "start-up for 1, 2, 4, ... up to it).")
flags.DEFINE_float("batch_window_ms", 2.0, "serve: how long a request waits for others to "
                   "join its device call.")
flags.DEFINE_bool("batching", True, "serve: batch concurrent requests together (--nobatching: "
                  "a device call per request).")
flags.DEFINE_float("max_body_mb", 20.0, "serve: the largest request body.")
flags.DEFINE_integer("max_pixels", 40_000_000, "serve: the most pixels an image may have.")
flags.DEFINE_integer("max_images", 256, "serve: the most images in one request.")
flags.DEFINE_integer("workers", 1, "serve: processes answering on the port, each with the "
                     "model and a core's worth of request handling (docs/serve.md).")
flags.DEFINE_list("ensemble", [], "evaluate/predict/export: other runs' workdirs whose models "
                  "join --workdir's in one ensemble (every model's probabilities averaged), e.g. "
                  "--ensemble=runs/b,runs/c.")
flags.DEFINE_integer("member", None, "evaluate/predict/export/serve: of a population, member "
                     "K alone (default: the ensemble, its members' probabilities averaged).")


HELP_FLAGS = ("--help", "-help", "-h", "-?", "--helpshort", "--helpfull", "--helpxml")


def parse_flags(argv: list[str]) -> list[str]:
  """absl's parsing, with a bad config file or `--config.*` override reported as one line."""
  from training import overrides
  if problem := overrides.command_line_problem(argv):
    sys.exit(f"error: {problem}")
  try:
    return FLAGS(argv)
  except SystemExit as e:  # absl ends --help with status 1; help that was asked for is a success
    if e.code == 1 and any(arg in HELP_FLAGS for arg in argv[1:]):
      sys.exit(0)
    raise
  except Exception as e:  # a bad override, or a config file whose code fails
    if (message := overrides.parse_error(argv, e)) is None:
      raise
    sys.exit(message)


def main(argv: list[str]) -> None:
  if not FLAGS["verbosity"].present:
    # Library chatter in absl's format (orbax: every save, a checkpoint rotated away while it is
    # read) is not for users: this code says what matters in note: and error: lines.
    logging.set_verbosity(logging.ERROR)
  from training import cli
  cli.check_usage(argv)
  import nets  # after flag parsing: --help stays instant
  from training import USER_ERRORS, Preempted
  from training.compute import distributed, runtime

  try:
    config, note = cli.config()
    runtime.setup(config if FLAGS.mode == "train" else None)  # before JAX's backend starts
    distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                           auto=FLAGS.distributed, timeout_s=FLAGS.distributed_timeout)
    cli.run_mode(argv, config, note)
  except Preempted as e:
    print(str(e), file=sys.stderr)  # a clean stop: the checkpoint is complete
    sys.exit(EX_TEMPFAIL)  # not done: saved, re-run to continue (0: done, 1: an error)
  except (*USER_ERRORS, nets.ModelConfigError) as e:  # the user's input: one line, no traceback
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  try:
    app.run(main, flags_parser=parse_flags)
  except KeyboardInterrupt:  # before a mode takes Ctrl-C as a stop request, or a second one
    then = (" (training resumes from its last checkpoint, if any, when run again)"
            if FLAGS.is_parsed() and FLAGS.mode == "train" else "")
    print(f"note: stopped by Ctrl-C{then}.", file=sys.stderr)
    sys.exit(130)
