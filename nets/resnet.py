"""Small residual network: stages of basic residual blocks with batch norm, global average pool.

The basic block of ResNet-18/34 (two 3x3 convs, post-activation, as in He et al. 2016), sized
for small images: a 3x3 stem instead of ImageNet's 7x7 stride-2 conv and max pool, and a stride
per stage, so that on 28x28 digits the expensive full-resolution stages can be skipped.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from nets import layers, register


class BasicBlock(nn.Module):
  """conv3x3(stride) -> BN -> ReLU -> conv3x3 -> BN, plus the shortcut, then ReLU."""
  features: int
  strides: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    # Batch norm's own shift makes a conv bias redundant.
    conv = lambda f, k, s, name: nn.Conv(f, (k, k), strides=s, use_bias=False, dtype=self.dtype,
                                         name=name)
    norm = lambda name, **kw: nn.BatchNorm(use_running_average=not train, momentum=0.9,
                                           dtype=self.dtype, name=name, **kw)
    y = nn.relu(norm("bn1")(conv(self.features, 3, self.strides, "conv1")(x)))
    # Zero-initialised last scale: each block starts as ReLU(shortcut), close to the identity,
    # which makes the first steps of a deep stack easier (Goyal et al. 2017).
    y = norm("bn2", scale_init=nn.initializers.zeros)(conv(self.features, 3, 1, "conv2")(y))
    if self.strides != 1 or x.shape[-1] != self.features:
      # Projection shortcut: the identity cannot change resolution or width.
      x = norm("proj_bn")(conv(self.features, 1, self.strides, "proj")(x))
    return nn.relu(x + y)


class ResNet(nn.Module):
  """Stem conv, then per stage `blocks` basic blocks of `features[i]` channels whose first block
  has stride `strides[i]` (2 halves the resolution, with a projection shortcut), then the mean
  over space and a linear classifier."""
  num_classes: int = 10
  stem_features: int = 16  # channels of the 3x3 stem conv
  features: Sequence[int] = (16, 32, 64)  # channels of each stage
  blocks: Sequence[int] = (1, 1, 1)  # residual blocks per stage
  strides: Sequence[int] = (1, 2, 2)  # stride of each stage's first block
  dropout: float = 0.0  # before the classifier
  dtype: Any = jnp.float32  # computation dtype; parameters stay float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    if not len(self.features) == len(self.blocks) == len(self.strides):
      raise ValueError(f"ResNet.features, blocks and strides need one entry per stage, got "
                       f"{len(self.features)}, {len(self.blocks)} and {len(self.strides)}.")
    x = x.astype(self.dtype)
    x = nn.Conv(self.stem_features, (3, 3), use_bias=False, dtype=self.dtype)(x)
    x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype)(x))
    for width, count, stride in zip(self.features, self.blocks, self.strides):
      for i in range(count):
        x = BasicBlock(width, stride if i == 0 else 1, dtype=self.dtype)(x, train=train)
    # Global average pooling: no dense layer tied to the input size, so any image shape works.
    x = x.mean(axis=(1, 2))
    x = layers.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)


register("resnet", ResNet)
