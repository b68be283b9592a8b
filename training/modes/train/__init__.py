"""The training mode (--mode=train, the default): a config trained into a workdir.

- setup.py     a run's set-up, straight down: config and workdir checked, data, task, plan,
               initial state (the task's fine-tuning), lock, resume, outputs
- loop.py      train_and_evaluate: the epochs, their metrics and checkpoints, the test
- checks.py    the config and workdir checks that run before anything is loaded
- resume.py    whether a run may go on from its checkpoint: the settings that may change,
               a step within the config's epochs; refused before the workdir's lock is taken
- progress.py  the progress bar, the log records and their NaN check
- signals.py   SIGTERM / Ctrl-C / stop_after_steps -> save and stop
- profile.py   a profiler trace of the steps that profile_steps names

A sibling of the other modes, which it does not import: the report that follows a run is written
by training/cli.py, which calls both.

May import: training.tasks, training.store, training.compute, training.data, the base modules
and nets.
"""
