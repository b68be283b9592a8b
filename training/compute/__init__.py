"""The compute layer: from a config to what runs on the devices, for any task.

- build.py   the registered `nets` model with the config's fields and dtype
- optim.py   optax optimizers and learning-rate schedules; the moving average of the weights
- device.py  the jitted drivers of a task's pure steps: batches gathered from device-resident
             data, scans of steps
- mesh.py    the device mesh that batches are split over
- runtime.py process-wide settings made once at start-up, for every mode (allocator, XLA
             flags, caches, library noise)
- distributed.py joining a multi-process run

May import: the base modules (training.errors, ...), configs and nets. What a task trains (its
state, steps and scores) is the task's: training/tasks/.
"""
