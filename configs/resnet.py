"""ResNet on MNIST: a 3x3 stem and three stages of basic residual blocks, Adam, one-cycle.

    python train.py --config=configs/resnet.py

Reaches 99.15 +- 0.01% test accuracy over 3 seeds (min 99.14%, max 99.15%), their ensemble 99.35%,
in 5 epochs: 250 s for the 3 seeds in one process on a 2-core CPU (docs/results.md).
"""

from __future__ import annotations

import ml_collections

from configs import common


def get_config() -> ml_collections.ConfigDict:
  c = common.base("resnet")
  c.model.strides = (2, 2, 2)  # each stage halves the resolution: 28 -> 14 -> 7 -> 4
  c.schedule = "onecycle"
  c.learning_rate = 3e-3
  c.num_epochs = 5
  return c
