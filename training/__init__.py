"""The training library, in layers that import one way, downwards (docs/design.md#layers;
tests/test_architecture.py holds the code to them):

    cli.py    the modes called, and chained (a run's report after its training)
    modes/    train/ (the loop and its set-up), evaluate, predict, report, export, sample, show,
              serve: what is done with a config or a workdir, each mode knowing no other
    tasks/    what a run learns (classify, gan: each its state, steps and scores), and a task's
              state restored from a checkpoint
    store/    what a run keeps in its workdir: checkpoints, metric records, the lock
    compute/  models built, optimizers, the jitted drivers of a task's steps, the mesh; process
              start-up (runtime settings, joining a multi-process run)
    data/     datasets from their sources as uint8 arrays; image files; augmentation
    errors.py, console.py, settings.py, overrides.py, members.py: the user-input errors,
              printing, config helpers, the command line's overrides explained, a population

`train_and_evaluate` (training, then the report: cli.py's) is imported on first use, so that
the modules that need no JAX (images, errors) can be imported without it.
"""

from training.errors import ConfigError, DataNotFoundError, NonFiniteLossError, Preempted

USER_ERRORS = (ConfigError, DataNotFoundError, NonFiniteLossError)

__all__ = ["ConfigError", "DataNotFoundError", "NonFiniteLossError", "Preempted", "USER_ERRORS",
           "train_and_evaluate"]


def __getattr__(name: str):
  if name == "train_and_evaluate":
    from training.cli import train_and_evaluate
    return train_and_evaluate
  raise AttributeError(f"module 'training' has no attribute {name!r}")
