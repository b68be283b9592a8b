"""What a run prints: one line at a time, from process 0 of a multi-process run only."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


def log(msg: str) -> None:
  """Prints on process 0 only (of a multi-process run), above a live progress bar."""
  # JAX as far as it is imported: the data layer's notes also print where it is not (examples/).
  jax = sys.modules.get("jax")
  if jax is None or jax.process_index() == 0:
    tqdm.write(msg)


def note(msg: str) -> None:
  """A `note:` line: something the user may want to act on, though the run goes on."""
  log(f"note: {msg}")
