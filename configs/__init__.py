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
