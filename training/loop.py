"""The training loop: `train_and_evaluate(config, workdir)` returns the final state and metrics."""

from __future__ import annotations

import json
import os
import signal
import tempfile
import threading
import time
import traceback
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import traverse_util
from tqdm.auto import tqdm

import nets
from training import checkpoint, data, distributed, metrics as metrics_lib, optim, steps
from training.errors import ConfigError, NonFiniteLossError, Preempted

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def log(msg: str) -> None:
  """Prints on process 0 only (of a multi-process run), above a live progress bar."""
  if jax.process_index() == 0:
    tqdm.write(msg)


def build_model(config: ml_collections.ConfigDict, num_classes: int):
  """The model named by `config.model.name`, with the config's other model fields."""
  fields = {k: v for k, v in config.model.items() if k != "name"}
  if config.dtype != "float32":
    if "dtype" not in nets.field_names(config.model.name):
      raise ConfigError(f"Model {config.model.name!r} has no `dtype` field, so "
                       f"--config.dtype={config.dtype} cannot apply to it.")
    fields["dtype"] = DTYPES[config.dtype]
  return nets.create(config.model.name, num_classes=num_classes, **fields)


def validate(config: ml_collections.ConfigDict) -> None:
  """Fails fast, before the data is loaded, on config values that cannot work."""
  if config.dtype not in DTYPES:
    raise ConfigError(f"Unknown dtype {config.dtype!r}; choose one of {', '.join(DTYPES)}.")
  if config.optimizer not in optim.OPTIMIZERS:
    raise ConfigError(f"Unknown optimizer {config.optimizer!r}; choose one of "
                      f"{', '.join(optim.OPTIMIZERS)}.")
  if config.schedule not in optim.SCHEDULES:
    raise ConfigError(f"Unknown schedule {config.schedule!r}; choose one of "
                      f"{', '.join(optim.SCHEDULES)}.")
  at_least = {"batch_size": 1, "eval_batch_size": 1, "num_epochs": 1, "log_every_steps": 1,
              "checkpoint.every_epochs": 1, "checkpoint.keep": 1, "checkpoint.every_steps": 0,
              "checkpoint.keep_best": 0, "stop_after_steps": 0, "steps_per_call": 0,
              "max_train_examples": 0, "max_eval_examples": 0, "weight_decay": 0.0,
              "grad_clip_norm": 0.0}
  flat = traverse_util.flatten_dict(config.to_dict(), sep=".")
  for field, low in at_least.items():
    if (value := flat[field]) < low:
      raise ConfigError(f"{field} must be at least {low}, got {value}.")
  if not config.learning_rate > 0:
    raise ConfigError(f"learning_rate must be positive, got {config.learning_rate}.")
  if not 0.0 <= config.label_smoothing < 1.0:
    raise ConfigError(f"label_smoothing must be in [0, 1), got {config.label_smoothing}.")
  if not 0.0 <= config.ema_decay < 1.0:
    raise ConfigError(f"ema_decay must be in [0, 1) (0 disables it), got {config.ema_decay}.")
  for field in ("shift", "rotate"):
    if config.augment[field] < 0:
      raise ConfigError(f"augment.{field} is a maximum magnitude and must be >= 0, got "
                        f"{config.augment[field]}.")
  nets.field_names(config.model.name)  # raises for an unknown model, listing the known ones


def step_options(config: ml_collections.ConfigDict) -> dict[str, float]:
  """The config's keyword arguments of `steps.train_step`."""
  return {"label_smoothing": config.label_smoothing, "augment_shift": config.augment.shift,
          "augment_rotate": config.augment.rotate, "ema_decay": config.ema_decay}


def steps_per_call(config: ml_collections.ConfigDict) -> int:
  """Train steps per jitted call: `config.steps_per_call`, or by backend when it is 0.

  Measured: on CPU a `lax.scan` over 20 CNN steps ran 24x slower per step than one call per
  step, and over 100 MLP steps no faster; on an H200 scanning halved the epoch time, as it
  removes the per-step dispatch.
  """
  if config.steps_per_call > 0:
    return config.steps_per_call
  return 1 if jax.default_backend() == "cpu" else config.log_every_steps


def _model_error(config: ml_collections.ConfigDict, image_shape: tuple[int, ...],
                 e: Exception) -> str:
  """Why the model could not be built, and where (the innermost frame in nets/, for whoever is
  writing a new architecture: the command line shows no traceback)."""
  frames = traceback.extract_tb(e.__traceback__)
  ours = [f for f in frames if f"{os.sep}nets{os.sep}" in f.filename] or frames[-1:]
  where = f" (raised at {os.path.relpath(ours[-1].filename)}:{ours[-1].lineno})" if ours else ""
  fields = ", ".join(f"{k}={v!r}" for k, v in config.model.items())
  return (f"Model {config.model.name!r} cannot be built for {image_shape} images with "
          f"{fields}: {type(e).__name__}: {str(e).rstrip('.')}{where}. Check the "
          "--config.model.* values.")


def check_workdir(workdir: str) -> None:
  """Creates `workdir` and fails fast, before the data is loaded, if it cannot be written."""
  try:
    os.makedirs(workdir, exist_ok=True)
    with tempfile.TemporaryFile(dir=workdir):
      pass
  except OSError as e:
    raise ConfigError(f"Cannot write to the workdir {workdir!r} ({e.strerror or e}); pass a "
                      "writable directory with --workdir=...") from e


def load_data(config: ml_collections.ConfigDict) -> data.Dataset:
  return data.load(config.dataset, data_dir=config.data_dir, cache_dir=config.cache_dir,
                   validation_fraction=config.validation_fraction, split_seed=config.split_seed,
                   max_train_examples=config.max_train_examples,
                   max_eval_examples=config.max_eval_examples)


def param_count(params: Any) -> int:
  return sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(params))


def _check_finite(metrics: dict[str, np.ndarray], first_step: int) -> None:
  """Stops on a NaN or infinite loss or gradient norm (an overflowing norm is divergence too),
  naming the first step where either went."""
  bad = []
  for name, what in (("loss", "loss"), ("grad_norm", "gradient norm")):
    if name in metrics:
      where = np.flatnonzero(~np.isfinite(metrics[name]))
      if where.size:
        bad.append((int(where[0]), what, metrics[name][where[0]]))
  if bad:
    index, what, value = min(bad, key=lambda b: b[0])
    raise NonFiniteLossError(
        f"The training {what} became {value} at step {first_step + index}. Training stopped "
        "there, and no checkpoint from that step on was saved. Try a lower "
        "--config.learning_rate, gradient clipping (--config.grad_clip_norm=1.0), or "
        "--config.dtype=float32 if you use bfloat16; to continue this run's last checkpoint "
        "with such changes, add --config.checkpoint.allow_config_changes=True.")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | None = None
                       ) -> tuple[steps.TrainState, dict[str, Any]]:
  """Trains `config` and evaluates it on the test split.

  Writes `config.json`, `metrics.jsonl`, TensorBoard events and `test_metrics.json` to `workdir`
  (nothing when it is None). Returns the final train state and a dict with the last epoch's
  train/validation metrics, the test metrics and timings.
  """
  t_start = time.time()
  validate(config)
  if workdir is not None:
    check_workdir(workdir)
  ds = load_data(config)
  model = build_model(config, ds.num_classes)
  steps_per_epoch = len(ds.train) // config.batch_size
  if steps_per_epoch == 0:
    raise ConfigError(f"batch_size={config.batch_size} exceeds the {len(ds.train)} training "
                     "examples; lower --config.batch_size.")
  schedule = optim.make_schedule(config, steps_per_epoch)
  tx = optim.make_optimizer(config, schedule)
  # Auto axes: XLA propagates the batch sharding; parameters stay replicated.
  mesh = distributed.make_mesh(config.mesh_shape, config.mesh_axes)
  driver = steps.DeviceSteps(mesh, config.batch_size, config.eval_batch_size, ds.num_classes,
                             **step_options(config))
  init_key, train_key, shuffle_key = jax.random.split(jax.random.PRNGKey(config.seed), 3)
  try:
    state = steps.create_train_state(model, tx, ds.image_shape, init_key, train_key,
                                     ema=config.ema_decay > 0)
  except (ValueError, TypeError, ZeroDivisionError) as e:
    raise ConfigError(_model_error(config, ds.image_shape, e)) from e
  state = driver.put(state)
  # Restored (or refused) before anything in the workdir is written: a refused run leaves the
  # workdir as it was.
  ckpt, changes = None, None  # changes: of the config since the checkpoint, when resuming
  total_steps = config.num_epochs * steps_per_epoch
  if workdir is not None and config.checkpoint.enabled:
    ckpt = checkpoint.Checkpointer(workdir, config, ds.info())
    try:
      if ckpt.latest_step() is not None:
        state, changes = ckpt.resume(state)
        if int(state.step) > total_steps:
          raise ConfigError(
              f"The checkpoint in {ckpt.directory} is at step {int(state.step)}, past the "
              f"{config.num_epochs} epochs ({total_steps} steps) of this config. Raise "
              f"--config.num_epochs to at least {-(-int(state.step) // steps_per_epoch)}, "
              f"evaluate it with `python train.py --mode=evaluate --workdir={workdir}`, or "
              "use another --workdir.")
    except BaseException:
      ckpt.close()
      raise

  # Every process computes the same metrics; process 0 alone writes them.
  primary = jax.process_index() == 0
  writer = metrics_lib.MetricWriter(workdir, enabled=workdir is not None and primary)
  if workdir is not None and primary:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))
    writer.write_text("config", str(config))

  train_images, train_labels = driver.put_train(ds.train.images, ds.train.labels)
  val_arrays = driver.put_eval(ds.validation.images, ds.validation.labels) if ds.validation else None
  test_arrays = driver.put_eval(ds.test.images, ds.test.labels)
  log(f"{config.model.name}: {param_count(state.params):,} parameters | {ds.name}: "
      f"{len(ds.train)} train, {len(ds.validation) if ds.validation else 0} validation, "
      f"{len(ds.test)} test | {mesh.size} {jax.devices()[0].platform} device(s)"
      f"{f' in {jax.process_count()} processes' if jax.process_count() > 1 else ''}, mesh "
      f"{dict(mesh.shape)} | "
      f"{config.num_epochs} epoch{'s' * (config.num_epochs != 1)} of {steps_per_epoch} steps")
  if config.dtype == "bfloat16" and jax.default_backend() == "cpu":
    # XLA:CPU runs matmuls with bf16 results off its fast path.
    log("Note: bfloat16 compute is slower than float32 on CPU (MLP and CNN train steps were "
        "1.2-1.3x slower on a 2-core AVX-512 EPYC); it is meant for GPU/TPU. On CPU use "
        "--config.dtype=float32.")

  start_step = int(state.step)
  if changes is not None:
    log(f"Resuming from the checkpoint at step {start_step} in {ckpt.directory}"
        + (f" (config changed: {'; '.join(changes.values())})" if changes else ""))
    if "num_epochs" in changes and config.schedule != "constant":
      log(f"Note: the {config.schedule} learning-rate schedule now spans {config.num_epochs} "
          f"epochs, so the rate at step {start_step} is {float(schedule(start_step)):.3g}.")
    if start_step == total_steps:
      log(f"This run is complete ({config.num_epochs} epochs): evaluating only. Raise "
          "--config.num_epochs to train on, or pass another --workdir for a new run.")
  save_every = config.checkpoint.every_steps if ckpt else 0
  stop_at = start_step + config.stop_after_steps if config.stop_after_steps else 0
  boundaries = [config.log_every_steps] + ([save_every] if save_every else [])
  chunk = steps_per_call(config)
  # A resumed run's summary keeps the epochs trained before the resume.
  history: list[dict[str, Any]] = (metrics_lib.read_epochs(workdir, start_step)
                                   if changes is not None and primary else [])
  t_train = time.time()

  def run_epoch(state, epoch: int, i: int, stop: "_StopOnSignal"):
    """Trains steps i.. of `epoch`; returns (state, epoch metrics), or (state, None) if stopped."""
    t_epoch, first = time.time(), i
    perm = driver.permutation(shuffle_key, epoch, len(ds.train))
    sums, count, pending = {"loss": 0.0, "accuracy": 0.0}, 0, []
    bar = tqdm(total=steps_per_epoch, initial=i, desc=f"epoch {epoch}/{config.num_epochs}",
               unit="step", leave=False, disable=not (config.progress_bar and primary),
               mininterval=0.5)
    while i < steps_per_epoch:
      step = (epoch - 1) * steps_per_epoch + i
      # A call runs `chunk` steps but never past a log or save step, or the epoch's end.
      n = min(chunk, steps_per_epoch - i, *(b - step % b for b in boundaries),
              *([stop_at - step] if stop_at else []))
      state, step_metrics = driver.train_steps(state, train_images, train_labels, perm, i, n)
      pending.append(step_metrics)
      i, step = i + n, step + n
      if step == stop_at and step < config.num_epochs * steps_per_epoch:
        stop.request("stop_after_steps")
      # Multi-process runs sync only at steps that every process knows in advance (a process
      # that alone stopped to sync would wait forever); a single process stops at once.
      # Save steps too: a checkpoint is written only after its steps' losses were checked.
      if (step % config.log_every_steps == 0 or i == steps_per_epoch or step == stop_at
          or (save_every and step % save_every == 0)
          or (stop.requested and jax.process_count() == 1)):
        # The only host sync in the loop: fetch the metrics of the steps since the last log.
        fetched = jax.device_get(pending)
        stacked = {k: np.concatenate([np.atleast_1d(m[k]) for m in fetched]) for k in fetched[0]}
        n_fetched = len(stacked["loss"])
        _check_finite(stacked, step - n_fetched + 1)
        for k in sums:
          sums[k] += float(stacked[k].sum())
        count += n_fetched
        means = {f"train/{k}": float(v.mean()) for k, v in stacked.items()}
        means["train/learning_rate"] = float(schedule(step - 1))
        writer.write(step, means)
        bar.set_postfix(loss=f"{means['train/loss']:.4f}", refresh=False)
        bar.update(n_fetched)
        pending = []
        stop.sync(step, ckpt)
      if stop.requested:
        bar.close()
        return state, None
      if save_every and step % save_every == 0 and i < steps_per_epoch:
        ckpt.save(state)
    bar.close()
    train_time = time.time() - t_epoch
    epoch_metrics = {f"train/{k}": v / count for k, v in sums.items()}
    line = (f"epoch {epoch:>3}/{config.num_epochs}  train loss {epoch_metrics['train/loss']:.4f} "
            f"acc {epoch_metrics['train/accuracy']:.2%}"
            + (f" (steps {first + 1}-{steps_per_epoch}, after the resume)" if first else ""))
    if val_arrays is not None:
      val = metrics_lib.summarize(driver.evaluate(state, *val_arrays))
      epoch_metrics.update({"validation/loss": val["loss"], "validation/accuracy": val["accuracy"]})
      line += f"  |  val loss {val['loss']:.4f} acc {val['accuracy']:.2%}"
    if config.test_every_epoch:
      test = metrics_lib.summarize(driver.evaluate(state, *test_arrays))
      epoch_metrics.update({"test/loss": test["loss"], "test/accuracy": test["accuracy"]})
      line += f"  |  test acc {test['accuracy']:.2%}"
    epoch_time = time.time() - t_epoch
    epoch_metrics.update({"time/epoch_s": epoch_time, "time/train_epoch_s": train_time,
                          "time/elapsed_s": time.time() - t_train,
                          "time/steps_per_s": count / train_time})
    writer.write(epoch * steps_per_epoch, epoch_metrics, epoch=epoch)
    log(line + f"  |  {epoch_time:.1f}s ({count / train_time:.1f} steps/s)")
    return state, epoch_metrics

  try:
    if config.stop_after_steps and ckpt is None:
      raise ConfigError("stop_after_steps needs checkpoints: set --workdir and keep "
                        "--config.checkpoint.enabled=True.")
    with _StopOnSignal(enabled=ckpt is not None) as stop:
      first_epoch = start_step // steps_per_epoch + 1
      for epoch in range(first_epoch, config.num_epochs + 1):
        first = start_step - (epoch - 1) * steps_per_epoch if epoch == first_epoch else 0
        state, epoch_metrics = run_epoch(state, epoch, first, stop)
        if epoch_metrics is None:
          ckpt.save(state)
          ckpt.wait()
          raise Preempted(f"Stopped by {stop.signal_name} at step {int(state.step)}; a "
                          f"checkpoint was saved in {ckpt.directory}. Re-run the same command "
                          "to resume.")
        history.append(epoch_metrics)
        if ckpt and (epoch % config.checkpoint.every_epochs == 0 or epoch == config.num_epochs):
          ckpt.save(state, epoch_metrics if checkpoint.BEST_METRIC in epoch_metrics else None)

    test = metrics_lib.summarize(driver.evaluate(state, *test_arrays))
    report = metrics_lib.format_report(test, ds.class_names)
    log(report)
    summary = {**(history[-1] if history else {}), "epochs": history, "test": test,
               "time/train_s": time.time() - t_train, "time/total_s": time.time() - t_start,
               "num_params": param_count(state.params)}
    if workdir is not None and primary:
      writer.write(config.num_epochs * steps_per_epoch,
                   {f"test/{k}": test[k] for k in ("loss", "accuracy", "macro_f1")})
      writer.write_text("test_report", report)
      with open(os.path.join(workdir, "test_metrics.json"), "w") as f:
        json.dump(summary, f, indent=2)
  finally:
    writer.close()
    if ckpt:
      ckpt.wait()  # a save in flight completes even when training stops with an error
      ckpt.close()
  log(f"done in {summary['time/total_s']:.1f}s: test accuracy {test['accuracy']:.2%}")
  return state, summary


class _StopOnSignal:
  """Turns SIGTERM (what preemption sends) and a first Ctrl-C (SIGINT) into a request to
  checkpoint and stop; a second Ctrl-C interrupts at once.

  In a multi-process run JAX's preemption service catches the signal instead, and every process
  learns of it at the same step from orbax's `reached_preemption` (see `sync`).
  """

  def __init__(self, enabled: bool = True):
    self.enabled, self.requested, self.signal_name, self._previous = enabled, False, "", None

  def request(self, reason: str) -> None:
    self.requested, self.signal_name = True, reason

  def sync(self, step: int, ckpt: checkpoint.Checkpointer | None) -> None:
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

  def __enter__(self) -> "_StopOnSignal":
    if (self.enabled and threading.current_thread() is threading.main_thread()
        and jax.process_count() == 1):
      self._previous = {sig: signal.signal(sig, self._handle)
                        for sig in (signal.SIGTERM, signal.SIGINT)}
    return self

  def __exit__(self, *exc) -> None:
    for s, handler in (self._previous or {}).items():
      signal.signal(s, handler)
