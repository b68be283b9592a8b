"""Plumbing on mock data: every config trains, determinism, golden loss, error paths."""

from __future__ import annotations

import functools
import json
import pathlib
import re
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from absl import flags
from ml_collections import config_flags

import configs
import nets
from training import ConfigError, DataNotFoundError, NonFiniteLossError, train_and_evaluate
from training.modes.train import progress
from training.compute import optim
from training.compute import build
from training.tasks import classify, restore
from training.tasks.classify import state as state_lib
from training.tasks.classify import steps

from conftest import (CLASSIFIER_CONFIGS, CONFIG_NAMES, REPO, load_config, shrink, ships,
                      unused_url)

# Loss of the first two train steps on a fixed synthetic batch (seed 0), per config: pins the
# model's init, the loss and the optimizer update. Re-pin only for an intended change. A config
# not pinned here (a new one) is skipped, with its losses recorded and the line to add.
GOLDEN_LOSSES = {
    "best": (2.73325, 2.28125),
    "cnn": (2.27792, 2.19948),
    "large": (2.33802, 2.31441),
    "mixer": (2.88483, 2.90838),
    "mlp": (2.33627, 2.33282),
    "mobilenet": (2.33514, 2.31061),
    "resnet": (2.34045, 2.33707),
    "rnn": (2.48382, 2.46299),
    "speedrun": (2.28978, 2.20923),
    "vit": (2.78788, 2.78585),
}
GOLDEN_LOSSES["ensemble"] = GOLDEN_LOSSES["best"]  # its members are configs/best.py's


@pytest.mark.parametrize("config_name", CLASSIFIER_CONFIGS)
def test_config_trains_on_mock_data(config_name, mock_mnist, tmp_path):
  # As a population of 2 at least (docs/populations.md), which every model must train in.
  config = shrink(load_config(config_name))
  config.population = max(config.population, 2)
  state, summary = train_and_evaluate(config, str(tmp_path))
  # Its last checkpoint holds the state it ended with.
  saved = restore.restore(str(tmp_path), "latest").state
  for a, b in zip(jax.tree_util.tree_leaves(state.params), jax.tree_util.tree_leaves(saved.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert len(summary["members"]) == config.population
  # A population's state counts steps per member (configs/ensemble.py): every member's the same.
  assert set(np.ravel(state.step).tolist()) == {(64 - round(64 * config.validation_fraction)) // 16}
  assert summary["test"]["count"] == 48
  assert np.isfinite(summary["train/loss"])
  # speedrun.py trains on all of train: no validation split, so no validation metrics.
  assert np.isfinite(summary["validation/loss"]) if config.validation_fraction else (
      "validation/loss" not in summary)
  for name in ("config.json", "metrics.jsonl", "test_metrics.json"):
    assert (tmp_path / name).is_file()
  assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
  records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert {"train/loss", "train/accuracy", "train/grad_norm"} <= set(records[0])
  assert json.loads((tmp_path / "config.json").read_text())["model"]["name"] == config.model.name


@pytest.mark.parametrize("config_name", CONFIG_NAMES)
def test_config_docstring_has_command_and_accuracy(config_name):
  doc = importlib_doc(config_name)
  assert f"python train.py --config=configs/{config_name}.py" in doc
  if config_name not in CLASSIFIER_CONFIGS:
    assert "%" in doc, "state what this config reaches"
  elif configs.waits_for_device(config_name):
    # Too large for this CPU (configs/large.py): its accuracy comes from a lent accelerator;
    # until then the docstring says so and gives what was measured here, its CPU epoch time.
    assert re.search(r"one epoch takes about [\d.,]+ (s|seconds|minutes|hours?) on a 2-core "
                     r"CPU", " ".join(doc.split())), "state its CPU epoch time"
  elif not re.search(r"\d\.\d\d \+- \d\.\d\d%[\w ]* over \d+ seeds", doc):
    # An accuracy claim is a mean +- std over seeds; a new config is not measured yet.
    message = (f"configs/{config_name}.py has no `M +- S% over N seeds` test accuracy: run "
               f"`python bench/accuracy.py --configs={config_name} --results=docs/results.md`, "
               f"which writes its row into docs/results.md, then paste the line it prints into "
               f"configs/{config_name}.py's docstring and its row into README.md's results table")
    if ships(config_name):
      pytest.fail(message)
    pytest.skip(message)


def test_a_config_without_its_accuracy_fails_if_it_ships_and_skips_if_new(monkeypatch):
  import importlib
  monkeypatch.setattr(importlib.import_module("configs.mlp"), "__doc__",
                      "MLP.\n\n    python train.py --config=configs/mlp.py\n\nReaches about 98%.")
  with pytest.raises(pytest.fail.Exception, match="no `M [+]- S% over N seeds`"):
    test_config_docstring_has_command_and_accuracy("mlp")
  monkeypatch.setattr(sys.modules[__name__], "ships", lambda name: False)
  with pytest.raises(pytest.skip.Exception, match=r"run `python bench/accuracy.py "
                     r"--configs=mlp --results=docs/results.md`, .* into configs/mlp.py's "
                     r"docstring"):
    test_config_docstring_has_command_and_accuracy("mlp")


def test_the_configs_that_ship_are_those_of_docs_results_md():
  assert all(ships(n) for n in ("cnn", "mlp", "best", "ensemble"))  # ensemble: best.py's row
  assert not any(ships(n) for n in ("dcgan", "cgan"))  # scored otherwise (their docstrings)


def importlib_doc(config_name: str) -> str:
  import importlib
  return importlib.import_module(f"configs.{config_name}").__doc__ or ""


@pytest.mark.parametrize("config_name", CLASSIFIER_CONFIGS)
def test_one_step_golden_loss(config_name, request):
  config = load_config(config_name)
  model = build.build_model(config, num_classes=10)
  tx = optim.make_optimizer(config, optim.make_schedule(config, steps_per_epoch=100))
  init_key, train_key = jax.random.split(jax.random.PRNGKey(0))
  state = state_lib.create_train_state(model, tx, (28, 28, 1), init_key, train_key,
                                   ema=config.ema_decay > 0)
  rng = np.random.default_rng(0)
  batch = {"image": rng.integers(0, 256, (32, 28, 28, 1), dtype=np.uint8),
           "label": rng.integers(0, 10, (32,), dtype=np.int32)}
  step = jax.jit(functools.partial(steps.train_step, **classify.step_options(config)))
  state, m1 = step(state, batch, state.rng)
  state, m2 = step(state, batch, state.rng)
  losses = (float(m1["loss"]), float(m2["loss"]))
  if config_name not in GOLDEN_LOSSES:
    _record_unpinned(request, config_name, losses, ships(config_name))
  # XLA releases round differently: jax 0.7.1 is up to 1.5e-4 relative off these pins (made
  # with 0.10.2; 0.12 is within 2e-6).
  np.testing.assert_allclose(losses, GOLDEN_LOSSES[config_name], rtol=3e-4)
  assert float(m1["grad_norm"]) > 0


def _record_unpinned(request, config_name: str, losses: tuple[float, float],
                     shipped: bool) -> None:
  """A config without pinned losses: its losses go into pytest's cache
  (.pytest_cache/v/golden_losses/<name>), and the test skips for a new architecture
  (docs/extending.md), saying where to pin them, or fails for a config that ships."""
  where = ""
  if getattr(request.config, "cache", None) is not None:  # absent with -p no:cacheprovider
    request.config.cache.set(f"golden_losses/{config_name}", list(losses))
    where = f" (recorded in .pytest_cache/v/golden_losses/{config_name})"
  (pytest.fail if shipped else pytest.skip)(
      f"configs/{config_name}.py is {'shipped (docs/results.md) but' if shipped else 'new:'} "
      f"its first two losses are not pinned yet{where}. Check that they are what you expect, "
      f"then add to GOLDEN_LOSSES in tests/test_train.py: \"{config_name}\": ({losses[0]:.5f}, "
      f"{losses[1]:.5f}),")


def test_a_config_without_pinned_losses_is_recorded_and_skipped(monkeypatch, request):
  monkeypatch.delitem(GOLDEN_LOSSES, "mlp")
  # mlp.py ships (a row in docs/results.md): a missing pin fails it.
  with pytest.raises(pytest.fail.Exception, match=r'configs/mlp.py is shipped \(docs/results'
                     r'.md\) but.*'
                     r'GOLDEN_LOSSES in tests/test_train.py: "mlp": \(2.336\d\d, 2.332\d\d\),'):
    test_one_step_golden_loss("mlp", request)
  # A new config (no row yet) skips with the same line.
  monkeypatch.setattr(sys.modules[__name__], "ships", lambda name: False)
  with pytest.raises(pytest.skip.Exception, match=r'configs/mlp.py is new: its first two losses '
                     r'are not pinned yet.*"mlp": \(2.336\d\d, 2.332\d\d\),'):
    test_one_step_golden_loss("mlp", request)
  if getattr(request.config, "cache", None) is not None:  # absent with -p no:cacheprovider
    recorded = request.config.cache.get("golden_losses/mlp", None)
    np.testing.assert_allclose(recorded, (2.33627, 2.33282), rtol=3e-4)


def _jsonl(path: pathlib.Path) -> list[dict]:
  # Timings differ run to run; everything else must not.
  return [{k: v for k, v in json.loads(line).items() if not k.startswith("time/")}
          for line in path.read_text().splitlines()]


def test_same_seed_same_metrics_different_seed_different(mock_mnist, tmp_path):
  config = shrink(load_config("cnn"), log_every_steps=1, **{"model.dropout": 0.3})
  _, a = train_and_evaluate(config, str(tmp_path / "a"))
  _, b = train_and_evaluate(config, str(tmp_path / "b"))
  assert _jsonl(tmp_path / "a" / "metrics.jsonl") == _jsonl(tmp_path / "b" / "metrics.jsonl")
  assert a["test"] == b["test"]
  config.seed = 1
  _, c = train_and_evaluate(config, str(tmp_path / "c"))
  assert _jsonl(tmp_path / "a" / "metrics.jsonl") != _jsonl(tmp_path / "c" / "metrics.jsonl")


def test_bfloat16_trains_with_float32_state(mock_mnist, tmp_path, capsys):
  config = shrink(load_config("cnn"), dtype="bfloat16")
  state, summary = train_and_evaluate(config, str(tmp_path))
  assert np.isfinite(summary["train/loss"]) and summary["test"]["count"] == 48
  leaves = jax.tree_util.tree_leaves((state.params, state.opt_state))
  floats = {x.dtype for x in leaves if jnp.issubdtype(x.dtype, jnp.floating)}
  assert floats == {np.dtype("float32")}
  # On CPU, where bf16 is the slower choice, the user is told so.
  said = "bfloat16 compute is slower than float32 on CPU" in capsys.readouterr().out
  assert said == (jax.default_backend() == "cpu")


def test_non_finite_loss_stops_at_the_step(mock_mnist, tmp_path):
  # An infinite learning rate: step 1's loss is finite, the update makes step 2's NaN.
  config = shrink(load_config("mlp"), optimizer="sgd", schedule="constant",
                  learning_rate=float("inf"), log_every_steps=4)
  with pytest.raises(NonFiniteLossError, match=r"became nan at step 2\b"):
    train_and_evaluate(config, str(tmp_path))


def test_the_non_finite_error_offers_a_resume_only_when_there_is_a_checkpoint(mock_mnist,
                                                                              tmp_path):
  config = shrink(load_config("mlp"), optimizer="sgd", schedule="constant",
                  learning_rate=float("inf"), log_every_steps=4)
  with pytest.raises(NonFiniteLossError) as fresh:
    train_and_evaluate(config, str(tmp_path / "fresh"))
  assert "allow_config_changes" not in str(fresh.value)
  # A run that saved a checkpoint before it diverged can continue it with other settings.
  train_and_evaluate(shrink(config, learning_rate=0.01), str(tmp_path / "saved"))
  with pytest.raises(NonFiniteLossError) as resumed:
    train_and_evaluate(shrink(config, num_epochs=2, **{"checkpoint.allow_config_changes": True}),
                       str(tmp_path / "saved"))
  assert "--config.checkpoint.allow_config_changes=True" in str(resumed.value)


@pytest.mark.parametrize("override", [{"dataset": "no_such_dataset"}, {"batch_size": 100_000}])
def test_a_refused_run_leaves_no_workdir_behind(override, mock_mnist, tmp_path):
  with pytest.raises(ConfigError):
    train_and_evaluate(shrink(load_config("mlp"), **override), str(tmp_path / "new" / "run"))
  assert not (tmp_path / "new").exists()


def test_missing_data_leaves_no_workdir_behind(tmp_path):
  with pytest.raises(DataNotFoundError):
    train_and_evaluate(shrink(load_config("mlp"), data_dir=str(tmp_path / "no_data"),
                              data_url=unused_url()),
                       str(tmp_path / "new" / "run"))
  assert not (tmp_path / "new").exists() and not (tmp_path / "no_data").exists()


def test_no_checkpoint_is_saved_past_a_non_finite_loss(mock_mnist, tmp_path):
  # Step 2 is both the first NaN and a save step, between two log steps: saving it would make
  # every resume fail the same way.
  config = shrink(load_config("mlp"), optimizer="sgd", schedule="constant",
                  learning_rate=float("inf"), log_every_steps=4,
                  **{"checkpoint.every_steps": 2})
  with pytest.raises(NonFiniteLossError, match=r"became nan at step 2\b"):
    train_and_evaluate(config, str(tmp_path))
  assert not list((tmp_path / "checkpoints").glob("[0-9]*"))


def test_an_infinite_gradient_norm_stops_too():
  with pytest.raises(NonFiniteLossError, match=r"gradient norm became inf at step 6\b"):
    progress.check_finite({"loss": np.array([0.5, 0.4]), "grad_norm": np.array([3.0, np.inf])}, 5)
  progress.check_finite({"loss": np.array([0.5]), "grad_norm": np.array([3.0])}, 5)


def test_an_unwritable_workdir_fails_before_the_data_is_loaded(tmp_path):
  (tmp_path / "a_file").write_text("")
  with pytest.raises(ConfigError, match=r"Cannot write to the workdir .*a_file"):
    train_and_evaluate(shrink(load_config("mlp"), data_dir=str(tmp_path / "no_data")),
                       str(tmp_path / "a_file"))


def test_missing_data_names_the_dir_and_the_fixes(tmp_path):
  # MNIST is downloaded when missing: a failed download names the URL, the folder and the ways on.
  url = unused_url()
  config = shrink(load_config("mlp"), data_dir=str(tmp_path / "empty"), data_url=url)
  with pytest.raises(DataNotFoundError) as e:
    train_and_evaluate(config)
  msg = str(e.value)
  assert f"{url}train-images-idx3-ubyte.gz" in msg and str(tmp_path / "empty" / "mnist") in msg
  assert "by hand" in msg and "--config.data_url" in msg and "--config.data_dir" in msg
  # Other tfds datasets are read only where prepared: the message says how to prepare them.
  with pytest.raises(DataNotFoundError) as e:
    train_and_evaluate(shrink(config, dataset="cifar10"))
  msg = str(e.value)
  assert str(tmp_path / "empty") in msg and "TFDS_DATA_DIR" in msg and "tfds build cifar10" in msg


@pytest.mark.parametrize("field, value, match", [
    ("optimizer", "adagrad", "Unknown optimizer 'adagrad'; choose one of sgd, momentum"),
    ("schedule", "linear", "Unknown schedule 'linear'"),
    ("dtype", "float8", "Unknown dtype 'float8'"),
    ("model.name", "resnet9000", "Unknown model 'resnet9000'. Known models: "),
    ("batch_size", 100_000, r"batch_size=100000 exceeds the \d+ training examples"),
    ("validation_fraction", 1.0, r"validation_fraction must be in \[0, 1\)"),
    ("dataset", "no_such_dataset", "Unknown tfds dataset 'no_such_dataset'"),
    # Each of these ran on before: for ever (-5), to a crash after an epoch (0), or silently
    # on other data (-100 dropped the last 100 examples) or a meaningless loss.
    ("checkpoint.every_steps", -5, "checkpoint.every_steps must be at least 0, got -5"),
    ("checkpoint.every_epochs", 0, "checkpoint.every_epochs must be at least 1, got 0"),
    ("checkpoint.keep", 0, "checkpoint.keep must be at least 1, got 0"),
    ("stop_after_steps", -3, "stop_after_steps must be at least 0"),
    ("max_train_examples", -100, "max_train_examples must be at least 0, got -100"),
    ("learning_rate", -1.0, "learning_rate must be positive, got -1.0"),
    ("label_smoothing", 2.0, r"label_smoothing must be in \[0, 1\), got 2.0"),
    # Tracebacks from int() and from jax's mesh utilities until these were checked.
    ("mesh_shape", ("abc",), r"mesh_shape must be whole numbers .* got \('abc',\)"),
    ("mesh_shape", (0,), r"mesh_shape must be whole numbers .* got \(0,\)"),
    # A model that cannot be built says why and where, as the command line shows no traceback.
    ("model.dropout", 1.5, r"Model 'mlp' cannot be built .*dropout=1.5.*Dropout rate must be in "
                           r"\[0, 1\], got 1.5 \(raised at \S*nets/layers.py:\d+\)"),
])
def test_bad_config_values_fail_clearly(field, value, match, mock_mnist):
  with pytest.raises(ValueError, match=match):
    train_and_evaluate(shrink(load_config("mlp"), **{field: value}))


def test_a_cnn_with_more_stages_than_its_input_has_room_for_says_so(mock_mnist):
  # Five 2x2 pools take 28 pixels to 0: it ended in a ZeroDivisionError in the reshape.
  with pytest.raises(ConfigError, match=r"28x28 images are too small for 6 stages that each "
                     r"halve them: after 4 they are 1x1; give --config.model.features at most 4 "
                     r"entries \(raised at \S*nets/cnn.py:\d+\)"):
    train_and_evaluate(shrink(load_config("cnn"), **{"model.features": (4,) * 6}))
  # Strided convolutions never reach 0 pixels: as many stages as asked for.
  state, _ = train_and_evaluate(shrink(load_config("cnn"), **{"model.features": (4,) * 6,
                                                              "model.downsample": "stride"}))
  assert sorted(k for k in state.params if k.startswith("Conv_")) == [f"Conv_{i}"
                                                                       for i in range(6)]


def test_a_run_says_where_its_results_and_its_report_went(mock_mnist, tmp_path, capsys):
  train_and_evaluate(shrink(load_config("mlp"), report=True), str(tmp_path))
  out = capsys.readouterr().out
  assert f"workdir: {tmp_path} (config.json, metrics.jsonl, tensorboard/, checkpoints/)" in out
  assert f"report: {tmp_path / 'report.html'} (and the figures as PNGs beside it)" in out


def test_switching_the_model_drops_the_fields_of_the_config_file_s_model():
  config = load_config("cnn")
  config.model.name, config.model.dropout = "resnet", 0.1  # as the command line sets them
  switched, note = build.switch_model(config, "cnn", given=["dropout"])
  assert dict(switched.model) == {"name": "resnet", **nets.config_fields("resnet"),
                                  "dropout": 0.1}
  assert "(batch_norm, convs_per_stage, dense, downsample, features, kernel_size, weight_init)" in note
  build.build_model(switched, 10)  # the cnn's (32, 64) features would not fit resnet's 3 stages
  assert build.switch_model(load_config("cnn"), "cnn", given=[]) == (load_config("cnn"), None)


def _parse(monkeypatch, *args: str):
  argv = ["train.py", f"--config={REPO / 'configs' / 'cnn.py'}", *args]
  monkeypatch.setattr("sys.argv", argv)  # config_flags reads the overrides from sys.argv
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", flag_values=fv, lock_config=True)
  fv(argv)
  return fv.config


def test_overrides_apply_and_typos_are_rejected(monkeypatch):
  config = _parse(monkeypatch, "--config.num_epochs=2", "--config.model.features=(8,16)",
                  "--config.grad_clip_norm=1.0", "--config.data_dir=/x")
  assert config.num_epochs == 2 and tuple(config.model.features) == (8, 16)
  assert config.grad_clip_norm == 1.0 and config.data_dir == "/x"
  with pytest.raises(AttributeError, match='Did you mean "num_epochs"'):
    _parse(monkeypatch, "--config.num_epoch=2")
  with pytest.raises(flags.Error, match="batch_size"):
    _parse(monkeypatch, "--config.batch_size=lots")


@pytest.mark.parametrize("name", optim.OPTIMIZERS)
def test_every_optimizer_descends(name):
  config = load_config("mlp")
  config.update(optimizer=name, schedule="constant", learning_rate=0.1, weight_decay=1e-3,
                grad_clip_norm=1.0)
  tx = optim.make_optimizer(config, optim.make_schedule(config, steps_per_epoch=10))
  params = {"w": jnp.ones((3, 3)), "b": jnp.ones((3,))}
  loss = lambda p: jnp.sum(p["w"] ** 2) + jnp.sum(p["b"] ** 2)
  opt_state = tx.init(params)
  for _ in range(5):
    updates, opt_state = tx.update(jax.grad(loss)(params), opt_state, params)
    params = optax.apply_updates(params, updates)
  assert float(loss(params)) < 12.0 * 0.9


def test_schedules_have_their_shape():
  config = load_config("mlp")
  config.update(learning_rate=1.0, num_epochs=10, warmup_epochs=2, end_lr_factor=0.0)
  lr = {name: optim.make_schedule(_with(config, schedule=name), 100) for name in optim.SCHEDULES}
  assert float(lr["constant"](0)) == float(lr["constant"](999)) == 1.0
  assert float(lr["cosine"](0)) == 1.0 and float(lr["cosine"](1000)) < 1e-6
  assert float(lr["warmup_cosine"](0)) == 0.0 and float(lr["warmup_cosine"](200)) == 1.0
  assert float(lr["warmup_cosine"](100)) == pytest.approx(0.5)
  onecycle = [float(lr["onecycle"](s)) for s in range(0, 1001, 50)]
  peak = int(np.argmax(onecycle))
  assert 0 < peak < len(onecycle) - 1 and onecycle[peak] == pytest.approx(1.0, rel=0.05)
  assert onecycle[0] < 0.1 and onecycle[-1] < 1e-3
  # The GANs': held for 70% of the 1,000 steps, then linearly to 0.
  assert float(lr["constant_linear"](0)) == float(lr["constant_linear"](700)) == 1.0
  assert float(lr["constant_linear"](850)) == pytest.approx(0.5)
  assert float(lr["constant_linear"](1000)) == 0.0


def _with(config, **fields):
  c = ml_collections.ConfigDict(config.to_dict())
  c.update(fields)
  return c


def test_scanned_steps_match_single_steps(mock_mnist, tmp_path):
  # GPU/TPU runs scan several steps per call; it must train exactly as the per-step loop does.
  base = shrink(load_config("cnn"), log_every_steps=3, max_train_examples=112,
                **{"model.dropout": 0.2})
  runs = {}
  for n in (1, 3):
    config = shrink(base, steps_per_call=n)
    config.update(log_every_steps=3, max_train_examples=112, num_epochs=2)
    runs[n] = train_and_evaluate(config, str(tmp_path / str(n)))[1]
  one, scanned = _jsonl(tmp_path / "1" / "metrics.jsonl"), _jsonl(tmp_path / "3" / "metrics.jsonl")
  assert [r["step"] for r in one] == [r["step"] for r in scanned]
  for a, b in zip(one, scanned):
    for k in a:
      np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6, err_msg=k)
