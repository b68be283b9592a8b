"""MLP on MNIST: two hidden layers of 512 with dropout, Adam with a one-cycle schedule.

    python train.py --config=configs/mlp.py

Reaches 98.54% test accuracy (macro F1 0.9853) in 10 epochs: 27 s for the whole process on a
2-core CPU (see README).
"""

from __future__ import annotations

import ml_collections

from configs import common


def get_config() -> ml_collections.ConfigDict:
  c = common.base()
  c.model.name = "mlp"
  c.model.hidden = (512, 512)  # widths of the hidden layers
  c.model.dropout = 0.2  # after each hidden layer
  c.model.batch_norm = False  # after each hidden layer
  c.schedule = "onecycle"
  c.learning_rate = 2e-3
  c.num_epochs = 10
  return c
