"""MLP on MNIST: two hidden layers of 512 with dropout, Adam with a one-cycle schedule.

    python train.py --config=configs/mlp.py

Reaches 98.54 +- 0.06% test accuracy over 5 seeds (min 98.48%, max 98.63%), their ensemble 98.71%,
in 10 epochs: 85 s for the 5 seeds in one process on a 2-core CPU (docs/results.md).
"""

from __future__ import annotations

import ml_collections

from configs import common


def get_config() -> ml_collections.ConfigDict:
  c = common.base("mlp")
  c.model.dropout = 0.2  # after each hidden layer
  c.schedule = "onecycle"
  c.learning_rate = 2e-3
  c.num_epochs = 10
  return c
