"""What a config would train, without training: `python train.py --config=... --mode=show`; and
what a trained run was trained with: `python train.py --mode=show --workdir=runs/cnn`.

Prints the config's fields in the sections of configs/common.py, each with the comment that
documents it (in configs/, or on the model's field in nets/), marked where the config file or
the command line changed it (with the value it replaced); the model's per-layer summary (flax's
`tabulate`: shapes and parameters); and the registered models with the fields a config may set
on each.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import os
import re
from typing import Any

import ml_collections
from flax import traverse_util

import nets
from configs import common
from training import settings
from training.data import folder, idx, tfds_source
from training.data.dataset import parse_classes
from training.errors import ConfigError
from training.compute import build
from training.store.checkpoint import read_latest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = os.path.join(REPO, "configs")
_ASSIGNMENT = re.compile(r"^\s*(c\.[\w.]+(?:\s*,\s*c\.[\w.]+)*)\s*=.*?(?:#\s*(.*))?$")
_COMMENT = re.compile(r"^\s*#\s?(.*)$")
_SECTION = re.compile(r"^\s*#\s*---\s*(.*?)\s*---\s*$")
_MODEL_FIELD = re.compile(r"^\s+(\w+):[^#=]*=[^#]*#\s*(.*)$")  # `name: type = default  # text`
DEFAULTS = "configs/common.py"


@dataclasses.dataclass
class _Source:
  """What the config files say of the fields, in the order they assign them."""
  comments: dict[str, str] = dataclasses.field(default_factory=dict)
  sections: dict[str, str] = dataclasses.field(default_factory=dict)  # field -> section title
  order: list[str] = dataclasses.field(default_factory=list)


def _read_source(paths: list[str]) -> _Source:
  """`c.FIELD = VALUE  # comment` lines (or comment lines right above them; `c.a, c.b = ...`
  too) of the files, and the `# --- Section ---` lines they fall under."""
  found = _Source()
  for path in paths:
    above: list[str] = []
    section = None
    with open(path) as f:
      for line in f:
        if m := _SECTION.match(line):
          section, above = m.group(1), []
          continue
        if assign := _ASSIGNMENT.match(line):
          for field in re.findall(r"c\.([\w.]+)", assign.group(1)):
            if assign.group(2) or above:
              found.comments[field] = assign.group(2) or " ".join(above)
            if field not in found.order:
              found.order.append(field)
            if section and field not in found.sections:
              found.sections[field] = section
        m = _COMMENT.match(line)
        above = above + [m.group(1)] if m else []
  return found


def field_comments(path: str) -> dict[str, str]:
  """{"model.dropout": "its comment", ...} from a config file and the configs/ files it imports
  (a file's own comment wins over its base's)."""
  return _read_source(_config_chain(path)).comments


def model_field_comments(name: str) -> dict[str, str]:
  """The comments on model `name`'s fields in its nets/ class (`hidden: int = 128  # text`)."""
  factory = nets.get_factory(name)
  try:
    lines = inspect.getsource(getattr(factory, "func", factory)).splitlines()
  except (OSError, TypeError):
    return {}
  return {m.group(1): m.group(2) for line in lines if (m := _MODEL_FIELD.match(line))}


def _config_chain(path: str) -> list[str]:
  """`path` after the configs/ modules that it imports (recursively), bases first."""
  chain: list[str] = []
  with open(path) as f:
    tree = ast.parse(f.read(), path)
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and node.module == "configs":
      for alias in node.names:
        base = os.path.join(CONFIGS, f"{alias.name}.py")
        if os.path.exists(base):
          chain += [p for p in _config_chain(base) if p not in chain]
  return chain + [path]


def _flat(config: ml_collections.ConfigDict | dict) -> dict[str, Any]:
  tree = config.to_dict() if hasattr(config, "to_dict") else config
  return traverse_util.flatten_dict(json.loads(json.dumps(tree)), sep=".")  # tuples as lists


def defaults_of(model_name: str) -> dict[str, Any]:
  """Every field's default: configs/common.py's, and the model class's for model.*."""
  try:
    model = {f"model.{k}": v for k, v in nets.config_fields(model_name).items()}
  except nets.ModelConfigError:
    model = {}
  return {**_flat(model), **_flat(common.base())}


def describe_config(config: ml_collections.ConfigDict, path: str,
                    before: dict[str, tuple[str, Any]] | None = None) -> str:
  """One line per field, `name = value  # comment`, in the sections of configs/common.py and
  in the order the config files assign them; `before`: {field: (mark, the value it replaced)}
  of the fields to mark."""
  flat = _flat(config)
  source = _read_source(_config_chain(path))
  try:
    comments = {f"model.{k}": v for k, v in model_field_comments(config.model.name).items()}
  except nets.ModelConfigError:
    comments = {}
  other_model = settings.from_file(path).model.name != config.model.name
  comments.update({k: v for k, v in source.comments.items()  # not another model's comments
                   if not (other_model and k.startswith("model.") and k != "model.name")})
  groups: dict[str, list[str]] = {}
  for field in sorted(flat, key=lambda f: _position(f, source.order)):
    top = field.split(".")[0]
    section = source.sections.get(field) or next(
        (s for f, s in source.sections.items() if f.split(".")[0] == top), top)
    groups.setdefault(section, []).append(field)
  before = before or {}
  texts = {k: f"{before[k][0] if k in before else ' '} {k} = {_value(flat[k])}"
           + (f" [{_value(before[k][1])}]" if before.get(k, (0, _ABSENT))[1] is not _ABSENT
              else "") for k in flat}
  width = max(len(t) for t in texts.values())
  lines = []
  for section, fields in groups.items():
    lines.append(f"--- {section} ---")
    lines += [f"{texts[k]:<{width}}  # {comments[k]}" if k in comments else texts[k]
              for k in fields]
  return "\n".join(lines)


def _position(field: str, order: list[str]) -> tuple[int, int]:
  """Where a field is listed: with the others of its group (model.*), at the group's first
  assignment, in the order they are assigned (a field no file assigns: at its group's end, in
  the order the config holds them, a model's in the order its module declares them)."""
  group = field.split(".")[0]
  first = next((i for i, f in enumerate(order) if f.split(".")[0] == group), len(order))
  return first, order.index(field) if field in order else len(order)


_ABSENT = object()  # a field that the defaults or the config file do not have


def _value(v: Any) -> str:
  if isinstance(v, list):  # a tuple, as the command line takes it
    return "(" + ", ".join(map(_value, v)) + ("," if len(v) == 1 else "") + ")"
  return repr(v)


def changes(now: dict[str, Any], then: dict[str, Any], mark: str
            ) -> dict[str, tuple[str, Any]]:
  """{field: (mark, its value in `then`)} for the fields of `now` that differ from `then`."""
  return {k: (mark, then.get(k, _ABSENT)) for k, v in now.items() if then.get(k, _ABSENT) != v}


def model_summary(config: ml_collections.ConfigDict, image_shape: tuple[int, ...],
                  num_classes: int) -> str:
  """flax's per-layer table of the config's model on one image of `image_shape`."""
  import jax
  import jax.numpy as jnp
  model = build.build_model(config, num_classes)
  inputs = (jnp.zeros((1, *image_shape), jnp.float32),)
  if nets.kind_of(config.model.name) == "gan":  # a generator's inputs: noise and a class
    inputs = (jnp.zeros((1, model.latent_dim), jnp.float32), jnp.zeros((1,), jnp.int32))
  table = model.tabulate(jax.random.PRNGKey(0), *inputs, train=False,
                         console_kwargs={"width": 120, "force_terminal": False})
  return table.rstrip()


def list_models() -> str:
  """Every registered model and the fields a config may set on it, with their defaults."""
  lines = []
  for name in nets.names(kind=None):
    factory = nets.get_factory(name)
    cls = getattr(factory, "func", factory)
    fixed = getattr(factory, "keywords", {})
    settable = ", ".join(f"{k}={_default(v)}" for k, v in nets.field_defaults(name).items()
                         if k not in nets.NOT_CONFIG_FIELDS)
    variant = f" (a {cls.__name__} with {', '.join(f'{k}={v!r}' for k, v in fixed.items())})"
    kind = nets.kind_of(name)
    lines.append(f"  {name}{variant if fixed else ''}{'' if kind == 'classifier' else f' [{kind}]'}"
                 f": {settable}")
  return ("Models (--config.model.name) and their fields (--config.model.FIELD; the compute dtype "
          "of every model is --config.dtype). [gan]: a generator with its discriminator, for "
          "--config.task=gan (configs/dcgan.py, configs/cgan.py), not a classifier:\n"
          + "\n".join(lines))


def _default(value: Any) -> str:
  if value is dataclasses.MISSING:
    return "(required)"
  return getattr(value, "__name__", None) or repr(value)


def image_shape_and_classes(config: ml_collections.ConfigDict
                            ) -> tuple[tuple[int, ...], int] | None:
  """The dataset's image shape and class count (after `classes`) from its prepared metadata, the
  IDX datasets' table or, for an image folder, its options and class folders (no images are
  read); None when it is not there to look at."""
  try:
    if config.dataset.startswith(folder.PREFIX):
      size = config.folder.image_size
      shape = (size, size, config.folder.channels)
      num_classes = len(folder.class_names(config.dataset[len(folder.PREFIX):]))
    elif config.dataset in idx.DATASETS:  # known without its files, which may be downloaded
      spec = idx.DATASETS[config.dataset]
      shape, num_classes = spec.image_shape, len(spec.class_names)
    else:
      data_dir = tfds_source.resolve_data_dir(config.data_dir)
      if not tfds_source.is_prepared(config.dataset, data_dir):
        return None  # tfds would look it up online and leave a temporary folder behind
      import tensorflow_datasets as tfds
      info = tfds.builder(config.dataset, data_dir=data_dir).info
      shape, num_classes = tuple(info.features["image"].shape), info.features["label"].num_classes
  except Exception:  # not prepared, not an image dataset, or no class folders: show() says so
    return None
  if config.get("classes"):
    num_classes = len(parse_classes(config.classes))
  return shape, num_classes


def _model_part(config: ml_collections.ConfigDict,
                found: tuple[tuple[int, ...], int] | None) -> list[str]:
  (image_shape, num_classes), note = found or ((28, 28, 1), 10), ""
  if found is None:
    note = f" (MNIST's shape: {config.dataset!r} is not prepared, or holds no class folders)"
  return [f"Model {config.model.name!r} on {'x'.join(map(str, image_shape))} images, "
          f"{num_classes} classes{note}:", model_summary(config, image_shape, num_classes),
          list_models()]


def show(config: ml_collections.ConfigDict, path: str, note: str | None = None) -> str:
  """The whole page that `--mode=show` prints for a config file with its overrides."""
  rel = os.path.relpath(path)
  file_values = _flat(settings.from_file(path))
  marks = {**changes(file_values, defaults_of(config.model.name), "+"),
           **changes(_flat(config), file_values, "*")}
  marks = {k: v for k, v in marks.items() if k in _flat(config)}
  head = (f"Config {rel} with its overrides (+: set by {rel}; *: set on the command line; in "
          f"brackets the value it replaces, {DEFAULTS}'s or the model's default):")
  return "\n\n".join([*([note] if note else []), head, describe_config(config, path, marks),
                      *_model_part(config, image_shape_and_classes(config))])


def show_run(workdir: str) -> str:
  """`--mode=show --workdir=DIR`: the settings a run was trained with (its config.json, else its
  latest checkpoint's), marked where they differ from the defaults, and its model."""
  config, info, source = _run_config(workdir)
  name = config.model.get("name", "")
  path = os.path.join(CONFIGS, f"{name}.py")  # the comments of its model's own config
  path = path if os.path.exists(path) else os.path.join(CONFIGS, "common.py")
  marks = changes(_flat(config), defaults_of(name), "+")
  head = (f"Run {workdir}: the settings it was trained with ({source}; +: not the default, "
          f"which is in brackets: {DEFAULTS}'s or the model's):")
  found = ((tuple(info["image_shape"]), info["num_classes"]) if info else
           image_shape_and_classes(config))
  return "\n\n".join([head, describe_config(config, path, marks), *_model_part(config, found)])


def _run_config(workdir: str) -> tuple[ml_collections.ConfigDict, dict[str, Any] | None, str]:
  """(a run's config, its dataset description if a checkpoint holds one, where they came from)."""
  saved, info, source = None, None, "config.json"
  if os.path.isdir(os.path.join(workdir, "checkpoints")):
    try:
      step, (info, saved) = read_latest(workdir, "dataset", "config")
      if step is not None:
        source = f"the checkpoint of step {step}"
    except ConfigError:
      pass  # no readable checkpoint: config.json says it all
  try:
    with open(os.path.join(workdir, "config.json")) as f:
      saved, source = json.load(f), "config.json"
  except (OSError, ValueError):
    if saved is None:
      raise ConfigError(f"No trained run in {workdir!r}: it has no config.json and no checkpoint. "
                        "Give a run's --workdir, or --config=configs/cnn.py to see a config's "
                        "settings.") from None
  return settings.from_json(saved), info, source
