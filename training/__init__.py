"""Training machinery: data (input pipeline), optim, steps (train/eval), metrics, loop.

`train_and_evaluate` is imported on first use, so that the modules that need no JAX (images,
errors) can be imported without it.
"""

from training.errors import ConfigError, DataNotFoundError, NonFiniteLossError, Preempted

USER_ERRORS = (ConfigError, DataNotFoundError, NonFiniteLossError)

__all__ = ["ConfigError", "DataNotFoundError", "NonFiniteLossError", "Preempted", "USER_ERRORS",
           "train_and_evaluate"]


def __getattr__(name: str):
  if name == "train_and_evaluate":
    from training.loop import train_and_evaluate
    return train_and_evaluate
  raise AttributeError(f"module 'training' has no attribute {name!r}")
