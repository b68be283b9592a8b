"""The model layer: from a config to what trains on the devices.

- build.py   the registered `nets` model with the config's fields and dtype
- optim.py   optax optimizers and learning-rate schedules
- state.py   the classifier's train state (with the moving average of the weights)
- steps.py   the classifier's pure train and eval steps
- device.py  the jitted drivers: batches gathered from device-resident data, scans of steps
- mesh.py    the device mesh that batches are split over
- scores.py  accuracy, macro F1 and the confusion matrix from the eval step's sums

May import: training.data (augmentation), the base modules (training.errors, ...), configs and
nets.
"""
