"""Recurrent network that reads an image row by row: each row (W*C values) is one time step.

A classic sequence-model benchmark ("row-sequential MNIST"): the network sees the digit as 28
steps of 28 pixels and must carry what it saw in its state. Stacked LSTM or GRU layers via
flax's `nn.RNN` (a `lax.scan` over time), optionally bidirectional, then a linear classifier on
the final state or on the mean over time.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from nets import layers, register

# OptimizedLSTMCell has LSTMCell's parameters but computes the four gates in one matmul.
CELLS = {"lstm": nn.OptimizedLSTMCell, "gru": nn.GRUCell}


class RNN(nn.Module):
  """`layers` recurrent layers of `hidden` units (2*hidden when bidirectional), then Dense."""
  num_classes: int = 10
  cell: str = "lstm"  # "lstm" or "gru"
  hidden: int = 128  # units of each layer's cell (per direction)
  layers: int = 1  # stacked recurrent layers
  bidirectional: bool = False  # also read the rows bottom-up, and concatenate
  pool: str = "last"  # "last": the final state of each direction; "mean": mean over time
  dropout: float = 0.0  # between layers and before the classifier
  dtype: Any = jnp.float32  # computation dtype; parameters (and the carried state) stay float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    if self.cell not in CELLS:
      raise ValueError(f"RNN.cell must be one of {sorted(CELLS)}, got {self.cell!r}.")
    if self.pool not in ("last", "mean"):
      raise ValueError(f"RNN.pool must be 'last' or 'mean', got {self.pool!r}.")
    n, h = x.shape[:2]
    x = x.reshape((n, h, -1)).astype(self.dtype)  # (batch, time = rows, features = W*C)
    # Named cells ("layer0_forward", ...): the parameter tree says which direction is which.
    make = lambda name: nn.RNN(CELLS[self.cell](self.hidden, dtype=self.dtype, name=name))
    for i in range(self.layers):
      if i:
        x = layers.Dropout(self.dropout, deterministic=not train)(x)
      if self.bidirectional:
        x = nn.Bidirectional(make(f"layer{i}_forward"), make(f"layer{i}_backward"))(x)
      else:
        x = make(f"layer{i}")(x)
    if self.pool == "mean":
      x = x.mean(axis=1)
    elif self.bidirectional:
      # The backward direction's outputs are kept in input order, so its final state (having
      # read the whole image) sits at the first step, not the last.
      x = jnp.concatenate([x[:, -1, :self.hidden], x[:, 0, self.hidden:]], axis=-1)
    else:
      x = x[:, -1]
    x = layers.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)


register("rnn", RNN)
