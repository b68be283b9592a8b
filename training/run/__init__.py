"""The run layer: training a config into a workdir, and the process it runs in.

- setup.py       a run's set-up, straight down: config and workdir checked, data, task, plan,
                 initial state (init_from), lock, resume, outputs
- loop.py        train_and_evaluate: the epochs, their metrics and checkpoints, the test, report
- checks.py      the config and workdir checks that run before anything is loaded
- finetune.py    init_from, freeze and init_lr_multiplier
- resume.py      whether a run may go on from its checkpoint: the settings that may change,
                 a step within the config's epochs
- signals.py     SIGTERM / Ctrl-C / stop_after_steps -> save and stop
- runtime.py     process-wide settings made once at start-up (allocator, XLA flags, caches)
- distributed.py joining a multi-process run

May import every layer below (modes: the report written at the end of a run).
"""
