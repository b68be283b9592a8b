"""What train.py does once its flags are parsed: the usage checked, the config read, the mode run.

train.py defines the flags (so that --help lists them as its own) and hands over here.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from absl import flags
from ml_collections import config_flags

from training import overrides

FLAGS = flags.FLAGS


# The modes that read each mode-specific flag: given to another mode, it would be ignored.
_SERVE = ("serve",)
MODE_FLAGS = {
    "checkpoint": ("evaluate", "predict", "report", "export", "sample", "serve"),
    "split": ("evaluate",), "data_dir": ("evaluate", "report"), "data_url": ("evaluate", "report"),
    "invert": ("predict",), "fit": ("predict",), "output": ("predict", "export", "sample"),
    "formats": ("export",), "overwrite": ("export",),
    "label": ("sample",), "num": ("sample",), "sample_seed": ("sample",),
    "member": ("evaluate", "predict", "export", "serve"),
    "ensemble": ("evaluate", "predict", "export"),
    **{f: _SERVE for f in ("host", "port", "max_batch", "batch_window_ms", "batching",
                           "max_body_mb", "max_pixels", "max_images", "workers")},
}


def check_usage(argv: list[str]) -> None:
  """Flags that do not fit the mode: one line each (absl's usage error would print the whole
  help above it)."""
  problem = None
  misplaced = [f for f, modes in MODE_FLAGS.items() if FLAGS[f].present and FLAGS.mode not in modes]
  if misplaced:
    f = misplaced[0]
    problem = (f"--{f} is for --mode={', '.join(MODE_FLAGS[f])}, not {FLAGS.mode}: "
               "here it would change nothing.")
  elif FLAGS.mode not in ("predict", "report") and len(argv) > 1:
    problem = f"unexpected arguments {argv[1:]}: only --mode=predict and report take any."
  elif FLAGS.mode == "train" and FLAGS.config is None:
    problem = "training needs --config, e.g. --config=configs/cnn.py."
  elif FLAGS.mode == "show" and FLAGS.config is None and not FLAGS.workdir:
    problem = ("--mode=show needs --config (a config's settings) or --workdir (a trained run's), "
               "e.g. --config=configs/cnn.py.")
  elif FLAGS.mode == "report" and len(argv) == 2 and FLAGS.workdir:
    problem = ("--mode=report takes the run as --workdir=DIR or as one argument, not both; give "
               "two or more runs to compare them.")
  elif (FLAGS.mode not in ("train", "show") and not FLAGS.workdir
        and not (FLAGS.mode == "report" and argv[1:])):
    problem = f"--mode={FLAGS.mode} needs --workdir, the trained run's directory."
  if problem:
    sys.exit(f"error: {problem} (python train.py --help lists the modes and flags)")


def config() -> tuple[Any, str | None]:
  """The config of --config with its overrides, and a note when the command line switched the
  model (--config.model.name): that model's defaults replace the file's model fields."""
  if FLAGS.config is None:
    return None, None
  from training.compute import build
  from training.errors import ConfigError
  path = config_flags.get_config_filename(FLAGS["config"])
  if problem := overrides.not_a_config(FLAGS.config, path):
    raise ConfigError(problem)
  file_config = overrides.file_config(path)
  if file_config is None or "model" not in file_config:
    return FLAGS.config, None
  # absl has taken the flags out of argv: the overrides are read from the command line itself.
  given = [f.split(".", 1)[1] for _, f in overrides.overrides(sys.argv) if f.startswith("model.")]
  config, note = build.switch_model(FLAGS.config, file_config.model.name, given)
  config.lock()
  return config, note


def run_mode(argv: list[str], config: Any, note: str | None) -> None:
  """The mode's work; what it returns is printed by the modules themselves or here."""
  if FLAGS.mode == "evaluate":
    from training.modes import evaluate
    evaluate.evaluate(FLAGS.workdir, FLAGS.checkpoint, FLAGS.split, FLAGS.data_dir,
                      FLAGS.data_url, FLAGS.member, FLAGS.ensemble)
  elif FLAGS.mode == "predict":
    # Each file's line as its batch is scored; a file that cannot be used gets an `error:` line
    # and the others go on; any such file makes the exit status 1.
    from training.modes import predict
    failed = predict.predict_command(FLAGS.workdir, argv[1:], FLAGS.checkpoint, FLAGS.invert,
                                     FLAGS.fit, output=FLAGS.output, member=FLAGS.member,
                                     ensemble=FLAGS.ensemble)
    if failed:
      sys.exit(f"error: {len(failed)} of {len(argv) - 1} files could not be classified.")
  elif FLAGS.mode == "report":
    from training.modes import report
    if len(argv) > 2:  # several runs: compared
      out = FLAGS.workdir or os.path.join("runs", "comparison")
      print(report.format_comparison(report.write_comparison(argv[1:], out), out))
    else:  # one run, as --workdir or as the argument
      print(report.format_result(report.write_report(FLAGS.workdir or argv[1], FLAGS.checkpoint,
                                                     FLAGS.data_dir, data_url=FLAGS.data_url)))
  elif FLAGS.mode == "export":
    from training.modes import export, export_meta
    meta = export.export(FLAGS.workdir, FLAGS.checkpoint, FLAGS.output, FLAGS.overwrite,
                         formats=FLAGS.formats, member=FLAGS.member, ensemble=FLAGS.ensemble)
    print(export_meta.format_summary(meta))
    if meta["unsaved"]:  # the files were made and checked, but could not be written
      sys.exit(f"error: {meta['unsaved']}")
  elif FLAGS.mode == "sample":
    from training.modes import sample
    print(sample.sample(FLAGS.workdir, FLAGS.checkpoint, FLAGS.label, FLAGS.num, FLAGS.output,
                        FLAGS.sample_seed))
  elif FLAGS.mode == "serve":
    from training.modes import serve
    serve.serve(FLAGS.workdir, FLAGS.checkpoint, FLAGS.member, serve.Options(
        FLAGS.host, FLAGS.port, FLAGS.max_batch, FLAGS.batch_window_ms, FLAGS.batching,
        FLAGS.max_body_mb, FLAGS.max_pixels, FLAGS.max_images, FLAGS.workers))
  elif FLAGS.mode == "show":
    from training.modes import show
    print(show.show(config, config_flags.get_config_filename(FLAGS["config"]), note)
          if config is not None else show.show_run(FLAGS.workdir))
  else:
    _train(config, note)


def _train(config: Any, note: str | None) -> None:
  config_path = config_flags.get_config_filename(FLAGS["config"])
  workdir = FLAGS.workdir or os.path.join(
      "runs", os.path.splitext(os.path.basename(config_path))[0])
  from training.console import log
  if note:
    log(note)
  train_and_evaluate(config, workdir)


def train_and_evaluate(config: Any, workdir: str | None = None) -> tuple[Any, dict[str, Any]]:
  """The training mode (modes/train/loop.py's `train_and_evaluate`), followed by the report mode
  for a run that keeps a report: the two are chained here, so that neither imports the other."""
  from training.modes.train import loop
  return loop.train_and_evaluate(config, workdir, then=_write_report)


def _write_report(workdir: str, dataset: Any) -> None:
  """The run's figures and report.html, from the data it trained on; a failure costs the report
  only, never the run."""
  from training.console import log
  from training.modes import report
  try:
    written = report.write_report(workdir, dataset=dataset)
    if "report" in written["files"]:
      log(f"report: {written['files']['report']} (and the figures as PNGs beside it)")
    if written["unsaved"]:
      log(written["unsaved"])
  except report.ReportError as e:
    log(f"Warning: no report was written: {e}")
