"""What a run prints: one line at a time, from process 0 of a multi-process run only."""

from __future__ import annotations

import jax
from tqdm.auto import tqdm


def log(msg: str) -> None:
  """Prints on process 0 only (of a multi-process run), above a live progress bar."""
  if jax.process_index() == 0:
    tqdm.write(msg)
