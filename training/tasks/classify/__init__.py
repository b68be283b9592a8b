"""The classification task: a `nets` classifier trained with cross-entropy, scored by accuracy.

- task.py      the task (registered as "classify"): state, steps and evaluation for the loop
- state.py     the classifier's train state (with the moving average of the weights)
- steps.py     its pure train and evaluation steps, and a population's ensemble
- scores.py    accuracy, macro F1 and the confusion matrix from the evaluation's sums
- finetune.py  init_from, freeze and init_lr_multiplier: a state started from another run's
"""

from training.tasks.classify.task import Classify, step_options

__all__ = ["Classify", "step_options"]
