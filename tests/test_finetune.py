"""Fine-tuning (init_from, freeze, init_lr_multiplier): what is loaded, re-initialised, frozen
and refused, exact resume, and the gain over training from scratch on real MNIST."""

from __future__ import annotations

import json
import shutil

import jax
import numpy as np
import optax
import pytest
import tensorflow_datasets as tfds

from training import ConfigError, Preempted, train_and_evaluate
from training.tasks.classify import finetune
from training.compute import optim
from training.modes.train import checks
from training.modes import evaluate
from training.tasks import restore
from training.store.checkpoint import CheckpointMismatchError, Checkpointer

from conftest import load_config, real_data_dir, shrink

BACKBONE = "^(Conv_|Dense_0/)"  # the CNN's layers but its classifier head, Dense_1


def _config(**overrides):
  return shrink(load_config("cnn"), **overrides)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> str:
  """A run trained on all 10 (mock) classes, to fine-tune from."""
  workdir = str(tmp_path_factory.mktemp("source"))
  with tfds.testing.mock_data(num_examples=64):
    train_and_evaluate(_config(num_epochs=2), workdir)
  return workdir


class _Started(Exception):
  pass


def _initial(config, monkeypatch):
  """The state a run of `config` starts from: what finetune.initialize returns to the loop."""
  initialize, got = finetune.initialize, []

  def capture(*args):
    got.append(initialize(*args)[0])  # the state; the record of its origin is tested below
    raise _Started
  with monkeypatch.context() as m:
    m.setattr(finetune, "initialize", capture)
    with pytest.raises(_Started):
      train_and_evaluate(config)
  return got[0]


def _flat(params) -> dict[str, np.ndarray]:
  return {optim.param_path(p): np.asarray(v)
          for p, v in jax.tree_util.tree_flatten_with_path(params)[0]}


def test_the_backbone_is_loaded_and_the_head_reinitialised_for_other_classes(mock_mnist, source,
                                                                             monkeypatch):
  loaded = _flat(restore.restore(source).state.params)
  five = _flat(_initial(_config(classes="5,6,7,8,9", init_from=source), monkeypatch).params)
  scratch = _flat(_initial(_config(classes="5,6,7,8,9"), monkeypatch).params)
  assert five["Dense_1/kernel"].shape == (128, 5)
  for name in five:
    if name.startswith("Dense_1/"):  # the head: this run's own initialisation
      np.testing.assert_array_equal(five[name], scratch[name])
    else:
      np.testing.assert_array_equal(five[name], loaded[name])
  # The same classes keep the loaded head; the same count of other classes gets a new one.
  same = _flat(_initial(_config(init_from=source), monkeypatch).params)
  for name in same:
    np.testing.assert_array_equal(same[name], loaded[name])
  other = _flat(_initial(_config(classes="9,8,7,6,5,4,3,2,1,0", init_from=source),
                         monkeypatch).params)
  assert not np.array_equal(other["Dense_1/kernel"], loaded["Dense_1/kernel"])
  np.testing.assert_array_equal(other["Dense_0/kernel"], loaded["Dense_0/kernel"])


def test_a_frozen_backbone_stays_bit_identical_while_the_head_trains(mock_mnist, source,
                                                                     tmp_path, monkeypatch):
  # Weight decay and clipping must not move frozen parameters either.
  config = _config(classes="5,6,7,8,9", init_from=source, freeze=BACKBONE, num_epochs=2,
                   optimizer="adamw", weight_decay=0.1, grad_clip_norm=1.0)
  before = _flat(_initial(config, monkeypatch).params)
  state, _ = train_and_evaluate(config, str(tmp_path))
  after, loaded = _flat(state.params), _flat(restore.restore(source).state.params)
  assert int(state.step) > 0
  for name in after:
    if name.startswith("Dense_1/"):
      assert not np.array_equal(after[name], before[name]), name
    else:
      assert after[name].tobytes() == loaded[name].tobytes(), name


def test_the_multiplier_scales_the_loaded_parameters_updates_only():
  config = load_config("cnn")
  config.update(init_from="x", init_lr_multiplier=0.25, freeze="^frozen", weight_decay=0.5)
  params = {"frozen": {"kernel": np.ones((2, 2))}, "loaded": {"kernel": np.ones((2, 2))},
            "head": {"kernel": np.ones((2, 2))}}
  grads = jax.tree_util.tree_map(lambda p: np.full_like(p, 0.3), params)
  updates = {}
  for multiplier in (1.0, 0.25):
    config.init_lr_multiplier = multiplier
    tx = optim.make_optimizer(config, optax.constant_schedule(0.1),
                              loaded=lambda path: not path.startswith("head/"))
    updates[multiplier], _ = tx.update(grads, tx.init(params), params)
  assert not np.any(updates[0.25]["frozen"]["kernel"])  # weight decay included
  np.testing.assert_allclose(updates[0.25]["loaded"]["kernel"],
                             0.25 * updates[1.0]["loaded"]["kernel"], rtol=1e-6)
  np.testing.assert_array_equal(updates[0.25]["head"]["kernel"], updates[1.0]["head"]["kernel"])


@pytest.mark.parametrize("override, match", [
    ({"model.features": (16, 64)},
     r"(?s)mismatching variables.*\n  params/Conv_0/kernel: checkpoint \(3, 3, 1, 32\) vs this "
     r"config \(3, 3, 1, 16\)\n.*Fine-tune with that run's model settings \(.*features=\(32, 64\)"),
    ({"model.dense": (128, 64)}, r"params/Dense_2/kernel: checkpoint missing vs this config"),
    ({"model.batch_norm": True}, r"batch_stats/BatchNorm_0/mean: checkpoint missing"),
])
def test_a_mismatched_backbone_is_refused_with_the_parameters(mock_mnist, source, tmp_path,
                                                             override, match):
  with pytest.raises(ConfigError, match=match):
    train_and_evaluate(_config(init_from=source, **override), str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()  # refused before anything was written


def test_the_mlp_cannot_start_from_the_cnn(mock_mnist, source):
  with pytest.raises(ConfigError, match=r"params/Conv_0/kernel: checkpoint \(3, 3, 1, 32\) vs "
                     r"this config missing"):
    train_and_evaluate(shrink(load_config("mlp"), init_from=source))


@pytest.mark.parametrize("fields, match", [
    ({"freeze": "("}, r"freeze='\(' is not a regular expression"),
    ({"init_lr_multiplier": 0.1}, r"init_lr_multiplier .* set --config.init_from=DIR too"),
    ({"init_lr_multiplier": 0.0, "init_from": "x"}, r"init_lr_multiplier must be positive"),
    ({"init_from": "/nonexistent/run:best"}, r"'/nonexistent/run' holds no checkpoints/"),
])
def test_fine_tuning_fields_are_checked_before_the_data_is_loaded(fields, match, tmp_path):
  # No data where the run looks (nor at the loopback mirror): loading first would raise another
  # error than the field's.
  config = _config(data_dir=str(tmp_path / "no_data"), data_url="http://127.0.0.1:9/",
                   **fields)
  with pytest.raises(ConfigError, match=match):
    train_and_evaluate(config, str(tmp_path / "run"))
  assert not (tmp_path / "no_data").exists() and not (tmp_path / "run").exists()


def test_only_classifiers_are_fine_tuned():
  with pytest.raises(ConfigError, match=r"apply to classifiers, not to the 'gan' task"):
    checks.validate(shrink(load_config("dcgan"), freeze="^g"))


def test_a_freeze_that_matches_nothing_or_everything_lists_the_paths(mock_mnist, source):
  for freeze, what in (("conv", "none of"), ("_", "every parameter")):
    with pytest.raises(ConfigError, match=rf"freeze='{freeze}' matches {what}.*paths are: "
                       r"Conv_0/bias, Conv_0/kernel, .*, Dense_1/kernel\.$"):
      train_and_evaluate(_config(init_from=source, freeze=freeze))


def test_an_unknown_checkpoint_of_the_source_is_named(mock_mnist, source):
  with pytest.raises(ConfigError, match=r"init_from='.*:7': No checkpoint '7' in .*one of the "
                     r"steps \[3, 6\]"):
    train_and_evaluate(_config(init_from=f"{source}:7"))


def _losses(workdir) -> dict[int, float]:
  return {r["step"]: r["train/loss"] for r in map(json.loads, open(workdir / "metrics.jsonl"))
          if "train/loss" in r and "epoch" not in r}


def test_a_fine_tuning_run_resumes_exactly_without_its_source(mock_mnist, source, tmp_path,
                                                              capsys):
  """The resumed run reads which parameters were loaded (the multiplier's) from its own
  checkpoint: its source may be moved away, even before a finished run only evaluates."""
  shutil.copytree(source, tmp_path / "source")
  with Checkpointer.reader(str(tmp_path / "source")) as ckpt:
    source_step, _ = ckpt.choose("best")  # what init_from (its best checkpoint) loads
  config = lambda **o: _config(classes="5,6,7,8,9", init_from=str(tmp_path / "source"),
                               init_lr_multiplier=0.5, log_every_steps=1, ema_decay=0.9,
                               **{"model.dropout": 0.3, "freeze": "^Conv_0/", "num_epochs": 3,
                                  **o})
  whole, _ = train_and_evaluate(config(), str(tmp_path / "whole"))
  with pytest.raises(Preempted, match="at step 2"):
    train_and_evaluate(config(stop_after_steps=2), str(tmp_path / "split"))
  (tmp_path / "source").rename(tmp_path / "moved")
  capsys.readouterr()
  resumed, _ = train_and_evaluate(config(), str(tmp_path / "split"))
  assert "so the source is not read again" in "".join(capsys.readouterr())
  with Checkpointer.reader(str(tmp_path / "split")) as ckpt:
    origin = ckpt.read_item(ckpt.latest_step(), "origin")
  assert origin["head"] == ["params/Dense_1/bias", "params/Dense_1/kernel"], origin
  assert (origin["directory"], origin["step"]) == (str(tmp_path / "source"), source_step), origin
  assert int(resumed.step) == int(whole.step) > 2
  for a, b in zip(jax.tree_util.tree_leaves(whole), jax.tree_util.tree_leaves(resumed)):
    assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
  assert _losses(tmp_path / "whole") == _losses(tmp_path / "split")
  # The optimizer state's structure follows from the config: evaluation needs no source run.
  result = evaluate.evaluate(str(tmp_path / "split"), "latest")
  assert result["checkpoint_step"] == int(whole.step)
  again, _ = train_and_evaluate(config(), str(tmp_path / "whole"))  # finished: evaluates only
  assert int(again.step) == int(whole.step)
  # Another freeze changes the optimizer's arrays: the refusal names the setting, not only them.
  with pytest.raises(CheckpointMismatchError, match=r"(?s)another structure .*\nThe settings that "
                     r"changed \(checkpoint -> now\):\n  freeze: '\^Conv_0/' -> '\^Dense_0/'"):
    train_and_evaluate(config(freeze="^Dense_0/", num_epochs=4), str(tmp_path / "whole"))


@pytest.mark.slow
def test_starting_from_digits_0_to_4_beats_scratch_on_5_to_9_at_10_per_class(tmp_path,
                                                                             data_cache):
  # The ResNet: the plain CNN learns 10 examples per class well from scratch, and gains about
  # 4 points only (docs/finetuning.md).
  resnet = lambda **o: shrink(load_config("resnet"), **{
      "data_dir": real_data_dir(), "cache_dir": data_cache, "max_eval_examples": 0,
      "eval_batch_size": 1000, "log_every_steps": 50, **o})
  train_and_evaluate(resnet(classes="0,1,2,3,4", max_train_examples=0, batch_size=128),
                     str(tmp_path / "pre"))
  few = dict(classes="5,6,7,8,9", max_per_class=10, validation_fraction=0.0, batch_size=10,
             num_epochs=20)
  _, tuned = train_and_evaluate(resnet(init_from=str(tmp_path / "pre"), **few))
  _, scratch = train_and_evaluate(resnet(**few))
  assert tuned["test"]["count"] == scratch["test"]["count"] > 4800  # all of 5-9's test images
  gain = tuned["test"]["accuracy"] - scratch["test"]["accuracy"]
  assert gain >= 0.10, (tuned["test"]["accuracy"], scratch["test"]["accuracy"])
