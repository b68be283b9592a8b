"""Building blocks shared by several architectures (this file registers no model)."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp


def dropout_bits(rate: float) -> int:
  """Random bits per element that `Dropout` draws for `rate`: 8 where rounding the keep
  probability to a multiple of 1/256 moves both it and the rate by at most 2%, else 16, else 32."""
  for bits in (8, 16):
    kept = round((1.0 - rate) * 2**bits) / 2**bits
    if abs(kept - (1.0 - rate)) <= 0.02 * min(rate, 1.0 - rate):
      return bits
  return 32


class Dropout(nn.Module):
  """Inverted dropout, as `nn.Dropout`, from fewer random bits.

  nn.Dropout draws 32 random bits per element, and generating them (threefry) is a noticeable
  part of a small network's step; this draws 8 where it can (docs/performance.md). The
  keep probability becomes a multiple of 1/2**bits (see `dropout_bits`: rate 0.2 gives 0.19922),
  and kept values are scaled by the inverse of that exact probability, so the expected output
  still equals the input. `rate` may be a traced number (one per member of a population that
  sweeps it): that draws 16 bits, as its value is not known when the program is built.
  """
  rate: float
  deterministic: bool | None = None  # as in nn.Dropout: here or in the call
  rng_collection: str = "dropout"

  @nn.compact
  def __call__(self, x: jnp.ndarray, deterministic: bool | None = None) -> jnp.ndarray:
    deterministic = nn.merge_param("deterministic", self.deterministic, deterministic)
    traced = not isinstance(self.rate, (int, float))
    if not traced and not 0.0 <= self.rate <= 1.0:
      raise ValueError(f"Dropout rate must be in [0, 1], got {self.rate}.")
    if deterministic or (not traced and self.rate == 0.0):
      return x
    if traced:
      return _traced_dropout(x, jnp.asarray(self.rate), self.make_rng(self.rng_collection))
    if self.rate == 1.0:
      return jnp.zeros_like(x)
    bits = dropout_bits(self.rate)
    threshold = min(max(round((1.0 - self.rate) * 2**bits), 1), 2**bits - 1)
    per_word = 32 // bits
    # Words along the last axis only, so that the leading (batch) axis keeps its sharding.
    last = x.shape[-1] if x.ndim else 1
    words = jax.random.bits(self.make_rng(self.rng_collection),
                            (*x.shape[:-1], math.ceil(last / per_word)), jnp.uint32)
    if bits < 32:
      narrow = jnp.uint8 if bits == 8 else jnp.uint16
      words = jax.lax.bitcast_convert_type(words, narrow)  # (..., words, per_word)
      words = words.reshape((*x.shape[:-1], -1))[..., :last]
    keep = words.reshape(x.shape) < jnp.asarray(threshold, words.dtype)
    scale = jnp.asarray(2**bits / threshold, x.dtype)
    return jnp.where(keep, x * scale, jnp.zeros_like(x))


def _traced_dropout(x: jnp.ndarray, rate: jnp.ndarray, key: jax.Array) -> jnp.ndarray:
  """Dropout at a rate known only when the step runs: 16 random bits per element, the keep
  probability a multiple of 1/65536, rate 0 exactly the identity and rate 1 all zeros."""
  words = jax.random.bits(key, x.shape, jnp.uint16)
  threshold = jnp.clip(jnp.round((1.0 - rate) * 2**16), 1, 2**16 - 1)
  keep = words.astype(jnp.float32) < threshold
  dropped = jnp.where(keep, x * (2**16 / threshold).astype(x.dtype), jnp.zeros_like(x))
  return jnp.where(rate <= 0.0, x, jnp.where(rate >= 1.0, jnp.zeros_like(x), dropped))


INITS = ("lecun", "torch")


def init_args(init: str, fan_in: int) -> dict:
  """Keyword arguments of nn.Conv/nn.Dense for the initialization `init` of a layer with
  `fan_in` inputs per output (kernel_size ** 2 * in_channels for a conv).

  "lecun": flax's defaults, truncated-normal kernels of variance 1/fan_in and zero biases.
  "torch": PyTorch's defaults for Conv2d and Linear (kaiming_uniform with a=sqrt(5)): kernels
  and biases uniform in +-1/sqrt(fan_in), a third of lecun's kernel variance.
  """
  if init == "lecun":
    return {}
  if init != "torch":
    raise ValueError(f"init must be one of {', '.join(INITS)}, got {init!r}.")
  bound = 1.0 / math.sqrt(fan_in)

  def bias_init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return {"kernel_init": nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform"),
          "bias_init": bias_init}
