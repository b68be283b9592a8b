"""CNN on MNIST: two conv + max-pool stages and a dense layer, Adam with a one-cycle schedule.

    python train.py --config=configs/cnn.py

Reaches 99.23 +- 0.05% test accuracy over 5 seeds (0-4, trained as one population with
`--config.population=5`), their ensemble 99.31%, in 5 epochs: 349 s for all five in one process
on a 2-core CPU, 79 s for one seed (see README).
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
