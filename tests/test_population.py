"""Populations: several members trained in one compiled program (--config.population, --config.sweep),
each as independent as a run of its own; their records, ensemble, modes, resume and devices."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from training import ConfigError, NonFiniteLossError, Preempted, members, train_and_evaluate
from training.modes import evaluate, export, predict
from training.modes.train import checks
from training.tasks import restore

from conftest import REPO, kill_once_logged, load_config, real_data_dir, shrink


def _real(data_cache, **overrides):
  """The MLP on 1,024 real training images: 16 steps an epoch, a second or two each."""
  return shrink(load_config("mlp"), **{
      "max_train_examples": 1024, "max_eval_examples": 2000, "batch_size": 64,
      "eval_batch_size": 500, "num_epochs": 2, "log_every_steps": 8, "data_dir": real_data_dir(),
      "cache_dir": data_cache, **overrides})


def test_members_are_the_sweep_times_the_seeds():
  config = load_config("mlp")
  config.update(seed=5, population=2, sweep='{"learning_rate": [0.001, 0.003]}')
  population = members.Population.of(config)
  got = [(m.index, m.seed, m.values) for m in population.members]
  assert got == [(0, 5, {"learning_rate": 0.001}), (1, 6, {"learning_rate": 0.001}),
                 (2, 5, {"learning_rate": 0.003}), (3, 6, {"learning_rate": 0.003})]
  assert population.swept == ("learning_rate",)


@pytest.mark.parametrize("sweep, message", [
    ('{"model.features": [[32], [64]]}', "cannot vary 'model.features': it changes the program"),
    ('{"batch_size": [64, 128]}', "cannot vary 'batch_size'"),
    ('{"model.name": ["mlp", "cnn"]}', "cannot vary 'model.name'"),
    ('{"learning_rate": 0.1}', "must be a JSON object of non-empty lists"),
    ('{"learnin_rate": [0.1]}', "'learnin_rate', which is not a field"),
    ("learning_rate=0.1", "is not JSON"),
    ('{"learning_rate": ["fast"]}', "takes numbers"),
    ('{"augment.crop": [1, 1.5]}', "augment.crop takes whole numbers"),
    ('{"augment.elastic_sigma": [4.0, 0.0]}', "sweep: augment.elastic_sigma must be positive"),
    ('{"augment.zoom": [0.1, 1.2]}', "sweep: augment.zoom must be below 1"),
])
def test_a_sweep_that_cannot_share_one_program_is_refused_naming_the_field(sweep, message):
  config = load_config("cnn")
  config.sweep = sweep
  with pytest.raises(ConfigError, match=message):
    checks.validate(config)


def test_a_population_of_three_writes_members_mean_std_and_an_ensemble(data_cache, tmp_path):
  # The whole test split, as --mode=evaluate scores it.
  state, summary = train_and_evaluate(_real(data_cache, population=3, max_eval_examples=0),
                                      str(tmp_path))
  assert jax.tree_util.tree_leaves(state.params)[0].shape[0] == 3
  saved = json.loads((tmp_path / "test_metrics.json").read_text())
  accuracies = [m["accuracy"] for m in saved["members"]]
  assert [m["seed"] for m in saved["members"]] == [0, 1, 2] and len(set(accuracies)) == 3
  assert saved["mean"] == pytest.approx(np.mean(accuracies))
  assert saved["std"] == pytest.approx(np.std(accuracies, ddof=1))
  assert saved["ensemble"]["accuracy"] >= saved["mean"]  # averaged probabilities help
  assert saved["ensemble"]["count"] == 10_000 and summary["test"]["accuracy"] == saved["mean"]
  records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert {r["member"] for r in records if "member" in r} == {0, 1, 2}
  last = [r for r in records if r.get("epoch") == 2 and "member" not in r][0]
  assert last["validation/accuracy_std"] > 0 and "validation/ensemble_accuracy" in last
  assert all((tmp_path / "tensorboard" / f"member_{k}").is_dir() for k in range(3))
  # --mode=evaluate on the workdir: the same ensemble, and each member on its own.
  result = evaluate.evaluate(str(tmp_path), "latest", data_dir=real_data_dir())
  assert result["accuracy"] == saved["ensemble"]["accuracy"]
  assert [m["accuracy"] for m in result["members"]] == accuracies
  one = evaluate.evaluate(str(tmp_path), "latest", data_dir=real_data_dir(), member=1)
  assert one["accuracy"] == accuracies[1] and one["member"]["seed"] == 1
  with pytest.raises(ConfigError, match="choose 0 to 2"):
    restore.restore(str(tmp_path), "latest", member=3)


def test_a_member_trains_as_a_separate_run_with_its_seed(data_cache, tmp_path):
  _, population = train_and_evaluate(_real(data_cache, population=2, seed=3), str(tmp_path / "p"))
  for k, seed in enumerate((3, 4)):
    _, single = train_and_evaluate(_real(data_cache, seed=seed), str(tmp_path / f"s{seed}"))
    assert population["members"][k]["seed"] == seed
    assert abs(population["members"][k]["accuracy"] - single["test"]["accuracy"]) <= 0.001


def test_a_sweep_over_two_learning_rates_matches_a_run_at_each(data_cache, tmp_path):
  sweep = '{"learning_rate": [0.0003, 0.003]}'
  _, population = train_and_evaluate(_real(data_cache, sweep=sweep), str(tmp_path / "sweep"))
  got = [m["accuracy"] for m in population["members"]]
  assert [m["learning_rate"] for m in population["members"]] == [0.0003, 0.003]
  assert abs(got[0] - got[1]) > 0.005  # the learning rate matters here
  for k, lr in enumerate((0.0003, 0.003)):
    _, single = train_and_evaluate(_real(data_cache, learning_rate=lr), str(tmp_path / f"{k}"))
    assert abs(got[k] - single["test"]["accuracy"]) <= 0.001


def test_a_diverging_member_stops_the_run_naming_it(data_cache, tmp_path):
  config = _real(data_cache, sweep='{"learning_rate": [0.001, 1e12]}', num_epochs=1)
  with pytest.raises(NonFiniteLossError, match=r"of member 1 \(seed 0, learning_rate=1e\+12\)"):
    train_and_evaluate(config, str(tmp_path))


def test_predict_export_and_init_from_use_the_ensemble_or_one_member(data_cache, tmp_path):
  from PIL import Image
  train_and_evaluate(_real(data_cache, population=2, num_epochs=1), str(tmp_path / "pop"))
  from training import data
  test = data.load("mnist", data_dir=real_data_dir(), cache_dir=data_cache).test
  paths = []
  for i in range(4):
    paths.append(str(tmp_path / f"{i}.png"))
    Image.fromarray(test.images[i, ..., 0]).save(paths[-1])
  ensemble = np.array([p["probabilities"] for p in predict.predict(str(tmp_path / "pop"), paths)])
  each = [np.array([p["probabilities"] for p in predict.predict(str(tmp_path / "pop"), paths,
                                                                   member=k)]) for k in (0, 1)]
  np.testing.assert_allclose(ensemble, (each[0] + each[1]) / 2, atol=1e-6)
  meta = export.export(str(tmp_path / "pop"), "latest", str(tmp_path / "export"), formats=("jax",))
  exported = jax.export.deserialize(bytearray((tmp_path / "export" / "model.jax").read_bytes()))
  np.testing.assert_allclose(exported.call(test.images[:4]), ensemble, atol=1e-5)
  assert meta["members"] == 2
  with pytest.raises(ConfigError, match="population of 2 members: pick one"):
    train_and_evaluate(_real(data_cache, init_from=str(tmp_path / "pop")), str(tmp_path / "ft"))
  _, summary = train_and_evaluate(_real(data_cache, init_from=f"{tmp_path / 'pop'}:member=1",
                                        num_epochs=1), str(tmp_path / "ft"))
  assert summary["test"]["accuracy"] > 0.8


KILL_ARGS = ["--config=configs/mlp.py", "--config.population=3", "--config.num_epochs=3",
             "--config.max_train_examples=2048", "--config.max_eval_examples=1000",
             "--config.batch_size=64", "--config.log_every_steps=5",
             "--config.checkpoint.every_steps=10", "--config.progress_bar=False",
             "--config.report=False"]


def _train(workdir, data_cache) -> subprocess.Popen:
  env = {**os.environ, "TFDS_DATA_DIR": real_data_dir(), "PYTHONUNBUFFERED": "1"}
  return subprocess.Popen([sys.executable, "train.py", *KILL_ARGS, f"--workdir={workdir}",
                           f"--config.cache_dir={data_cache}"], cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _history(workdir) -> list[dict]:
  return [{k: v for k, v in json.loads(line).items() if not k.startswith("time/")}
          for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_a_population_killed_mid_epoch_resumes_exactly(tmp_path, data_cache):
  whole = _train(tmp_path / "whole", data_cache)
  out = whole.communicate(timeout=600)[0]
  assert whole.returncode == 0, out[-3000:]
  killed = _train(tmp_path / "killed", data_cache)
  kill_once_logged(killed, tmp_path / "killed" / "metrics.jsonl", 45)  # mid-epoch 2 (33-64)
  resumed = _train(tmp_path / "killed", data_cache)
  out = resumed.communicate(timeout=600)[0]
  assert resumed.returncode == 0 and "Resuming from the checkpoint at step" in out, out[-3000:]
  saved = [json.loads((tmp_path / w / "test_metrics.json").read_text()) for w in ("whole", "killed")]
  assert saved[0]["members"] == saved[1]["members"] and saved[0]["ensemble"] == saved[1]["ensemble"]
  assert _history(tmp_path / "whole") == _history(tmp_path / "killed")


WORKER = r"""
import json, sys
sys.path.insert(0, "tests")
import conftest
from conftest import load_config, shrink
from training import train_and_evaluate
out, cache, data_dir = sys.argv[1:]
results = {}
for shape, axes in (((1,), ("data",)), ((4, 2), ("members", "data")), ((8, 1), ("members", "data"))):
  config = shrink(load_config("mlp"), population=4, sweep='{"label_smoothing": [0.0, 0.1]}',
                  max_train_examples=512, max_eval_examples=500, batch_size=32, eval_batch_size=100,
                  mesh_shape=shape, mesh_axes=axes, cache_dir=cache, data_dir=data_dir)
  _, summary = train_and_evaluate(config)
  results[str(shape)] = [m["loss"] for m in summary["members"]]
json.dump(results, open(out, "w"))
"""


def test_members_split_over_devices_train_as_on_one(tmp_path, data_cache):
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
  run = subprocess.run([sys.executable, "-c", WORKER, str(tmp_path / "out.json"), data_cache,
                        real_data_dir()], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=900)
  assert run.returncode == 0, run.stderr[-3000:]
  losses = json.loads((tmp_path / "out.json").read_text())
  assert len(losses["(1,)"]) == 8
  for shape in ("(4, 2)", "(8, 1)"):
    np.testing.assert_allclose(losses[shape], losses["(1,)"], rtol=1e-5)


def test_the_population_mode_follows_the_backend_and_the_model():
  from training.compute import device, mesh as mesh_lib
  from training import tasks
  mesh = mesh_lib.make_mesh((-1,), ("data",))
  for name, expected in (("cnn", "loop"), ("mlp", "vmap")):
    config = load_config(name)
    task = tasks.get(config, 10, (28, 28, 1), members.Population.of(config))
    key = jax.random.PRNGKey(0)
    init = lambda: task.init_state(lambda step: 1e-3, key, key)
    assert device.choose_member_map(config.population_mode, mesh, init) == (
        expected if jax.default_backend() == "cpu" else "vmap")


def test_a_stopped_population_resumes_bit_exactly(mock_mnist, tmp_path):
  # 3 steps an epoch, a record every 2: the stop at step 4 (epoch 2's first) carries that step's
  # per-member metrics in the checkpoint, and the record at 5 averages steps 4-5 as without it.
  config = lambda **o: shrink(load_config("mlp"), population=2, num_epochs=2, log_every_steps=2,
                              **{"model.dropout": 0.3, "model.hidden": (32,), **o})
  whole, _ = train_and_evaluate(config(), str(tmp_path / "whole"))
  with pytest.raises(Preempted, match="at step 4"):
    train_and_evaluate(config(stop_after_steps=4), str(tmp_path / "split"))
  resumed, _ = train_and_evaluate(config(), str(tmp_path / "split"))
  for a, b in zip(jax.tree_util.tree_leaves(whole.params), jax.tree_util.tree_leaves(resumed.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert _history(tmp_path / "split") == _history(tmp_path / "whole")


def test_members_run_in_a_loop_or_batched_alike(mock_mnist):
  """The two ways the program runs its members (CPU picks the loop for convolutions) train the
  same models."""
  config = lambda mode: shrink(load_config("cnn"), population=2, population_mode=mode,
                               **{"model.features": (4, 8), "model.dense": (16,)})
  losses = {}
  for mode in ("loop", "vmap"):
    _, summary = train_and_evaluate(config(mode))
    losses[mode] = [m["loss"] for m in summary["members"]]
  np.testing.assert_allclose(losses["loop"], losses["vmap"], rtol=1e-4)


def test_a_non_finite_value_names_its_member_and_step():
  from training.modes.train import progress
  population = members.Population.of(shrink(load_config("mlp"), population=2, seed=4)).members
  metrics = {"loss": np.array([[0.5, 0.4], [0.3, np.inf]]), "grad_norm": np.ones((2, 2))}
  with pytest.raises(NonFiniteLossError, match=r"loss of member 1 \(seed 5\) became inf at step 8"):
    progress.check_finite(metrics, 7, population)
  progress.check_finite({"loss": np.ones((2, 2))}, 7, population)


def test_a_sweep_of_zoom_crop_and_elastic_trains_each_member_as_its_single_run(mock_mnist):
  """The newer augmentations read as traced values, one per member, like shift and rotate: a
  member with every one of them on trains as a single run with those values."""
  sweep = '{"augment.zoom": [0.0, 0.1], "augment.crop": [0, 2], "augment.elastic": [0.0, 8.0]}'
  config = lambda **o: shrink(load_config("mlp"), **{"model.hidden": (32,), **o})
  _, population = train_and_evaluate(config(sweep=sweep))
  assert len(population["members"]) == 8
  last = population["members"][-1]
  assert (last["augment.zoom"], last["augment.crop"], last["augment.elastic"]) == (0.1, 2, 8.0)
  _, single = train_and_evaluate(config(**{"augment.zoom": 0.1, "augment.crop": 2,
                                           "augment.elastic": 8.0}))
  np.testing.assert_allclose(last["loss"], single["test"]["loss"], rtol=1e-4)
  first = population["members"][0]  # every magnitude 0: the identity, as augmentation off
  _, plain = train_and_evaluate(config())
  np.testing.assert_allclose(first["loss"], plain["test"]["loss"], rtol=1e-4)
  assert first["loss"] != last["loss"]  # the augmentations did train the last member otherwise


def test_test_time_augmentation_scores_each_member_and_their_ensemble():
  """tta_shift in a population: each member's sums are its own eval_step's with tta_shift, and
  the ensemble averages the probabilities of every member's shifted views."""
  from training import tasks
  from training.data import augment
  from training.compute import device
  from training.tasks.classify import steps
  config = shrink(load_config("mlp"), population=2, **{"model.hidden": (16,)})
  population = members.Population.of(config)
  state = tasks.get(config, 10, (28, 28, 1), population).initial_state(lambda step: 1e-3,
                                                                      *population.keys()[:2])
  rng = np.random.default_rng(0)
  batch = {"image": rng.integers(0, 256, (8, 28, 28, 1), np.uint8),
           "label": rng.integers(0, 10, 8).astype(np.int32), "mask": np.ones(8, np.float32)}
  got = steps.population_eval_step(state, batch, 10, jax.vmap, tta_shift=1)
  views = augment.shifted_views(steps.preprocess(batch["image"]), 1)
  probs = []
  for k in range(2):
    member = device.take(state, k)
    one = steps.eval_step(member, batch, 10, tta_shift=1)
    np.testing.assert_allclose(got["members"]["loss_sum"][k], one["loss_sum"], rtol=1e-5)
    assert one["loss_sum"] != steps.eval_step(member, batch, 10)["loss_sum"]
    probs += [jax.nn.softmax(steps.eval_logits(member, v)) for v in views]
  nll = -np.log(np.mean(probs, axis=0)[np.arange(8), batch["label"]]).sum()
  np.testing.assert_allclose(got["ensemble"]["loss_sum"], nll, rtol=1e-4)


def test_a_sweeps_last_line_gives_each_setting_its_mean_and_spread():
  """Different learning rates are different recipes: the line averages each one's seeds alone."""
  from training import tasks
  config = load_config("mlp")
  config.update(population=2, sweep='{"learning_rate": [0.001, 0.003]}')
  task = tasks.get(config, 10, (28, 28, 1), members.Population.of(config))
  rows = [{"member": i, "seed": 0 + i % 2, "learning_rate": lr, "accuracy": acc}
          for i, (lr, acc) in enumerate([(0.001, 0.97), (0.001, 0.95), (0.003, 0.90),
                                         (0.003, 0.91)])]
  line = task.headline({"members": rows, "mean": 0.9325, "std": 0.03,
                        "ensemble": {"accuracy": 0.96}})
  assert line == ("test accuracy over 2 seeds a setting: learning_rate=0.001: 96.00 +- 1.41%; "
                  "learning_rate=0.003: 90.50 +- 0.71%; ensemble 96.00% of all 4 members")
  config.population = 1
  one = tasks.get(config, 10, (28, 28, 1), members.Population.of(config)).headline(
      {"members": rows[::2], "mean": 0.935, "std": 0.05, "ensemble": {"accuracy": 0.96}})
  assert one == ("test accuracy over 1 seed a setting: learning_rate=0.001: 97.00%; "
                 "learning_rate=0.003: 90.00%; ensemble 96.00% of all 2 members")


def test_a_member_run_in_the_loop_equals_its_single_run_to_the_bit(mock_mnist):
  """docs/populations.md: in the `loop` mode a member computes what its single run computes."""
  config = lambda **o: shrink(load_config("cnn"), num_epochs=2, **{
      "model.features": (4, 8), "model.dense": (16,), **o})
  population, _ = train_and_evaluate(config(population=2, population_mode="loop"))
  single, _ = train_and_evaluate(config(seed=1))
  for a, b in zip(jax.tree_util.tree_leaves(population.params),
                  jax.tree_util.tree_leaves(single.params)):
    np.testing.assert_array_equal(np.asarray(a)[1], np.asarray(b))
