"""Conditional DCGAN: digits of a requested class, judged by this project's own classifier.

    python train.py --config=configs/speedrun.py --workdir=runs/speedrun   # the judge, ~20 s
    python train.py --config=configs/cgan.py

The speedrun classifier recognizes the requested class in most of the generated digits (the
README's table has the percentage and the Frechet distance). A row of 7s:
`python train.py --mode=sample --workdir=runs/cgan --label=7 --num=10`.
"""

from __future__ import annotations

import ml_collections

from configs import dcgan


def get_config() -> ml_collections.ConfigDict:
  c = dcgan.get_config()
  c.model.name = "cgan"
  return c
