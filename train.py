"""Trains and evaluates an image classifier; evaluates or applies a trained one.

    python train.py --config=configs/cnn.py [--workdir=runs/cnn] [--config.num_epochs=3 ...]
    python train.py --mode=evaluate --workdir=runs/cnn [--checkpoint=best|latest|STEP] [--split=test]
    python train.py --mode=predict --workdir=runs/cnn digit.png photo.jpg [--invert]
    python train.py --mode=report --workdir=runs/cnn          # figures + report.html in the workdir
    python train.py --mode=report runs/cnn runs/mlp [--workdir=runs/comparison]   # runs compared
    python train.py --mode=export --workdir=runs/cnn [--output=DIR]   # jax.export + ONNX models
    python train.py --config=configs/cnn.py --mode=show    # the settings and the model, untrained
    python train.py --mode=sample --workdir=runs/cgan [--label=7] [--num=64]   # a GAN's samples

Multi-host: run the same command on every host, adding --coordinator_address=HOST0:PORT
--num_processes=N --process_id=I (or --distributed where the cluster is detected: TPU pod slices,
SLURM, Open MPI).
"""

from __future__ import annotations

import ast
import importlib.util
import os
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
                                    "sample"],
                  "train (resumes from the workdir's checkpoints); show: the --config's fields "
                  "with their comments, its model's layers and the registered models; evaluate a "
                  "trained workdir, "
                  "predict the classes of the image files given as arguments, or report: "
                  "figures and report.html of --workdir, or the runs given as arguments compared "
                  "(into --workdir, default runs/comparison); export: a checkpoint as files "
                  "that run without this code (jax.export, ONNX; see docs/export.md); sample: a "
                  "PNG grid of a trained GAN's images.")
flags.DEFINE_string("checkpoint", "best", "evaluate/predict/report/export: best (by validation "
                    "accuracy), latest, or a step number.")
flags.DEFINE_enum("split", "test", ["test", "validation", "train"], "evaluate: the split.")
flags.DEFINE_string("data_dir", None, "evaluate/report: the data directory (prepared tfds data, "
                    "or IDX files), if not the training run's.")
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
                    "the PNG file (default <workdir>/samples/sample_....png).")
flags.DEFINE_integer("label", None, "sample: the class to draw (a conditional GAN); default: "
                     "every class in turn.")
flags.DEFINE_integer("num", 64, "sample: how many images.")
flags.DEFINE_integer("sample_seed", 0, "sample: the noise's seed.")
flags.DEFINE_bool("overwrite", False, "export: replace an existing export in --output.")
flags.DEFINE_integer("member", None, "evaluate/predict/export of a population: member K "
                     "alone (default: the ensemble, its members' probabilities averaged).")


def parse_flags(argv: list[str]) -> list[str]:
  """absl's parsing, with a bad config file or `--config.*` override reported as one line."""
  _check_config_file(argv)
  try:
    return FLAGS(argv)
  except flags.Error as e:
    sys.exit(f"error: {e}\nSee --helpfull for the flags, --mode=show for the config's fields.")
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    # ml_collections raises these for overrides of missing fields or of the wrong type.
    # Their text is a KeyError's repr ('name'\nDid you mean ...): unquote it.
    text = str(e.args[0] if e.args else e).replace("\\n", ": ").replace("\\", "")
    sys.exit(f"error: bad --config override: {_explain_override(argv) or text.replace(chr(39), '')}"
             "\nSee the config's fields with --config=... --mode=show (configs/common.py holds "
             "the shared ones); overrides cannot add new fields.")


def _config_path(argv: list[str]) -> str | None:
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      return arg.split("=", 1)[1]
    if arg == "--config" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def _check_config_file(argv: list[str]) -> None:
  """A config file that is missing or is not Python with a get_config(): one line, listing the
  configs there are (ml_collections would print a traceback)."""
  path = _config_path(argv)
  if path is None:
    return
  import configs
  known = ", ".join(f"configs/{name}.py" for name in configs.names())
  if not os.path.isfile(path):
    sys.exit(f"error: no config file {path!r}. The configs: {known}.")
  try:
    with open(path, "rb") as f:
      tree = ast.parse(f.read(), path)
  except (SyntaxError, ValueError, OSError) as e:
    where = f" (line {e.lineno})" if getattr(e, "lineno", None) else ""
    sys.exit(f"error: {path} is not a config file: it is not valid Python{where}. Pass a Python "
             f"file that defines get_config(), e.g. one of: {known}.")
  if not any(isinstance(n, ast.FunctionDef) and n.name == "get_config" for n in tree.body):
    sys.exit(f"error: {path} has no get_config() function, so it is not a config file. The "
             f"configs: {known}.")


def _explain_override(argv: list[str]) -> str | None:
  """For an override that reaches into a field that is not a group (--config.optimizer.lr=...):
  which field it is, its type and value."""
  path = _config_path(argv)
  try:
    spec = importlib.util.spec_from_file_location("_config_for_errors", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
  except Exception:  # the override's own message is all there is then
    return None
  for arg in argv:
    if not arg.startswith("--config."):
      continue
    node, names = config, arg[len("--config."):].split("=", 1)[0].split(".")
    for i, name in enumerate(names[:-1]):
      if name not in node:
        break
      node = node[name]
      if not hasattr(node, "keys"):
        field = ".".join(names[:i + 1])
        return (f"--{arg.split('=', 1)[0][2:]}: {field} is a {type(node).__name__} field "
                f"({node!r}), not a group of fields, so it has no field {names[i + 1]!r}.")
  return None


def _check_usage(argv: list[str]) -> None:
  if FLAGS.mode not in ("predict", "report") and len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if FLAGS.mode in ("train", "show") and FLAGS.config is None:
    raise app.UsageError(f"--mode={FLAGS.mode} needs --config, e.g. --config=configs/cnn.py.")
  if (FLAGS.mode not in ("train", "show") and not FLAGS.workdir
      and not (FLAGS.mode == "report" and argv[1:])):
    raise app.UsageError(f"--mode={FLAGS.mode} needs --workdir, the trained run's directory.")


def _run(argv: list[str]) -> None:
  """The mode's work; what it returns is printed by the modules themselves or here."""
  if FLAGS.mode == "evaluate":
    from training.modes import evaluate
    evaluate.evaluate(FLAGS.workdir, FLAGS.checkpoint, FLAGS.split, FLAGS.data_dir,
                      FLAGS.data_url, FLAGS.member)
  elif FLAGS.mode == "predict":
    # Each file's line as its batch is scored; a file that cannot be used gets an `error:` line
    # and the others go on; any such file makes the exit status 1.
    from training.modes import predict
    failed = predict.predict_command(FLAGS.workdir, argv[1:], FLAGS.checkpoint, FLAGS.invert,
                                     FLAGS.fit, member=FLAGS.member)
    if failed:
      sys.exit(f"error: {len(failed)} of {len(argv) - 1} files could not be classified.")
  elif FLAGS.mode == "report":
    from training.modes import report
    if argv[1:]:  # several runs: compared
      print(report.write_comparison(argv[1:], FLAGS.workdir or os.path.join("runs", "comparison")))
    else:
      print(report.format_result(report.write_report(FLAGS.workdir, FLAGS.checkpoint,
                                                     FLAGS.data_dir, data_url=FLAGS.data_url)))
  elif FLAGS.mode == "export":
    from training.modes import export
    print(export.format_summary(export.export(FLAGS.workdir, FLAGS.checkpoint, FLAGS.output,
                                              FLAGS.overwrite, member=FLAGS.member)))
  elif FLAGS.mode == "sample":
    from training.modes import sample
    print(sample.sample(FLAGS.workdir, FLAGS.checkpoint, FLAGS.label, FLAGS.num, FLAGS.output,
                        FLAGS.sample_seed))
  elif FLAGS.mode == "show":
    from training.modes import show
    print(show.show(FLAGS.config, config_flags.get_config_filename(FLAGS["config"])))
  else:
    config_path = config_flags.get_config_filename(FLAGS["config"])
    workdir = FLAGS.workdir or os.path.join(
        "runs", os.path.splitext(os.path.basename(config_path))[0])
    from training.run.loop import train_and_evaluate
    train_and_evaluate(FLAGS.config, workdir)


def main(argv: list[str]) -> None:
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  _check_usage(argv)
  import nets  # after flag parsing: --help stays instant
  from training import USER_ERRORS, Preempted
  from training.run import distributed, runtime

  try:
    runtime.setup(FLAGS.config if FLAGS.mode == "train" else None)  # before JAX's backend starts
    distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                           auto=FLAGS.distributed, timeout_s=FLAGS.distributed_timeout)
    _run(argv)
  except Preempted as e:
    print(str(e), file=sys.stderr)  # a clean stop: the checkpoint is complete
    sys.exit(EX_TEMPFAIL)  # not done: saved, re-run to continue (0: done, 1: an error)
  except (*USER_ERRORS, nets.ModelConfigError) as e:
    # Errors about the user's input: a clear message instead of a traceback.
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
