"""Bidirectional GRU on MNIST rows: each image is a sequence of 28 rows of 28 pixels.

    python train.py --config=configs/rnn.py

Reaches 99.14 +- 0.04% test accuracy over 3 seeds (min 99.11%, max 99.19%), their ensemble 99.26%,
in 7 epochs: 298 s for the 3 seeds in one process on a 2-core CPU (docs/results.md).
"""

from __future__ import annotations

import ml_collections

from configs import common


def get_config() -> ml_collections.ConfigDict:
  c = common.base("rnn")
  c.model.cell = "gru"  # lstm or gru (3 gates to 4: cheaper; the LSTM got 98.96% in 6)
  c.model.bidirectional = True  # a backward pass too: the classifier sees both final states
  c.schedule = "onecycle"
  c.learning_rate = 3e-3
  c.grad_clip_norm = 1.0  # recurrent nets can have gradient spikes
  c.num_epochs = 7
  return c
