"""What a config would train, without training: `python train.py --config=... --mode=show`.

Prints the resolved config, each field with the comment that documents it in configs/, the
model's per-layer summary (flax's `tabulate`: shapes and parameters), and the registered models
with the fields a config may set on each.
"""

from __future__ import annotations

import ast
import dataclasses
import os
import re
from typing import Any

import ml_collections
from flax import traverse_util

import nets
from training.data import folder, idx, tfds_source
from training.data.dataset import parse_classes
from training.model import build

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = os.path.join(REPO, "configs")
_ASSIGNMENT = re.compile(r"^\s*c\.([\w.]+)\s*=.*?(?:#\s*(.*))?$")
_COMMENT = re.compile(r"^\s*#\s?(.*)$")


def field_comments(path: str) -> dict[str, str]:
  """{"model.dropout": "its comment", ...} from `c.FIELD = VALUE  # comment` lines (or the
  comment lines right above them) of a config file and of the configs/ files it imports."""
  comments: dict[str, str] = {}
  for source in _config_chain(path):
    above: list[str] = []
    with open(source) as f:
      for line in f:
        if (assign := _ASSIGNMENT.match(line)) and (assign.group(2) or above):
          comments[assign.group(1)] = assign.group(2) or " ".join(above)
        m = _COMMENT.match(line)
        above = above + [m.group(1)] if m and not m.group(1).startswith("---") else []
  return comments


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


def describe_config(config: ml_collections.ConfigDict, path: str) -> str:
  """One line per field: `name = value  # comment`, aligned."""
  flat = traverse_util.flatten_dict(config.to_dict(), sep=".")
  comments = field_comments(path)
  width = max(len(f"{k} = {v!r}") for k, v in flat.items())
  lines = []
  for k, v in flat.items():
    text = f"{k} = {v!r}"
    lines.append(f"{text:<{width}}  # {comments[k]}" if k in comments else text)
  return "\n".join(lines)


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
    fields = {f.name: f.default for f in dataclasses.fields(cls)
              if f.name in nets.field_names(name)}
    settable = ", ".join(f"{k}={_default(v)}" for k, v in fields.items() if k != "num_classes")
    variant = f" (a {cls.__name__} with {', '.join(f'{k}={v!r}' for k, v in fixed.items())})"
    kind = nets.kind_of(name)
    lines.append(f"  {name}{variant if fixed else ''}{'' if kind == 'classifier' else f' [{kind}]'}"
                 f": {settable}")
  return "Models (--config.model.name) and their fields (--config.model.FIELD):\n" + "\n".join(
      lines)


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
      import tensorflow_datasets as tfds
      info = tfds.builder(config.dataset,
                          data_dir=tfds_source.resolve_data_dir(config.data_dir)).info
      shape, num_classes = tuple(info.features["image"].shape), info.features["label"].num_classes
  except Exception:  # not prepared, not an image dataset, or no class folders: show() says so
    return None
  if config.get("classes"):
    num_classes = len(parse_classes(config.classes))
  return shape, num_classes


def show(config: ml_collections.ConfigDict, path: str) -> str:
  """The whole page that `--mode=show` prints."""
  found = image_shape_and_classes(config)
  (image_shape, num_classes), note = found or ((28, 28, 1), 10), ""
  if found is None:
    note = f" (MNIST's shape: {config.dataset!r} is not prepared, or holds no class folders)"
  return "\n\n".join([
      f"Config {os.path.relpath(path)} with its overrides:", describe_config(config, path),
      f"Model {config.model.name!r} on {'x'.join(map(str, image_shape))} images, {num_classes} "
      f"classes{note}:", model_summary(config, image_shape, num_classes), list_models()])
