"""The GAN task: nets/gan.py's generators trained against their discriminators.

- task.py     the task (registered as "gan"): state, step and evaluation for the loop
- steps.py    the GAN's state and its pure train step, and sampling
- metrics.py  the Frechet distance, class accuracy and entropy with a trained classifier
- grid.py     sample grids as PNG images
"""

from training.tasks.gan.task import Gan

__all__ = ["Gan"]
