"""`--config.profile_steps=N`: a trace of N train steps, taken after the run's first call (which
compiles), for TensorBoard's profile plugin and for Perfetto (docs/performance.md#profiling)."""

from __future__ import annotations

import os
from typing import Any

import jax

from training.console import log


class Profiler:
  """Starts `jax.profiler`'s trace once the first call has run, stops it `steps` steps later."""

  def __init__(self, steps: int, workdir: str | None):
    self.left, self.calls, self.active = steps, 0, False
    self.directory = os.path.join(workdir, "tensorboard") if workdir else None
    if steps and workdir is None:
      log("Note: profile_steps needs a --workdir to write the trace to; not profiling.")
      self.left = 0

  def after_call(self, state: Any, n: int) -> None:
    """Called after each train call with the state it returns and its number of steps."""
    self.calls += 1
    if not self.left:
      return
    if not self.active:
      jax.block_until_ready(state)  # the compilation and the first steps stay out of the trace
      jax.profiler.start_trace(self.directory, create_perfetto_trace=True)
      self.active = True
      return
    self.left -= n
    if self.left <= 0:
      self.stop(state)

  def stop(self, state: Any = None) -> None:
    """Ends a trace in progress (at the end of its steps, or of a shorter run)."""
    if self.active:
      jax.block_until_ready(state)
      jax.profiler.stop_trace()
      self.active, self.left = False, 0
      log(f"A profile of {self.calls - 1} train call(s) is in {self.directory}/plugins/profile: "
          "`tensorboard --logdir` there with tensorboard-plugin-profile installed, or open its "
          "perfetto_trace.json.gz at https://ui.perfetto.dev.")
