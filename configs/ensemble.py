"""An ensemble of 5 members of configs/best.py (seeds 0-4) trained as one population: the
ensemble's test accuracy (the members' softmax outputs averaged) beside the members' mean +- std.

    python train.py --config=configs/ensemble.py

Not measured with 5 members yet (about 75 minutes on a 2-core CPU); 3 members of configs/best.py
(`python bench/accuracy.py --configs=best --seeds=3`): ensemble 99.xx%, members 99.xx +- 0.xx%.
"""

from __future__ import annotations

import ml_collections

from configs import best


def get_config() -> ml_collections.ConfigDict:
  c = best.get_config()
  c.population = 5  # seeds seed..seed+4, one compiled program; the ensemble is scored at the end
  return c
