"""Multi-layer perceptron on flattened images."""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from nets import layers, register


class MLP(nn.Module):
  """Dense -> [BatchNorm] -> ReLU -> [Dropout] blocks, then a linear classifier."""
  num_classes: int = 10
  hidden: Sequence[int] = (512, 512)  # widths of the hidden layers
  dropout: float = 0.0  # after each hidden layer
  batch_norm: bool = False  # after each hidden layer's Dense (which then has no bias)
  dtype: Any = jnp.float32  # computation dtype; parameters stay float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    x = x.reshape((x.shape[0], -1)).astype(self.dtype)
    for width in self.hidden:
      # A bias is redundant in front of batch norm's own shift.
      x = nn.Dense(width, use_bias=not self.batch_norm, dtype=self.dtype)(x)
      if self.batch_norm:
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype)(x)
      x = nn.relu(x)
      x = layers.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)


register("mlp", MLP)
