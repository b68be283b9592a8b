"""Training machinery: data (input pipeline), optim, steps (train/eval), metrics, loop."""

from training.errors import ConfigError, DataNotFoundError, NonFiniteLossError, Preempted
from training.loop import train_and_evaluate

USER_ERRORS = (ConfigError, DataNotFoundError, NonFiniteLossError)

__all__ = ["ConfigError", "DataNotFoundError", "NonFiniteLossError", "Preempted", "USER_ERRORS",
           "train_and_evaluate"]
