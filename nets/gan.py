"""DCGAN for 28x28 images, and its class-conditional variant, as one module holding both networks.

One module, so that `init` and the checkpoints see one parameter tree
{"generator": ..., "discriminator": ...}; the training step applies each half by method:

    model.apply(variables, z, labels, train=True, method="generate")      # -> images in [-1, 1]
    model.apply(variables, images, labels, train=True, method="discriminate")  # -> logits (N,)

The conditional variant ("cgan") feeds the one-hot class to the generator beside the noise, and
scores images with a projection discriminator (Miyato & Koyama, 2018): the logit gains the inner
product of the class's learned embedding with the image's features.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from nets import register


def upsample_conv(x: jnp.ndarray, features: int, use_bias: bool, dtype: Any) -> jnp.ndarray:
  """A learned 2x upsampling: a 3x3 convolution to 4x the channels, then depth-to-space.

  A sub-pixel convolution: it can express any 4x4 stride-2 transposed convolution (each of the
  four output phases sees a 2x2 window of the 3x3 one), and on XLA:CPU its gradient is several
  times faster than nn.ConvTranspose's.
  """
  y = nn.Conv(4 * features, (3, 3), use_bias=use_bias, dtype=dtype)(x)
  n, h, w, _ = y.shape
  y = y.reshape(n, h, w, 2, 2, features).transpose(0, 1, 3, 2, 4, 5)
  return y.reshape(n, 2 * h, 2 * w, features)


class Generator(nn.Module):
  """Noise (and class) -> Dense -> BN-ReLU learned 2x upsamplings -> tanh."""
  widths: Sequence[int]
  num_classes: int
  conditional: bool
  image_shape: tuple[int, int, int]
  dtype: Any

  @nn.compact
  def __call__(self, z: jnp.ndarray, labels: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    h, w, c = self.image_shape
    scale = 2 ** len(self.widths)
    if h % scale or w % scale:
      raise ValueError(f"Generator widths {tuple(self.widths)} upsample {scale}x, which does not "
                       f"divide the {h}x{w} images.")
    x = z.astype(self.dtype)
    if self.conditional:
      x = jnp.concatenate([x, nn.one_hot(labels, self.num_classes, dtype=self.dtype)], -1)
    norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9,
                             dtype=self.dtype)
    x = nn.Dense(h // scale * w // scale * self.widths[0], use_bias=False, dtype=self.dtype)(x)
    x = nn.relu(norm()(x)).reshape((-1, h // scale, w // scale, self.widths[0]))
    for width in self.widths[1:]:
      x = nn.relu(norm()(upsample_conv(x, width, False, self.dtype)))
    x = upsample_conv(x, c, True, self.dtype)
    return jnp.tanh(x).astype(jnp.float32)


class Discriminator(nn.Module):
  """Strided 4x4 convolutions with leaky ReLU -> a logit; conditional: plus a class projection."""
  widths: Sequence[int]
  num_classes: int
  conditional: bool
  dtype: Any

  @nn.compact
  def __call__(self, images: jnp.ndarray, labels: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    del train  # no batch norm or dropout: real and fake batches never share statistics
    x = images.astype(self.dtype)
    for width in self.widths:
      x = nn.leaky_relu(nn.Conv(width, (4, 4), strides=(2, 2), dtype=self.dtype)(x), 0.2)
    x = x.reshape((x.shape[0], -1))
    logits = nn.Dense(1, dtype=self.dtype)(x)[:, 0]
    if self.conditional:
      embedding = nn.Embed(self.num_classes, x.shape[-1], dtype=self.dtype)(labels)
      logits = logits + jnp.sum(embedding * x, -1)
    return logits.astype(jnp.float32)


class DCGAN(nn.Module):
  """A generator of `image_shape` images from `latent_dim` normal noise and a discriminator.

  `widths`: the generator's channels, from its first (smallest) feature map up, each after the
  first doubling the side, and a last doubling to the image's channels; `d_widths`: the discriminator's strided convolutions' channels.
  `num_classes` and `labels` matter only when `conditional`.
  """
  latent_dim: int = 64  # size of the generator's normal noise input
  widths: Sequence[int] = (64, 32)  # the generator's channels, smallest feature map first
  d_widths: Sequence[int] = (32, 64)  # the discriminator's strided convolutions' channels
  num_classes: int = 10
  conditional: bool = False  # draw (and judge) images of a given class
  image_shape: tuple[int, int, int] = (28, 28, 1)  # what the generator draws (H, W, C)
  dtype: Any = jnp.float32  # computation dtype; parameters stay float32

  def setup(self):
    self.generator = Generator(self.widths, self.num_classes, self.conditional,
                               tuple(self.image_shape), self.dtype)
    self.discriminator = Discriminator(self.d_widths, self.num_classes, self.conditional,
                                       self.dtype)

  def generate(self, z: jnp.ndarray, labels: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    """(N, latent_dim) noise and (N,) int labels -> (N, *image_shape) images in [-1, 1]."""
    return self.generator(z, labels, train=train)

  def discriminate(self, images: jnp.ndarray, labels: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    """(N, *image_shape) images in [-1, 1] and (N,) labels -> (N,) logits of "real"."""
    return self.discriminator(images, labels, train=train)

  def __call__(self, z: jnp.ndarray, labels: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    return self.discriminate(self.generate(z, labels, train=train), labels, train=train)


register("dcgan", DCGAN, kind="gan")
register("cgan", functools.partial(DCGAN, conditional=True), kind="gan")
