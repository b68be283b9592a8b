"""Plain convolutional network: conv stages with pooling, then dense layers."""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from nets import register


class CNN(nn.Module):
  """Stages of Conv -> [BatchNorm] -> ReLU -> 2x2 pool, then Dense -> ReLU -> [Dropout] layers."""
  num_classes: int = 10
  features: Sequence[int] = (32, 64)
  kernel_size: int = 3
  convs_per_stage: int = 1
  dense: Sequence[int] = (256,)
  pool: str = "max"  # "max" or "avg"
  dropout: float = 0.0
  batch_norm: bool = False
  dtype: Any = jnp.float32  # computation dtype; parameters stay float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    if self.pool not in ("max", "avg"):
      raise ValueError(f"CNN.pool must be 'max' or 'avg', got {self.pool!r}.")
    pool = nn.max_pool if self.pool == "max" else nn.avg_pool
    x = x.astype(self.dtype)
    for width in self.features:
      for _ in range(self.convs_per_stage):
        k = (self.kernel_size, self.kernel_size)
        x = nn.Conv(width, k, use_bias=not self.batch_norm, dtype=self.dtype)(x)
        if self.batch_norm:
          x = nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype)(x)
        x = nn.relu(x)
      x = pool(x, (2, 2), strides=(2, 2))
    x = x.reshape((x.shape[0], -1))
    for width in self.dense:
      x = nn.relu(nn.Dense(width, dtype=self.dtype)(x))
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)


register("cnn", CNN)
# The network of the official Flax MNIST example, for side-by-side comparisons.
register("cnn_flax_example", functools.partial(CNN, features=(32, 64), dense=(256,), pool="avg"))
