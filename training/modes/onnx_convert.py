"""The ONNX model of an export (`model.onnx`): the exported function converted by jax2onnx, with
the converter's gaps named (the operation and where the model uses it) and its leftovers tidied.
jax2onnx is the `export` extra's, in a venv of its own (.ci/export-venv)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import re
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax import export as jax_export  # jax 0.7.1 has no jax.export until it is imported

from training.errors import ConfigError
from training.compute import device

# ONNX opset 17 (of 2022): current runtimes read it (onnxruntime since 1.13), and every model
# here converts to it.
ONNX_OPSET = 17
# jnp.shape as JAX defines it (jax2onnx replaces it while it traces: see `_with_static_jnp_shape`).
_JNP_SHAPE = jnp.shape

Probabilities = Callable[[jax.Array], jax.Array]


class ExportError(ConfigError):
  """An export that cannot be made as asked; the message says why and what to do."""


class UnsupportedOperationError(ExportError):
  """The model uses an operation that the target format (or its converter) cannot express."""


def input_spec(shape: tuple[int, ...]) -> jax.ShapeDtypeStruct:
  """uint8 images of `shape` (H, W, C) with a symbolic batch size."""
  dims = jax_export.symbolic_shape(f"batch, {', '.join(str(d) for d in shape)}")
  return jax.ShapeDtypeStruct(dims, jnp.uint8)


def onnx_available() -> bool:
  return all(importlib.util.find_spec(m) is not None for m in ("jax2onnx", "onnxruntime"))


def export_onnx(probabilities: Probabilities, shape: tuple[int, ...], model_name: str) -> bytes:
  """The ONNX model of `probabilities`, converted by jax2onnx; raises UnsupportedOperationError
  naming the first operation that it cannot convert."""
  if not onnx_available():
    raise ExportError("jax2onnx and onnxruntime were not installed where the export ran: pip "
                      "install -e '.[export]' (in a venv of its own, see docs/export.md).")
  import jax2onnx
  import onnx
  # onnx_ir warns of every shape-only value it skips: intermediate shapes, dropped anyway.
  logging.getLogger("onnx_ir.serde").setLevel(logging.ERROR)
  try:
    proto = jax2onnx.to_onnx(_with_static_jnp_shape(probabilities), [input_spec(shape)],
                             model_name=model_name, opset=ONNX_OPSET, input_names=["images"],
                             output_names=["probabilities"])
  except NotImplementedError as e:
    found = re.search(r"primitive '([^']+)'", str(e))
    if not found:
      raise
    raise UnsupportedOperationError(
        f"Cannot export {model_name!r} to ONNX: jax2onnx {version('jax2onnx')} has no "
        f"conversion for the JAX operation {found.group(1)!r}"
        f"{_where(probabilities, shape, found.group(1))}.") from e
  _tidy(proto.graph, onnx)
  return proto.SerializeToString()


def _with_static_jnp_shape(fn: Probabilities) -> Probabilities:
  """`fn`, traced with JAX's own `jnp.shape`.

  While it traces, jax2onnx (0.17) replaces `jnp.shape` by an operation that returns the shape
  as a traced array. Flax's `nn.scan` (inside `nn.RNN`) calls `jnp.shape` to build its carry's
  type and fails on a traced one ("Shapes must be 1D sequences of concrete values"). The models
  here never need a traced shape (the symbolic batch size stays symbolic either way), so the
  original is put back while the model is traced."""
  def traced(images: jax.Array) -> jax.Array:
    replaced, jnp.shape = jnp.shape, _JNP_SHAPE
    try:
      return fn(images)
    finally:
      jnp.shape = replaced
  return traced


def _where(fn: Probabilities, shape: tuple[int, ...], primitive: str) -> str:
  """' (at file:line (function))': where the model's code uses `primitive`, if found."""
  from jax.extend import source_info_util
  jaxpr = jax.make_jaxpr(fn)(input_spec(shape)).jaxpr
  for eqn in (e for j in device.jaxprs_within(jaxpr) for e in j.eqns):
    if eqn.primitive.name == primitive:
      return f" (at {source_info_util.summarize(eqn.source_info)})"
  return ""


def _tidy(graph: Any, onnx: Any) -> None:
  """Drops what jax2onnx 0.17 leaves that runtimes warn about: intermediate shapes, some in
  the wrong layout (NHWC for NCHW convolutions), which onnxruntime infers again anyway, and
  constants that a loop body no longer uses."""
  del graph.value_info[:]
  used = {name for node in graph.node for name in node.input}
  used.update(output.name for output in graph.output)
  for node in graph.node:
    for attribute in node.attribute:
      if attribute.type == onnx.AttributeProto.GRAPH:
        _tidy(attribute.g, onnx)
        used.update(_outer_names(attribute.g, onnx))
  kept = [init for init in graph.initializer if init.name in used]
  del graph.initializer[:]
  graph.initializer.extend(kept)


def _outer_names(graph: Any, onnx: Any) -> set[str]:
  """Every name that the nodes of `graph` and of its subgraphs read (some from outer scopes)."""
  names = {name for node in graph.node for name in node.input}
  for node in graph.node:
    for attribute in node.attribute:
      if attribute.type == onnx.AttributeProto.GRAPH:
        names |= _outer_names(attribute.g, onnx)
  return names



def version(package: str) -> str | None:
  """The installed version of `package`, or None."""
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return None
