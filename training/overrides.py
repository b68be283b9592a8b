"""The command line's config: a bad config file or `--config.*` override explained in one line.

ml_collections and absl report these with a traceback or a bare KeyError; a user gets instead
what the field is and the override that was probably meant. Only what the command line gave is
read here (the argv), so train.py stays a door: it parses the flags and calls the mode.
"""

from __future__ import annotations

import ast
import os
import traceback
from typing import Any

from absl import flags

from training import settings

SHOW_HINT = "See --helpfull for the flags, --mode=show for the config's fields."
FIELDS_HINT = ("See the config's fields with --config=... --mode=show (configs/common.py holds "
               "the shared ones); overrides cannot add new fields.")


def config_path(argv: list[str]) -> str | None:
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      return arg.split("=", 1)[1]
    if arg == "--config" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def command_line_problem(argv: list[str]) -> str | None:
  """What is wrong with the command line before absl reads it: a field overridden twice (absl
  would join two tuples into one, (8, 16) and (16, 32) into (8, 16, 16, 32)), or the config file
  (`config_file_problem`)."""
  fields = [field for _, field in overrides(argv)]
  if twice := sorted({f for f in fields if fields.count(f) > 1}):
    return (f"--config.{twice[0]} is given {fields.count(twice[0])} times: give each field once "
            "(a repeated tuple would be joined into one, not replaced).")
  return config_file_problem(argv)


def config_file_problem(argv: list[str]) -> str | None:
  """A config file that is missing or is not Python with a get_config(): what is wrong, listing
  the configs there are (ml_collections would print a traceback)."""
  path = config_path(argv)
  if path is None:
    return None
  import configs
  known = ", ".join(f"configs/{name}.py" for name in configs.names())
  if not os.path.isfile(path):
    return f"no config file {path!r}. The configs: {known}."
  try:
    with open(path, "rb") as f:
      tree = ast.parse(f.read(), path)
  except (SyntaxError, ValueError, OSError) as e:
    where = f" (line {e.lineno})" if getattr(e, "lineno", None) else ""
    return (f"{path} is not a config file: it is not valid Python{where}. Pass a Python "
            f"file that defines get_config(), e.g. one of: {known}.")
  if not any(isinstance(n, ast.FunctionDef) and n.name == "get_config" for n in tree.body):
    return f"{path} has no get_config() function, so it is not a config file. The configs: {known}."
  return None


def not_a_config(config: Any, path: str) -> str | None:
  """What a config file's get_config() returned instead of this project's config (a plain dict,
  a ConfigDict made from scratch), which would fail later as a KeyError; None when it is one."""
  import ml_collections

  from configs import common
  if not isinstance(config, ml_collections.ConfigDict):
    what = f"returned a {type(config).__name__}, not an ml_collections.ConfigDict"
  elif missing := [k for k in common.base().keys() if k not in config]:
    what = f"returned a config without the field(s) {', '.join(missing[:6])}"
  else:
    return None
  return (f"{path}: get_config() {what}: start from configs.common.base(), as configs/cnn.py "
          "does.")


def parse_error(argv: list[str], e: Exception) -> str | None:
  """The `error: ...` lines for an exception that absl's flag parsing raised, or None for one
  that neither the command line nor its config file caused."""
  if broken := _broken_model():
    return f"error: {broken}"
  if failed := _config_file_error(config_path(argv), e):
    return f"error: {failed}"
  if not isinstance(e, (flags.Error, AttributeError, KeyError, TypeError, ValueError)):
    return None
  if isinstance(e, flags.Error):
    explained = explain(argv)
    return (f"error: {f'bad --config override: {explained}' if explained else e}\n"
            + SHOW_HINT)
  # ml_collections raises these for overrides of missing fields or of the wrong type.
  # Their text is a KeyError's repr ('name'\nDid you mean ...): unquote it.
  text = str(e.args[0] if e.args else e).replace("\\n", ": ").replace("\\", "")
  return (f"error: bad --config override: {explain(argv) or text.replace(chr(39), '')}\n"
          + FIELDS_HINT)


def _config_file_error(path: str | None, e: BaseException) -> str | None:
  """What went wrong where the config file's own code raised `e` (or the error it was wrapped
  in: ml_collections and absl re-raise it with its traceback as their message), or None."""
  if path is None:
    return None
  seen: set[int] = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    lines = [f.lineno for f in traceback.extract_tb(e.__traceback__)
             if os.path.abspath(f.filename) == os.path.abspath(path)]
    if lines:
      text = (str(e).splitlines() or [""])[0]
      return (f"{path} failed as it was loaded (line {lines[-1]}): {type(e).__name__}"
              f"{': ' + text if text else ''}. Fix the config file; configs/cnn.py is one that "
              "works.")
    e = e.__cause__ or e.__context__
  return None


def _broken_model() -> str | None:
  """What is wrong with a file in nets/ that cannot be imported or registers a model that breaks
  the contract (configs read the models' fields, so the config fails with it), or None."""
  import nets
  try:
    nets.names(kind=None)
  except nets.ModelContractError as e:
    return str(e)
  return None


def file_config(path: str | None) -> Any:
  """The config file's own config (without the command line's overrides), or None."""
  try:
    return settings.from_file(path)
  except Exception:  # the override's own message is all there is then
    return None


def overrides(argv: list[str]) -> list[tuple[str, str]]:
  """(arg, dotted field) of each --config.FIELD=VALUE (or --config.FIELD VALUE) of `argv`."""
  return [(arg, arg[len("--config."):].split("=", 1)[0]) for arg in argv
          if arg.startswith("--config.")]


def explain(argv: list[str]) -> str | None:
  """For an override that names a group of fields (--config.model=cnn), reaches into a field
  that is not a group (--config.optimizer.lr=...) or sets a model field the config lacks: what
  the field is, and the override that was probably meant."""
  config = file_config(config_path(argv))
  if config is None:
    return None
  for arg, field in overrides(argv):
    node, names = config, field.split(".")
    for i, name in enumerate(names):
      if not hasattr(node, "keys"):
        return (f"--config.{field}: {'.'.join(names[:i])} is a {type(node).__name__} field "
                f"({node!r}), not a group of fields, so it has no field {name!r}.")
      if name not in node:
        explained = _missing_field(config, names[:i], name, argv)
        if explained:
          return explained
        break
      node = node[name]
    else:
      if hasattr(node, "keys"):
        return _group_override(field, list(node.keys()), arg.partition("=")[2])
  return None


def _group_override(field: str, keys: list[str], value: str) -> str:
  """--config.model=cnn: a group of fields set as one value."""
  meant = (f"to choose the architecture use --config.model.name={value or 'NAME'}"
           if field == "model" else f"set one of them, e.g. --config.{field}.{keys[0]}=VALUE")
  return (f"--config.{field} is a group of fields ({', '.join(keys)}), not one value: {meant}.")


def _missing_field(config: Any, groups: list[str], name: str, argv: list[str]) -> str | None:
  """An override of a model field that the config does not set (ml_collections' message covers
  the other fields)."""
  if groups != ["model"]:
    return None
  if name == "dtype":
    return ("--config.model.dtype: the compute dtype is set for every model by --config.dtype "
            "(float32 or bfloat16), not by a model field.")
  import nets
  model = next((arg.partition("=")[2] for arg, f in overrides(argv) if f == "model.name"),
               config.model.name)
  try:
    known = [f for f in nets.field_names(model) if f not in ("num_classes", "dtype")]
  except nets.ModelConfigError:
    return None
  if name in known:
    return (f"--config.model.{name}: {model} has that field, but the config holds "
            f"{config.model.name}'s fields and an override cannot add one; start from "
            f"configs/{model}.py or a copy of the config file with c = common.base({model!r}).")
  return (f"--config.model.{name}: model {model!r} has no field {name!r}; its fields: "
          f"{', '.join(known)}.")
