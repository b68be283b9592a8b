"""MobileNet-style net on MNIST: a stride-2 stem, then depthwise-separable blocks, Adam, one-cycle.

    python train.py --config=configs/mobilenet.py

Reaches 99.06 +- 0.04% test accuracy over 3 seeds (min 99.01%, max 99.09%), their ensemble 99.22%,
in 6 epochs: 322 s for the 3 seeds in one process on a 2-core CPU (docs/results.md).
"""

from __future__ import annotations

import ml_collections

from configs import common


def get_config() -> ml_collections.ConfigDict:
  c = common.base("mobilenet")
  c.model.stem_features = 32  # channels of the full 3x3 stem conv
  c.model.stem_stride = 2  # 28 -> 14 at once: at full resolution steps were 6x slower
  c.model.features = (64, 128, 128, 256)  # pointwise channels of each separable block
  c.schedule = "onecycle"
  c.learning_rate = 3e-3
  c.num_epochs = 6
  return c
