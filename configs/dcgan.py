"""DCGAN: a generator of digits from noise, trained against a strided-convolution discriminator.

    python train.py --config=configs/speedrun.py --workdir=runs/speedrun   # the judge, ~15 s
    python train.py --config=configs/dcgan.py

Scored every epoch with the classifier in runs/speedrun (`--config.gan.eval_classifier`): after
15 epochs a Frechet distance of 4.14 to the test images (40x the train-vs-test 0.10; the
conditional configs/cgan.py: 4.7x), all ten digits drawn (entropy 3.28 of 3.32 bits, 99% of the
maximum). Samples: runs/dcgan/samples/; more with `python train.py --mode=sample
--workdir=runs/dcgan`.
"""

from __future__ import annotations

import ml_collections

from configs import common


def get_config(model: str = "dcgan") -> ml_collections.ConfigDict:
  """`model`: "dcgan", or "cgan" for configs/cgan.py."""
  c = common.base(model)
  c.task = "gan"
  c.model.widths = (128, 64)  # the generator's channels at 7x7 and 14x14
  c.validation_fraction = 0.0  # a GAN trains on all of train; the test images are the reference
  c.batch_size = 64
  c.optimizer, c.learning_rate = "adam", 4e-4
  c.adam_b1, c.adam_b2 = 0.5, 0.999  # the DCGAN paper's betas
  c.schedule, c.decay_fraction = "constant_linear", 0.3  # the last 30% of the steps anneal to 0
  c.num_epochs = 15
  c.log_every_steps = 100
  c.checkpoint.keep_best = 0  # no validation accuracy ranks a generator's checkpoints
  c.gan = ml_collections.ConfigDict()
  # A classifier workdir trained by this project; it scores the samples (training/tasks/gan/metrics.py).
  c.gan.eval_classifier = "runs/speedrun"
  c.gan.eval_samples = 10_000  # generated images scored after each epoch
  c.gan.loss = "bce"  # or "hinge" (training/tasks/gan/steps.py)
  c.gan.d_lr_factor = 1.0  # the discriminator's learning rate, as a multiple of the generator's
  return c
