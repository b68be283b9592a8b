"""The modes layer: what `train.py --mode=...` does, each mode called by training/cli.py.

- train/       training a config into a workdir (--mode=train, the default): a room of its own,
               which imports no other mode and which no other mode imports
- evaluate.py  a checkpoint scored on a whole split
- predict.py   image files classified
- report/      figures and report.html of a run; runs compared
- export.py    jax.export and ONNX files that classify without this code
- export_meta.py  an export's files and model.json (what a caller needs to know), its summary
- sample.py    a trained GAN's images
- show.py      a config's fields, its model's layers and the registered models, or a trained
               workdir's settings
- serve/       the model over HTTP: a prediction API and a draw-a-digit page (--mode=serve)
- triton.py    a Triton Inference Server model repository of the ONNX export
- ensemble.py  runs of other configs as one ensemble (--ensemble), for evaluate, predict, export

Each but train reads a workdir and writes only its own outputs, so none can start training: a trained state through
training.tasks.restore; what a checkpoint says of itself (its step, config, dataset, the shapes of
its arrays) through training.store.checkpoint's read-only `Checkpointer.reader` or `read_latest`.

May import: training.tasks, training.store, training.compute, training.data, the base modules,
configs and nets; never training/modes/train/ (the training loop).
"""
