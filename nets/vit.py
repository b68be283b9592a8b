"""Small Vision Transformer (Dosovitskiy et al. 2021): the image as a sequence of patches.

Non-overlapping patches are embedded by one strided conv (the same as a Dense on each flattened
patch), given learned position embeddings, and run through pre-LayerNorm transformer blocks
(LayerNorm before attention and before the MLP, as in ViT: it trains more stably than the
original post-LN transformer). A class token or the mean over patches feeds the classifier.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from nets import layers, register


class EncoderBlock(nn.Module):
  """x + Attention(LN(x)), then x + MLP(LN(x))."""
  num_heads: int
  mlp_dim: int
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    drop = lambda y: layers.Dropout(self.dropout, deterministic=not train)(y)
    y = nn.LayerNorm(dtype=self.dtype)(x)
    y = nn.MultiHeadDotProductAttention(num_heads=self.num_heads, dtype=self.dtype)(y, y)
    x = x + drop(y)
    y = nn.LayerNorm(dtype=self.dtype)(x)
    y = nn.gelu(nn.Dense(self.mlp_dim, dtype=self.dtype)(y))
    y = nn.Dense(x.shape[-1], dtype=self.dtype)(drop(y))
    return x + drop(y)


class ViT(nn.Module):
  """Patch embedding -> [class token] + position embeddings -> `depth` encoder blocks -> LN ->
  class token (pool="cls") or mean over patches (pool="mean") -> Dense."""
  num_classes: int = 10
  patch_size: int = 4  # must divide the image's height and width (4 divides 28 and 32)
  dim: int = 64  # token width
  depth: int = 4  # encoder blocks
  num_heads: int = 4  # dim must be a multiple of it
  mlp_dim: int = 128  # hidden width of each block's MLP
  pool: str = "cls"  # "cls" or "mean"
  dropout: float = 0.0  # on embeddings, attention and MLP outputs
  dtype: Any = jnp.float32  # computation dtype; parameters stay float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    _, h, w, _ = x.shape
    p = self.patch_size
    if h % p or w % p:
      raise ValueError(f"ViT.patch_size {p} does not divide the image size {h}x{w}: choose a "
                       f"patch size that divides both (e.g. {_common_divisor(h, w)}).")
    if self.pool not in ("cls", "mean"):
      raise ValueError(f"ViT.pool must be 'cls' or 'mean', got {self.pool!r}.")
    x = nn.Conv(self.dim, (p, p), strides=p, padding="VALID", dtype=self.dtype,
                name="patch_embed")(x.astype(self.dtype))
    x = x.reshape((x.shape[0], -1, self.dim))  # (batch, patches, dim), in raster order
    if self.pool == "cls":
      cls = self.param("cls_token", nn.initializers.zeros, (1, 1, self.dim))
      x = jnp.concatenate([jnp.broadcast_to(cls, (x.shape[0], 1, self.dim)).astype(x.dtype), x],
                          axis=1)
    # Learned and sized at init from the input: the model is tied to one image size, like any
    # ViT (changing it would need interpolating these).
    pos = self.param("pos_embedding", nn.initializers.normal(stddev=0.02), (1, *x.shape[1:]))
    x = layers.Dropout(self.dropout, deterministic=not train)(x + pos.astype(x.dtype))
    for _ in range(self.depth):
      x = EncoderBlock(self.num_heads, self.mlp_dim, self.dropout, dtype=self.dtype)(x,
                                                                                  train=train)
    x = nn.LayerNorm(dtype=self.dtype)(x)
    x = x[:, 0] if self.pool == "cls" else x.mean(axis=1)
    return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)


def _common_divisor(h: int, w: int) -> int:
  """The largest divisor of both sides that is at most 8 (a sensible patch size)."""
  return max(d for d in range(1, 9) if h % d == 0 and w % d == 0)


register("vit", ViT)
