"""The modes layer: what `train.py --mode=...` does with a trained workdir, besides training.

- evaluate.py  a checkpoint scored on a whole split
- predict.py   image files classified
- report/      figures and report.html of a run; runs compared
- export.py    jax.export and ONNX files that classify without this code
- sample.py    a trained GAN's images
- show.py      a config's fields, its model's layers and the registered models (no workdir)
- ensemble.py  runs of other configs as one ensemble (--ensemble), for evaluate, predict, export

Each reads a workdir (its checkpoints through training.tasks.restore) and writes only its own
outputs. May import: training.tasks, training.store, training.model, training.data and the base
modules; never the run layer (the training loop).
"""
