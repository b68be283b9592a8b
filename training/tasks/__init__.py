"""The tasks layer: what a run learns, each task a plug-in of the one training loop.

- base.py      the Task interface the loop calls, and the registry (`config.task`)
- classify/    image classification (the nets classifiers): its state, steps, scores and
               fine-tuning
- gan/         generative adversarial networks: their state and step, the sample grids and the
               Frechet distance with a classifier this project trained
- restore.py   a task's state restored from a workdir's checkpoint (for the modes, the GAN's
               judge and fine-tuning)

May import: training.store, training.compute, training.data, the base modules and nets. Never the
modes (training/modes/train/ included): the loop hands a task what it needs (the Run) when it
calls it.
"""

from training.tasks.base import Task, check, check_start, epoch_means, get, names, register

__all__ = ["Task", "check", "check_start", "epoch_means", "get", "names", "register"]
