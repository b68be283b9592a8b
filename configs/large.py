"""Accelerator tier: a wide residual net (128-256-512 channels) in the class of ttdoucet/mnist's,
batch norm, no label smoothing, dropout, weight decay or moving average, stronger augmentation.

    python train.py --config=configs/large.py

A 64-channel 3x3 stem at full resolution, then one basic residual block per stage at 28x28,
14x14 and 7x7 (128, 256, 512 channels): 4.8 M parameters, about 490 M multiply-adds per image
(ttdoucet's net: 329 M). Augmentation: a shift of up to 2 pixels with a zoom of up to 10% (a
random crop resized, in one resampling), rotation by up to 10 degrees and a mild, smooth elastic
warp. Its accuracy waits for a device: over seeds (mean +- std, and their ensemble) where an
accelerator is lent, as no run fits this CPU's time; one epoch takes about 64 minutes on a
2-core CPU, extrapolated from 12 steps under other jobs' load (docs/performance.md, "configs/large.py on
the CPU"), so its 15 epochs about 16 hours.
"""

from __future__ import annotations

import ml_collections

from configs import common


def get_config() -> ml_collections.ConfigDict:
  c = common.base("resnet")  # its default strides: stages at 28x28, 14x14 and 7x7
  c.model.stem_features = 64
  c.model.features = (128, 256, 512)
  c.schedule = "onecycle"  # configs/resnet.py's recipe
  c.learning_rate = 3e-3
  c.augment.shift = 2.0  # pixels
  c.augment.zoom = 0.1  # with the shift: a random crop of 25-28 pixels resized (and zoom-outs)
  c.augment.rotate = 10.0  # degrees
  c.augment.elastic = 8.0  # pixels: a mild warp, far below Simard et al.'s 34
  c.augment.elastic_sigma = 6.0  # pixels: a smooth field, a few bends across a digit
  c.num_epochs = 15
  return c
