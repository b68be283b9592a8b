"""Plain convolutional network: conv stages with pooling, then dense layers."""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from nets import layers, register


def pool2x2(x: jnp.ndarray, how: str) -> jnp.ndarray:
  """2x2 max/avg pooling, stride 2 (VALID), as a reshape and a reduction.

  The same result as nn.max_pool/nn.avg_pool, cheaper to differentiate: XLA's gradient of
  nn.max_pool (select-and-scatter), and JAX's of a max reduction (which shares a window's
  gradient among tied maxima, in several passes), were the CNN step's largest costs on CPU
  (docs/performance.md). The custom gradient gives each window's gradient to its first maximum,
  PyTorch's rule, in one pass. A `jax.custom_vjp`, it supports `jax.grad` but not `jax.jvp`.
  """
  _, h, w, _ = x.shape
  x = x[:, :h // 2 * 2, :w // 2 * 2]
  return _max_pool2x2(x) if how == "max" else _windows(x).mean(axis=(2, 4))


def _windows(x: jnp.ndarray) -> jnp.ndarray:
  """(n, h, w, c) with even h, w -> (n, h/2, 2, w/2, 2, c): the 2x2 windows on axes 2 and 4."""
  n, h, w, c = x.shape
  return x.reshape(n, h // 2, 2, w // 2, 2, c)


@jax.custom_vjp
def _max_pool2x2(x: jnp.ndarray) -> jnp.ndarray:
  return _windows(x).max(axis=(2, 4))


def _max_pool2x2_fwd(x):
  pooled = _max_pool2x2(x)
  return pooled, (x, pooled)


def _max_pool2x2_bwd(residuals, g):
  x, pooled = residuals
  windows = _windows(x)
  # One elementwise pass: each window's gradient goes to its first maximum in row-major order.
  taken = jnp.zeros(pooled.shape, bool)
  grads = []
  for i in (0, 1):
    for j in (0, 1):
      hit = (windows[:, :, i, :, j] == pooled) & ~taken
      grads.append(jnp.where(hit, g, jnp.zeros_like(g)))
      taken = taken | hit
  rows = [jnp.stack(grads[2 * i:2 * i + 2], axis=3) for i in (0, 1)]  # (n, h/2, w/2, 2, c)
  return (jnp.stack(rows, axis=2).reshape(x.shape),)


_max_pool2x2.defvjp(_max_pool2x2_fwd, _max_pool2x2_bwd)


class CNN(nn.Module):
  """Stages of Conv -> [BatchNorm] -> ReLU that halve the resolution, then Dense layers.

  `weight_init` initializes convs and dense layers as flax does ("lecun": truncated-normal
  kernels, zero biases) or as PyTorch does ("torch"; `layers.init_args`).

  `downsample` halves each stage's output: "stride" makes the stage's last conv stride 2 (the
  cheapest: 4x less conv work), "max"/"avg" add a 2x2 pool.
  """
  num_classes: int = 10
  features: Sequence[int] = (32, 64)  # channels of each stage's convs (each halves the resolution)
  kernel_size: int = 3  # side of the square conv kernels
  convs_per_stage: int = 1  # convs in each stage before it halves the resolution
  dense: Sequence[int] = (128,)  # hidden dense widths before the classifier
  downsample: str = "max"  # "max", "avg" or "stride"
  dropout: float = 0.0  # after each hidden dense layer
  batch_norm: bool = False  # after each conv (which then has no bias)
  weight_init: str = "lecun"  # "lecun" (flax's defaults) or "torch" (PyTorch's defaults)
  dtype: Any = jnp.float32  # computation dtype; parameters stay float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    if self.downsample not in ("stride", "max", "avg"):
      raise ValueError(f"CNN.downsample must be 'stride', 'max' or 'avg', got "
                       f"{self.downsample!r}.")
    x = x.astype(self.dtype)
    k = (self.kernel_size, self.kernel_size)
    size = "x".join(map(str, x.shape[1:3]))
    for stage, width in enumerate(self.features):
      if self.downsample != "stride" and min(x.shape[1:3]) < 2:
        # A 2x2 pool of a 1-pixel side leaves nothing: say so, not a division by zero later.
        raise ValueError(f"{size} images are too small for {len(self.features)} stages that "
                         f"each halve them: after {stage} they are {x.shape[1]}x{x.shape[2]}; "
                         f"give --config.model.features at most {stage} entries")
      for i in range(self.convs_per_stage):
        strided = self.downsample == "stride" and i == self.convs_per_stage - 1
        init = layers.init_args(self.weight_init, self.kernel_size ** 2 * x.shape[-1])
        x = nn.Conv(width, k, strides=2 if strided else 1, use_bias=not self.batch_norm,
                    dtype=self.dtype, **init)(x)
        if self.batch_norm:
          x = nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype)(x)
        x = nn.relu(x)
      if self.downsample != "stride":
        x = pool2x2(x, self.downsample)
    x = x.reshape((x.shape[0], -1))
    dense = lambda width, x: nn.Dense(width, dtype=self.dtype,
                                      **layers.init_args(self.weight_init, x.shape[-1]))(x)
    for width in self.dense:
      x = nn.relu(dense(width, x))
      x = layers.Dropout(self.dropout, deterministic=not train)(x)
    return dense(self.num_classes, x).astype(jnp.float32)


register("cnn", CNN)
# Halves the resolution with strided convolutions instead of pooling: the same parameters,
# a quarter of the convolution work.
register("cnn_strided", functools.partial(CNN, downsample="stride"))
