"""Config helpers that every layer may use: fields read and set by dotted name, reading a config
file, and reading back a config saved as JSON (with a checkpoint, or as a run's config.json)."""

from __future__ import annotations

import importlib.util
from typing import Any

import ml_collections


def set_fields(config: ml_collections.ConfigDict, fields: dict[str, Any]) -> None:
  """Sets fields by dotted name, in place: {"augment.shift": 0.0, "num_epochs": 1}."""
  for name, value in fields.items():
    *groups, leaf = name.split(".")
    node = config
    for group in groups:
      node = node[group]
    node[leaf] = value


def field_value(config: ml_collections.ConfigDict, field: str) -> Any:
  """The value of a field by dotted name: "augment.shift" -> config.augment.shift."""
  node = config
  for part in field.split("."):
    node = node[part]
  return node


def from_file(path: str) -> ml_collections.ConfigDict:
  """The config that a config file's `get_config()` returns (no command-line overrides)."""
  spec = importlib.util.spec_from_file_location("_config_file", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def tuples(x: Any) -> Any:
  """JSON turned the config's tuples into lists; the models' fields want tuples back."""
  if isinstance(x, dict):
    return {k: tuples(v) for k, v in x.items()}
  if isinstance(x, list):
    return tuple(tuples(v) for v in x)
  return x


def from_json(saved: dict[str, Any]) -> ml_collections.ConfigDict:
  """A config saved as JSON (a checkpoint's, config.json) as a ConfigDict, tuples restored."""
  return ml_collections.ConfigDict(tuples(saved))


def task_name(config: ml_collections.ConfigDict) -> str:
  """The config's task; configs saved before tasks existed are classifiers."""
  return config.get("task", "classify")
