"""Stopping a run cleanly: SIGTERM (what preemption sends), Ctrl-C and `stop_after_steps` become
a request that the loop honours at its next host sync, after which it saves and exits."""

from __future__ import annotations

import signal
import threading
from typing import TYPE_CHECKING

import jax
import numpy as np

if TYPE_CHECKING:
  from training.store.checkpoint import Checkpointer


class StopOnSignal:
  """Turns SIGTERM (what preemption sends) and a first Ctrl-C (SIGINT) into a request to
  checkpoint and stop; a second Ctrl-C interrupts at once.

  In a multi-process run JAX's preemption service catches the signal instead, and every process
  learns of it at the same step from orbax's `reached_preemption` (see `sync`).
  """

  def __init__(self, enabled: bool = True):
    self.enabled, self.requested, self.signal_name, self._previous = enabled, False, "", None

  def request(self, reason: str) -> None:
    self.requested, self.signal_name = True, reason

  def sync(self, step: int, ckpt: Checkpointer | None) -> None:
    """At a step where every process syncs: adopt a stop that any process has requested."""
    if ckpt is None or self.requested and jax.process_count() == 1:
      return
    if ckpt.manager.reached_preemption(step):
      self.request("preemption")
    elif jax.process_count() > 1:
      from jax.experimental import multihost_utils
      if np.asarray(multihost_utils.process_allgather(np.int32(self.requested))).any():
        self.request(self.signal_name or "a stop on another process")

  def _handle(self, signum, frame):
    if signum == signal.SIGINT:  # no print here: the handler may interrupt one
      signal.signal(signal.SIGINT, self._previous[signal.SIGINT])
    self.request(signal.Signals(signum).name)

  def __enter__(self) -> "StopOnSignal":
    if (self.enabled and threading.current_thread() is threading.main_thread()
        and jax.process_count() == 1):
      self._previous = {sig: signal.signal(sig, self._handle)
                        for sig in (signal.SIGTERM, signal.SIGINT)}
    return self

  def __exit__(self, *exc) -> None:
    for s, handler in (self._previous or {}).items():
      signal.signal(s, handler)
