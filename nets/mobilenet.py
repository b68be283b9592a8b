"""MobileNet-style network: depthwise-separable convolutions (Howard et al. 2017).

A 3x3 conv from C to F channels costs 9*C*F multiply-adds per pixel; split into a depthwise 3x3
(each channel filtered on its own, 9*C) and a pointwise 1x1 that mixes channels (C*F), it costs
about 8-9x less for the same receptive field, at a small cost in accuracy.

The depthwise conv is an `nn.Conv(feature_group_count=channels)` kernel, (k, k, 1, channels).
XLA:CPU is slow at grouped convolutions, so by default (`depthwise="shifted"`) the same kernel is
applied as k*k shifted multiply-adds over the padded input: the same result and parameters, and
a train step several times faster on CPU (docs/performance.md). `depthwise="conv"` uses the
grouped convolution (for GPU/TPU).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from nets import layers, register


class DepthwiseConv(nn.Module):
  """Depthwise k x k conv with SAME padding and no bias: the kernel (k, k, 1, C), init and output
  of `nn.Conv(C, (k, k), strides, feature_group_count=C, use_bias=False)`, computed by `impl`."""
  kernel_size: int = 3
  strides: int = 1
  impl: str = "shifted"  # "shifted" or "conv"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    k, s, c = self.kernel_size, self.strides, x.shape[-1]
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (k, k, 1, c))
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    if self.impl == "conv":
      return jax.lax.conv_general_dilated(x, kernel, (s, s), "SAME", feature_group_count=c,
                                          dimension_numbers=("NHWC", "HWIO", "NHWC"))
    # SAME as XLA defines it: ceil(n / s) outputs; an odd pixel of padding goes at the end.
    out = [math.ceil(n / s) for n in x.shape[1:3]]
    pad = [max((o - 1) * s + k - n, 0) for o, n in zip(out, x.shape[1:3])]
    x = jnp.pad(x, ((0, 0), (pad[0] // 2, pad[0] - pad[0] // 2),
                    (pad[1] // 2, pad[1] - pad[1] // 2), (0, 0)))
    return sum(x[:, i:i + (out[0] - 1) * s + 1:s, j:j + (out[1] - 1) * s + 1:s] * kernel[i, j, 0]
               for i in range(k) for j in range(k))


class MobileNet(nn.Module):
  """A full 3x3 stem conv, then depthwise-separable blocks: depthwise 3x3 (stride `strides[i]`)
  -> BN -> ReLU6 -> pointwise 1x1 to `features[i]` -> BN -> ReLU6; global average pool, linear.
  """
  num_classes: int = 10
  stem_features: int = 16  # channels of the full 3x3 stem conv
  stem_stride: int = 1  # its stride (2 halves the resolution at once)
  features: Sequence[int] = (32, 64, 64, 128)  # pointwise output channels of each block
  strides: Sequence[int] = (1, 2, 1, 2)  # stride of each block's depthwise conv
  depthwise: str = "shifted"  # how depthwise convs are computed: "shifted" or "conv" (see above)
  dropout: float = 0.0  # before the classifier
  dtype: Any = jnp.float32  # computation dtype; parameters stay float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    if self.depthwise not in ("shifted", "conv"):
      raise ValueError(f"MobileNet.depthwise must be 'shifted' or 'conv', got "
                       f"{self.depthwise!r}.")
    if len(self.features) != len(self.strides):
      raise ValueError(f"MobileNet.features and strides need one entry per block, got "
                       f"{len(self.features)} and {len(self.strides)}.")

    def norm_act(y):
      y = nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype)(y)
      # ReLU6, as in MobileNet: bounded activations keep low-precision compute (bfloat16) safe.
      return nn.relu6(y)

    x = x.astype(self.dtype)
    # The stem is a full conv: a depthwise conv on 1-3 input channels could not mix them.
    # No conv has a bias: batch norm's shift replaces it.
    x = norm_act(nn.Conv(self.stem_features, (3, 3), strides=self.stem_stride, use_bias=False,
                         dtype=self.dtype)(x))
    for width, stride in zip(self.features, self.strides):
      x = norm_act(DepthwiseConv(3, stride, self.depthwise, dtype=self.dtype)(x))
      x = norm_act(nn.Conv(width, (1, 1), use_bias=False, dtype=self.dtype)(x))
    x = x.mean(axis=(1, 2))  # global average pool: any input size works
    x = layers.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)


register("mobilenet", MobileNet)
