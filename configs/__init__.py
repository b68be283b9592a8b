"""Runnable configs are the files here that define `get_config`; common.py only holds the base."""

from __future__ import annotations

import pathlib
import re


def names() -> list[str]:
  """Every runnable config, by file stem (what `--config=configs/<name>.py` takes)."""
  return sorted(p.stem for p in pathlib.Path(__file__).parent.glob("*.py")
                if re.search(r"^def get_config\(", p.read_text(), re.M))


def task(name: str) -> str:
  """The task that config `name` trains ("classify" unless it sets `task`)."""
  import importlib
  return importlib.import_module(f"configs.{name}").get_config().get("task", "classify")


# What the docstring of a config too large for a CPU says instead of its accuracy, until an
# accelerator has trained it (configs/large.py); it must then state its CPU epoch time.
WAITS_FOR_DEVICE = "accuracy waits for a device"


def waits_for_device(name: str) -> bool:
  """Whether config `name` is measured only where an accelerator is lent."""
  import importlib
  return WAITS_FOR_DEVICE in " ".join((importlib.import_module(f"configs.{name}").__doc__ or ""
                                       ).split())
