"""What of a train state a checkpoint holds, for any task's state dataclass: its arrays as one
tree, their shapes by path, and its step."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np


def step_of(state: Any) -> int:
  """The step of a train state (a population's members all take each step together)."""
  return int(np.asarray(jax.device_get(state.step)).reshape(-1)[0])


def saved_tree(state: Any) -> dict[str, Any]:
  """A train state's arrays as one tree, {field: value}: every field but the static ones (the
  apply function and the optimizer, which are code), and those marked saved_if_empty=False
  while they are empty (fields added later, that older checkpoints lack), for any task's state
  dataclass."""
  def saved(field: dataclasses.Field) -> bool:
    value = getattr(state, field.name)
    return field.metadata.get("pytree_node", True) and (
        field.metadata.get("saved_if_empty", True) or value != {})
  return {f.name: getattr(state, f.name) for f in dataclasses.fields(state) if saved(f)}


def state_shapes(state: Any) -> dict[str, tuple]:
  """A train state's array shapes by path, named as `Checkpointer.shapes` names a checkpoint's."""
  return shapes_by_path(saved_tree(state))


def _key_name(key: Any) -> str:
  for attr in ("key", "name", "idx"):  # DictKey, GetAttrKey (namedtuples), SequenceKey
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def shapes_by_path(tree: Any) -> dict[str, tuple]:
  """{"params/Dense_0/kernel": shape, ...}; optax's namedtuples and orbax's metadata dicts of them
  give the same names."""
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {"/".join(_key_name(k) for k in path): tuple(getattr(leaf, "shape", ()))
          for path, leaf in flat}
