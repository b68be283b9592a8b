"""MLP-Mixer (Tolstikhin et al. 2021), written in flax.nnx: patches mixed by MLPs across tokens
and across channels, with no convolution and no attention."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from nets import register


class MixerBlock(nnx.Module):
  """Pre-LN token mixing, then pre-LN channel mixing, each an MLP added back to its input."""

  def __init__(self, tokens: int, dim: int, token_mlp: int, channel_mlp: int, dropout: float,
               dtype: Any, *, rngs: nnx.Rngs):
    self.norm_tokens = nnx.LayerNorm(dim, dtype=dtype, rngs=rngs)
    self.token_in = nnx.Linear(tokens, token_mlp, dtype=dtype, rngs=rngs)
    self.token_out = nnx.Linear(token_mlp, tokens, dtype=dtype, rngs=rngs)
    self.norm_channels = nnx.LayerNorm(dim, dtype=dtype, rngs=rngs)
    self.channel_in = nnx.Linear(dim, channel_mlp, dtype=dtype, rngs=rngs)
    self.channel_out = nnx.Linear(channel_mlp, dim, dtype=dtype, rngs=rngs)
    self.dropout = nnx.Dropout(dropout)

  def __call__(self, x: jax.Array, *, train: bool, rngs: nnx.Rngs | None) -> jax.Array:
    y = self.norm_tokens(x).swapaxes(1, 2)  # (n, dim, tokens): an MLP over the tokens
    y = self.token_out(jax.nn.gelu(self.token_in(y))).swapaxes(1, 2)
    x = x + self._drop(y, train, rngs)
    y = self.channel_out(jax.nn.gelu(self.channel_in(self.norm_channels(x))))
    return x + self._drop(y, train, rngs)

  def _drop(self, y: jax.Array, train: bool, rngs: nnx.Rngs | None) -> jax.Array:
    # Not called in evaluation: jax2onnx (the ONNX export) replaces nnx.Dropout's call with one
    # that takes no `rngs`.
    return self.dropout(y, rngs=rngs) if train else y


class Mixer(nnx.Module):
  """Non-overlapping patches embedded linearly, `depth` mixer blocks, the mean token classified.

  An image whose side is no multiple of `patch_size` loses its last rows and columns."""

  def __init__(self,
               num_classes: int = 10,
               patch_size: int = 7,  # 28x28 -> 4x4 = 16 tokens
               dim: int = 64,  # channels of each token
               depth: int = 4,  # mixer blocks
               token_mlp: int = 32,  # hidden width of the MLP across tokens
               channel_mlp: int = 128,  # hidden width of the MLP across channels
               dropout: float = 0.0,  # on each block's two MLP outputs
               dtype: Any = jnp.float32,  # computation dtype; parameters stay float32
               *, input_shape: tuple[int, int, int], rngs: nnx.Rngs):
    h, w, c = input_shape
    self.patch_size, self.dtype, self.depth = patch_size, dtype, depth
    tokens = (h // patch_size) * (w // patch_size)
    if not tokens:
      raise ValueError(f"{h}x{w} images have no {patch_size}x{patch_size} patch: give "
                       f"--config.model.patch_size at most {min(h, w)}")
    self.embed = nnx.Linear(patch_size * patch_size * c, dim, dtype=dtype, rngs=rngs)
    # Blocks as attributes block0, block1, ...: a list of modules needs nnx.List in flax 0.12,
    # which flax 0.10 lacks.
    for i in range(depth):
      setattr(self, f"block{i}", MixerBlock(tokens, dim, token_mlp, channel_mlp, dropout, dtype,
                                            rngs=rngs))
    self.norm = nnx.LayerNorm(dim, dtype=dtype, rngs=rngs)
    self.head = nnx.Linear(dim, num_classes, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array, *, train: bool, rngs: nnx.Rngs | None = None) -> jax.Array:
    n, h, w, c = x.shape
    p = self.patch_size
    x = x[:, :h // p * p, :w // p * p].astype(self.dtype)
    x = x.reshape(n, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    x = self.embed(x.reshape(n, (h // p) * (w // p), p * p * c))
    for i in range(self.depth):
      x = getattr(self, f"block{i}")(x, train=train, rngs=rngs)
    return self.head(self.norm(x).mean(axis=1)).astype(jnp.float32)


register("mixer", Mixer)
