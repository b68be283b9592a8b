"""An ensemble of 5 members of configs/best.py (seeds 0-4), its test accuracy as the mean of the
members' softmax outputs, beside the members' mean +- std.

    python train.py --config=configs/ensemble.py

Until `population` exists this trains one member, exactly configs/best.py (its figure:
configs/best.py's docstring); with it, the 5 members train in one compiled program. The
ensemble's figure is to be measured (issue #35 asks >= 99.82%).
"""

from __future__ import annotations

import ml_collections

from configs import best


def get_config() -> ml_collections.ConfigDict:
  c = best.get_config()
  # With populations: c.population = 5 (the 5 members, seeds seed..seed+4, and their ensemble).
  return c
