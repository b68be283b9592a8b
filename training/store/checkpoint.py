"""Orbax checkpoints in `<workdir>/checkpoints`: the last N plus the best by validation accuracy.

A checkpoint holds all that exact resumption needs: the state's arrays and its step (which fixes
the data position, each epoch's order being a pure function of the seed and the epoch), the
config, what inference needs of the data, the run's `origin` (a fine-tuning's source: a resume
reads no other run) and the open log window (`save`'s `window`: resumed records equal an
uninterrupted run's), the last two JSON read back by `read_item`. Orbax writes each checkpoint to
a temporary directory and renames it when complete, so a killed save leaves none to read.

A save that cannot be written (a full disk, a lost mount) surfaces where orbax reports it (this
`save`, the next, `wait` or `close`), each time as one `CheckpointWriteError` naming what failed,
the free space and the last committed checkpoint, which is left intact; the partial temporary
directory is removed.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from training.errors import ConfigError, WorkdirWriteError, free_space, mib, os_reason
from training.store.orbax_io import join_orbax_threads, read_errors_as, remove_partial_saves
from training.store.state_tree import saved_tree, shapes_by_path, step_of

BEST_METRIC = "validation/accuracy"


class CheckpointMismatchError(ConfigError):
  """A checkpoint whose arrays do not fit the state read into it, or whose JSON is unusable."""


class DamagedCheckpointError(ConfigError):
  """A committed checkpoint whose files cannot be read (a disk fault, a stray edit)."""


class CheckpointGoneError(ConfigError):
  """A checkpoint that the run writing the workdir rotated away while it was read; not damage."""


class CheckpointWriteError(WorkdirWriteError):
  """A checkpoint could not be written (a full disk, a lost mount); the committed ones stay."""


def read_latest(workdir: str, *items: str) -> tuple[int | None, list[dict[str, Any] | None]]:
  """The latest checkpoint's step and its JSON `items` ("config", "dataset"), read-only (None for
  each while there is no checkpoint)."""
  with Checkpointer.reader(workdir) as ckpt:
    step = ckpt.latest_step()
    return step, [None if step is None else ckpt.read_json(step, item) for item in items]


class Checkpointer:
  """Saves asynchronously (the step waits only for the device-to-host copy) and restores."""

  def __init__(self, workdir: str, config: ml_collections.ConfigDict | None,
               dataset_info: dict[str, Any] | None = None, *, origin: dict[str, Any] | None = None,
               read_only: bool = False):
    """For a run that writes `workdir`: its config, dataset info and `origin` (JSON) go into
    every checkpoint. `Checkpointer.reader(workdir)` opens one to read only."""
    if (config is None) != read_only:
      raise TypeError("A Checkpointer writes with the run's config, or reads without one: use "
                      "Checkpointer(workdir, config, dataset_info) or Checkpointer.reader(workdir).")
    self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    self.config, self.dataset_info, self.origin = config, dataset_info, origin
    self._saving: int | None = None  # the step of the last save started, until waited for
    self._failed: CheckpointWriteError | None = None  # a failed save, once raised
    self._state_bytes = 0  # the size of a checkpoint's arrays
    if config is None:
      if not os.path.isdir(self.directory):
        raise ConfigError(f"No checkpoints in {self.directory}: train first with "
                          f"`python train.py --config=... --workdir={workdir}`.")
      policy, keep_best = None, 0
    else:
      c = config.checkpoint
      keep_best = c.keep_best
      policies = [ocp.checkpoint_managers.LatestN(n=c.keep)]
      if keep_best:
        policies.append(ocp.checkpoint_managers.BestN(
            get_metric_fn=lambda m: m[BEST_METRIC], n=keep_best,
            keep_checkpoints_without_metrics=False))
      policy = ocp.checkpoint_managers.AnyPreservationPolicy(policies)
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policy, best_fn=lambda m: m[BEST_METRIC], best_mode="max",
        enable_async_checkpointing=True, create=config is not None, read_only=config is None,
        # Leftovers of a save that a kill interrupted: never read, deleted on the next start.
        cleanup_tmp_directories=config is not None)
    # Handlers named up front, so a fresh process can read the metadata of what is on disk.
    self.manager = ocp.CheckpointManager(
        self.directory, options=options,
        item_handlers={"state": ocp.StandardCheckpointHandler(),
                       "config": ocp.JsonCheckpointHandler(),
                       "dataset": ocp.JsonCheckpointHandler(),
                       "window": ocp.JsonCheckpointHandler(),
                       "origin": ocp.JsonCheckpointHandler()})

  def __enter__(self) -> "Checkpointer":  # `with Checkpointer.reader(workdir) as ckpt:` closes it
    return self

  def __exit__(self, *exc: Any) -> None:
    self.close()

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def best_step(self) -> int | None:
    return self.manager.best_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def choose(self, which: str = "best") -> tuple[int, str]:
    """(step, "best" | "latest" | "step") of the checkpoint `which` names: the best by
    validation accuracy (the latest when none ranks best), the latest, or a step number."""
    available = self.all_steps()
    if not available:
      raise ConfigError(f"No complete checkpoint in {self.directory}; train first (or let the "
                        "run reach its first checkpoint).")
    if which == "latest":
      return self.latest_step(), which
    if which == "best":
      step = self.best_step()
      if step is None:  # trained without a validation split: nothing ranks the checkpoints
        return self.latest_step(), "latest"
      return step, which
    if which.isdigit() and int(which) in available:
      return int(which), "step"
    raise ConfigError(f"No checkpoint {which!r} in {self.directory}; use best, latest or one "
                      f"of the steps {sorted(available)}.")

  @classmethod
  def reader(cls, workdir: str) -> "Checkpointer":
    """`workdir`'s checkpoints, read-only (evaluation, prediction, reports, export): it writes
    and deletes nothing, not even the leftovers of an interrupted save, and cannot save."""
    return cls(workdir, None, read_only=True)

  def save(self, state: Any, metrics: dict[str, float] | None = None,
           window: dict[str, Any] | None = None) -> None:
    """Starts writing a checkpoint of `state` (asynchronously, after the previous one is
    complete), with `window` (JSON; None: {}). Raises CheckpointWriteError if this one or the
    previous one cannot be written."""
    if self.config is None:
      raise TypeError(f"The checkpoints in {self.directory} were opened read-only "
                      "(Checkpointer.reader): nothing can be saved through this Checkpointer.")
    if self._failed:
      raise self._failed
    self._wait()  # orbax's save would wait for it too; this tells which step failed
    step = step_of(state)
    if step in self.manager.all_steps():
      return
    # Scalars as 0-d arrays: orbax 0.11.17 refuses a numpy one ("Unsupported type").
    tree = jax.tree_util.tree_map(lambda x: np.asarray(x) if np.isscalar(x) else x,
                                  saved_tree(state))
    self._state_bytes = sum(getattr(x, "nbytes", 0) for x in jax.tree_util.tree_leaves(tree))
    self._saving = step
    with self._write_errors():
      self.manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(tree),
          config=ocp.args.JsonSave(self.config.to_dict()),
          dataset=ocp.args.JsonSave(self.dataset_info or {}),
          origin=ocp.args.JsonSave(self.origin or {}),
          window=ocp.args.JsonSave(window or {})),
          metrics={k: float(v) for k, v in metrics.items()} if metrics else None)

  def _wait(self) -> None:
    if self._saving is not None:
      with self._write_errors():
        self.manager.wait_until_finished()
      self._saving = None

  @contextlib.contextmanager
  def _write_errors(self) -> Iterator[None]:
    """Re-raises a failure of the save in flight as one CheckpointWriteError."""
    try:
      yield
    except (KeyboardInterrupt, SystemExit):
      raise
    except BaseException as e:
      if isinstance(e, CheckpointWriteError):
        raise
      raise self._write_failed(e) from e

  def _write_failed(self, e: BaseException) -> CheckpointWriteError:
    """Removes the partial checkpoint; the error names the cause, the free space and the way on."""
    step, self._saving = self._saving, None
    join_orbax_threads(timeout_s=60)  # its other writes of the failed save are still under way
    # Process 0 of several: the directories are shared.
    removed = jax.process_index() == 0 and remove_partial_saves(self.directory)
    committed = [s for s in self._committed() if s != step]
    size = (f"; a checkpoint of this run takes about {mib(self._state_bytes)}"
            if self._state_bytes else "")
    what = f"the checkpoint of step {step}" if step is not None else "a checkpoint"
    way_on = (f"The last committed checkpoint (step {max(committed)}) is intact: free some space "
              "or fix the file system, then re-run the same command to resume from it."
              if committed else
              "No checkpoint was committed yet: free some space or fix the file system (or pass "
              "another --workdir), then re-run the same command; it starts from the beginning.")
    self._failed = CheckpointWriteError(
        f"Could not write {what} to {self.directory}: {os_reason(e)} "
        f"({free_space(self.directory)} on that file system{size})."
        f"{' The partial checkpoint was removed.' if removed else ''}\n{way_on}")
    return self._failed

  def _committed(self) -> list[int]:
    """The steps of the committed checkpoints on disk."""
    try:
      return sorted(int(n) for n in os.listdir(self.directory) if n.isdigit())
    except OSError:
      return []

  def read_json(self, step: int, item: str) -> dict[str, Any]:
    """The `config` or `dataset` item saved with checkpoint `step`."""
    problem = (f"Checkpoint {step} in {self.directory} has no usable {item!r} item: it was not "
               "written by this version of the trainer, or it is damaged. Train again into a new "
               "--workdir (or pass --checkpoint=<another step>).")
    # orbax's own error only lists the items present, without saying what to do.
    with read_errors_as(lambda _: self._gone(step) or CheckpointMismatchError(problem)):
      value = self.manager.restore(step, args=ocp.args.Composite(
          **{item: ocp.args.JsonRestore()}))[item]
    if not value:
      raise CheckpointMismatchError(problem)
    return value

  def read_item(self, step: int, item: str) -> dict[str, Any] | None:
    """The JSON `item` ("window", "origin") of checkpoint `step`; None from a version without."""
    with read_errors_as(lambda cause: self._damaged(step, cause)):
      if item not in self.manager.item_metadata(step):
        return None
      return self.manager.restore(step, args=ocp.args.Composite(
          **{item: ocp.args.JsonRestore()}))[item]

  def shapes(self, step: int) -> dict[str, tuple]:
    """The shapes of checkpoint `step`'s arrays by path ("params/Dense_0/kernel"), read from its
    metadata alone."""
    with read_errors_as(lambda cause: self._damaged(step, cause)):
      return shapes_by_path(self.manager.item_metadata(step)["state"])

  def restore(self, state: Any, step: int | None = None) -> Any:
    """`state` (freshly initialized) gives the expected shapes and shardings. A checkpoint of
    other shapes is refused; what the difference means for a run (another model, another
    optimizer) is for its caller to say first (tasks/restore.py's check_shapes)."""
    step = self.latest_step() if step is None else step
    target = saved_tree(state)
    have, want = self.shapes(step), shapes_by_path(target)
    if have != want:
      differ = sorted(k for k in have.keys() | want.keys() if have.get(k) != want.get(k))
      raise CheckpointMismatchError(
          f"The checkpoint at step {step} in {self.directory} holds arrays of other shapes than "
          f"the state it is read into: {', '.join(differ[:5])}.")
    with read_errors_as(lambda cause: self._damaged(step, cause)):
      restored = self.manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(jax.tree_util.tree_map(
              ocp.utils.to_shape_dtype_struct, target))))["state"]
    return state.replace(**restored)

  def _gone(self, step: int) -> CheckpointGoneError | None:
    """The error for a checkpoint that a running training rotated away while it was read."""
    if os.path.isdir(os.path.join(self.directory, str(step))):
      return None
    return CheckpointGoneError(
        f"Checkpoint {step} in {self.directory} was removed while it was read: the run training "
        "there keeps only its latest checkpoints. Read it again, or pass --checkpoint=best.")

  def _damaged(self, step: int, cause: BaseException) -> ConfigError:
    """Names the step and the way out; the files are left as they are, for a look or a rescue."""
    if gone := self._gone(step):
      return gone
    earlier = [s for s in self.all_steps() if s < step]
    detail = str(cause).splitlines()[0][:300] if str(cause) else type(cause).__name__
    way_out = (f"To resume from the previous checkpoint (step {max(earlier)}), move this one "
               f"out of the way: mv {self.directory}/{step} "
               f"{os.path.dirname(self.directory)}/damaged_checkpoint_{step}"
               if earlier else "There is no earlier checkpoint to fall back on")
    return DamagedCheckpointError(
        f"Checkpoint {step} in {self.directory} cannot be read; it is damaged ({detail}).\n"
        f"{way_out}; or start afresh with another --workdir.")

  def wait(self) -> None:
    """Waits for the save in flight; raises CheckpointWriteError if it failed, once only."""
    if not self._failed:
      self._wait()

  def close(self) -> None:
    """Waits for the save in flight (raising its failure, if not raised yet) and closes."""
    try:
      self.wait()
    finally:
      if self._failed:
        with contextlib.suppress(Exception):  # orbax re-raises the failure already reported
          self.manager.close()
      elif self.config is None:  # read-only: nothing was written
        self.manager.close()
      else:
        with self._write_errors():
          self.manager.close()
