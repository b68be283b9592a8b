"""CNN on MNIST: two conv + max-pool stages and a dense layer, Adam with a one-cycle schedule.

    python train.py --config=configs/cnn.py

Reaches 99.23 +- 0.05% test accuracy over 5 seeds (min 99.14%, max 99.28%), their ensemble 99.31%,
in 5 epochs: 349 s for the 5 seeds in one process on a 2-core CPU (docs/results.md).
"""

from __future__ import annotations

import ml_collections

from configs import common


def get_config() -> ml_collections.ConfigDict:
  c = common.base("cnn")
  c.schedule = "onecycle"
  c.learning_rate = 3e-3
  c.num_epochs = 5
  return c
