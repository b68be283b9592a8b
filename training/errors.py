"""Errors caused by the user's input; `train.py` prints their message instead of a traceback."""

from __future__ import annotations


class ConfigError(ValueError):
  """A config value that cannot work; the message says which and how to fix it."""


class DataNotFoundError(FileNotFoundError):
  """The dataset is not prepared where we looked, and cannot be prepared here."""


class NonFiniteLossError(FloatingPointError):
  """Training produced a NaN or infinite loss."""


class Preempted(Exception):
  """Training stopped on a signal after saving a checkpoint; re-running resumes it."""
