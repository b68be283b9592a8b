"""The training library, in layers that import one way, downwards (docs/design.md#layers;
tests/test_architecture.py holds the code to them):

    run/     the training loop and its set-up, fine-tuning, signals, process start-up
    modes/   evaluate, predict, report, export, sample, show: what is done with a workdir
    tasks/   what a run learns (classify, gan), and a task's state restored from a checkpoint
    store/   what a run keeps in its workdir: checkpoints, metric records, the lock
    model/   models, optimizers, train states, the pure steps and their jitted drivers, the mesh
    data/    datasets from their sources as uint8 arrays; image files; augmentation
    errors.py, console.py, settings.py: the user-input errors, printing, config helpers

`train_and_evaluate` is imported on first use, so that the modules that need no JAX (images,
errors) can be imported without it.
"""

from training.errors import ConfigError, DataNotFoundError, NonFiniteLossError, Preempted

USER_ERRORS = (ConfigError, DataNotFoundError, NonFiniteLossError)

__all__ = ["ConfigError", "DataNotFoundError", "NonFiniteLossError", "Preempted", "USER_ERRORS",
           "train_and_evaluate"]


def __getattr__(name: str):
  if name == "train_and_evaluate":
    from training.run.loop import train_and_evaluate
    return train_and_evaluate
  raise AttributeError(f"module 'training' has no attribute {name!r}")
