"""The device mesh: every device (of every process) in a `jax.sharding.Mesh`; batches are split
along its "data" axis."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from training.errors import ConfigError


def check_shape(shape: Sequence, axes: Sequence[str]) -> None:
  """What can be checked of a mesh without the devices (the run's config check calls it too)."""
  shape, axes = tuple(shape), tuple(axes)
  if not shape or any(not isinstance(s, int) or isinstance(s, bool) or not (s == -1 or s >= 1)
                      for s in shape):
    raise ConfigError(f"mesh_shape must be whole numbers of devices per axis, each at least 1 or "
                      f"-1 (all the remaining devices), got {shape}: e.g. "
                      "--config.mesh_shape='(-1,)'.")
  if len(shape) != len(axes) or "data" not in axes:
    raise ConfigError(f"mesh_shape {shape} and mesh_axes {axes} must have the same length, and "
                      "one axis must be named 'data' (the batch is split along it).")


def make_mesh(shape: Sequence[int], axes: Sequence[str]):
  """A mesh of `shape` (one -1 = all the remaining devices) named `axes`; batches are split
  along "data". A mesh smaller than the devices uses the first ones (single process only)."""
  import jax
  from jax.experimental import mesh_utils
  check_shape(shape, axes)
  shape, axes = tuple(shape), tuple(axes)
  devices = jax.devices()
  if shape.count(-1) > 1:
    raise ConfigError(f"mesh_shape {shape}: at most one axis can be -1.")
  known = int(np.prod([s for s in shape if s != -1]))
  if -1 in shape:
    if len(devices) % known:
      raise ConfigError(f"mesh_shape {shape} cannot use the {len(devices)} devices: "
                        f"{len(devices)} is not a multiple of {known}.")
    shape = tuple(len(devices) // known if s == -1 else s for s in shape)
  size = int(np.prod(shape))
  if size > len(devices) or (size < len(devices) and jax.process_count() > 1):
    raise ConfigError(f"mesh_shape {shape} needs {size} devices; there are {len(devices)}"
                      f"{' (a multi-process mesh must use them all)' if size < len(devices) else ''}"
                      ". Use -1 for 'all the devices'.")
  return jax.sharding.Mesh(mesh_utils.create_device_mesh(shape, devices[:size]), axes)
