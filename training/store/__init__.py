"""The store layer: what a run keeps in its workdir, written and read back.

- checkpoint.py  orbax checkpoints: the latest N plus the best, exact resume, clear errors for
                 damaged, mismatched or unwritable checkpoints
- state_tree.py  what of a train state a checkpoint holds: its arrays as one tree, their shapes
                 by path, its step
- orbax_io.py    how orbax reports failed reads and writes, waiting for its threads, removing
                 what a failed save left
- records.py     metrics.jsonl and TensorBoard events (MetricWriter), and reading them back
- lock.py        one writing run per workdir

May import: the base modules (training.errors, ...). It knows nothing of models or tasks: a
checkpoint holds any train state's arrays and the config and dataset description as JSON.
"""
