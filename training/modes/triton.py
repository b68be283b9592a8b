"""A Triton Inference Server model repository of an exported ONNX model (--formats=...,triton):
the way to serve a model at scale, on many machines and GPUs, with Triton's own batching.

    triton/<name>/config.pbtxt   the model's configuration: inputs, outputs, dynamic batching
    triton/<name>/labels.txt     the class names, one a line (Triton's classification extension)
    triton/<name>/1/model.onnx   version 1 of the model: the export's model.onnx

`tritonserver --model-repository=<export>/triton` serves it (docs/serve.md).
"""

from __future__ import annotations

import re
from typing import Any

DIRECTORY = "triton"
# Triton's names of the ONNX tensor types the export uses.
DATA_TYPES = {"uint8": "TYPE_UINT8", "float32": "TYPE_FP32"}
# Triton waits at most this long for a request to join a batch: the server's own window's scale.
QUEUE_DELAY_US = 2000


def model_name(meta: dict[str, Any]) -> str:
  """The model's name in the repository: its dataset's and architecture's, as Triton allows."""
  return re.sub(r"[^A-Za-z0-9_-]", "_", f"{meta.get('dataset', 'mnist')}_{meta['model']}")


def repository(onnx: bytes, meta: dict[str, Any], max_batch: int = 64) -> dict[str, bytes]:
  """{path under the export folder: content} of the repository for the ONNX model `onnx`
  described by model.json's `meta`."""
  name = model_name(meta)
  return {f"{DIRECTORY}/{name}/config.pbtxt": config(meta, name, max_batch).encode(),
          f"{DIRECTORY}/{name}/labels.txt": "".join(f"{n}\n" for n in meta["class_names"]
                                                    ).encode(),
          f"{DIRECTORY}/{name}/1/model.onnx": onnx}


def config(meta: dict[str, Any], name: str, max_batch: int) -> str:
  """config.pbtxt: the batch dimension is left out of the dims (max_batch_size > 0 says that
  the first dimension is the batch); dynamic batching prefers the larger powers of two."""
  tensor = "    {{ name: \"{}\" data_type: {} dims: [ {} ]{} }}"
  image, output = meta["input"], meta["output"]
  preferred = [b for b in (8, 16, 32, 64, 128) if b <= max_batch] or [max_batch]
  return "\n".join([
      f'name: "{name}"',
      'platform: "onnxruntime_onnx"',
      f"max_batch_size: {max_batch}",
      "input [",
      tensor.format(image["name"], DATA_TYPES[image["dtype"]],
                    ", ".join(map(str, image["shape"][1:])), ""),
      "]",
      "output [",
      tensor.format(output["name"], DATA_TYPES[output["dtype"]],
                    ", ".join(map(str, output["shape"][1:])), ' label_filename: "labels.txt"'),
      "]",
      "dynamic_batching {",
      f"  preferred_batch_size: [ {', '.join(map(str, preferred))} ]",
      f"  max_queue_delay_microseconds: {QUEUE_DELAY_US}",
      "}",
      "instance_group [ { kind: KIND_AUTO count: 1 } ]",
      ""])
