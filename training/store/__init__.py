"""The store layer: what a run keeps in its workdir, written and read back.

- checkpoint.py  orbax checkpoints: the latest N plus the best, exact resume, clear errors for
                 damaged, mismatched or unwritable checkpoints
- orbax_io.py    how orbax reports failed reads and writes, and waiting for its threads
- records.py     metrics.jsonl and TensorBoard events (MetricWriter), and reading them back
- lock.py        one writing run per workdir

May import: the base modules (training.errors, ...). It knows nothing of models or tasks: a
checkpoint holds any train state's arrays and the config and dataset description as JSON.
"""
