"""Ensembles across runs of different configs: `--workdir=A --ensemble=B,C` in evaluate, predict
and export average the class probabilities of every model of the runs (a population's members
each), and runs whose outputs mean other things are refused with one clear line."""

from __future__ import annotations

import subprocess
import sys

import jax
import numpy as np
import pytest

from training import ConfigError, train_and_evaluate
from training.modes import evaluate, export, predict

from conftest import REPO, load_config, shrink


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """Three small trained workdirs of other configs: an MLP, a CNN, a population of 2 MLPs."""
  import tensorflow_datasets as tfds
  from training.data import tfds_source
  root = tmp_path_factory.mktemp("runs")
  prepared, tfds_source.is_prepared = tfds_source.is_prepared, lambda name, data_dir: True
  try:
    with tfds.testing.mock_data(num_examples=64):
      for name, config in (
          ("a", shrink(load_config("mlp"), **{"model.hidden": (16,)})),
          ("b", shrink(load_config("cnn"), **{"model.features": (4, 8), "model.dense": (16,)})),
          ("c", shrink(load_config("mlp"), population=2, seed=5, population_mode="vmap",
                       **{"model.hidden": (8,)})),
          ("three", shrink(load_config("mlp"), classes="0,1,2", **{"model.hidden": (8,)}))):
        train_and_evaluate(config, str(root / name))
      yield root
  finally:
    tfds_source.is_prepared = prepared


def _images(tmp_path, n=5) -> list[str]:
  from PIL import Image
  pixels = np.random.default_rng(0).integers(0, 256, (n, 28, 28), dtype=np.uint8)
  paths = [str(tmp_path / f"{i}.png") for i in range(n)]
  for p, image in zip(paths, pixels):
    Image.fromarray(image).save(p)
  return paths


def _probabilities(workdir, paths, **options) -> np.ndarray:
  return np.array([p["probabilities"] for p in predict.predict(str(workdir), paths, "latest",
                                                               **options)])


def test_predict_and_export_average_every_model_of_the_runs(runs, tmp_path):
  paths = _images(tmp_path)
  a, b, c = (_probabilities(runs / w, paths) for w in "abc")
  both = _probabilities(runs / "a", paths, ensemble=[str(runs / "b"), str(runs / "c")])
  # c is a population of two: its members weigh two of the four models.
  np.testing.assert_allclose(both, (a + b + 2 * c) / 4, atol=1e-6)
  assert not np.allclose(both, a, atol=1e-3)
  meta = export.export(str(runs / "a"), "latest", str(tmp_path / "export"), formats=("jax",),
                       ensemble=[str(runs / "b"), str(runs / "c")])
  assert meta["members"] == 4 and meta["model"] == "mlp+cnn"
  assert [e["workdir"] for e in meta["ensemble"]] == [str(runs / "b"), str(runs / "c")]
  assert meta["test_accuracy"] is None  # not evaluated yet
  from training.data import images
  batch = np.stack([images.load(p, (28, 28, 1))[0] for p in paths])
  exported = jax.export.deserialize(bytearray((tmp_path / "export" / "model.jax").read_bytes()))
  np.testing.assert_allclose(exported.call(batch), both, atol=1e-5)


def test_evaluate_scores_the_ensemble_and_each_run(runs, mock_mnist, tmp_path):
  others = [str(runs / "b"), str(runs / "c")]
  result = evaluate.evaluate(str(runs / "a"), "latest", ensemble=others)
  alone = [evaluate.evaluate(str(runs / w), "latest") for w in "abc"]
  assert [r["models"] for r in result["runs"]] == [1, 1, 2]
  for run, single in zip(result["runs"], alone):
    assert run["accuracy"] == single["accuracy"]
    np.testing.assert_allclose(run["loss"], single["loss"], rtol=1e-5)
  assert result["count"] == alone[0]["count"] == 64
  # The ensemble's scores, recomputed here: each run's probabilities on the test split,
  # weighted by its models (1, 1 and 2), averaged, then argmax and the mean log-loss.
  from training import data
  from training.modes import ensemble as ensemble_lib
  from training.tasks import restore
  test = data.load("mnist", cache_dir=str(tmp_path / "cache")).test
  each = []
  for w in "abc":
    r = restore.restore(str(runs / w), "latest")
    each.append(np.asarray(ensemble_lib.probabilities([r], [r.state], test.images), np.float64))
  for p, run in zip(each, result["runs"]):  # the same examples as evaluate's
    assert (p.argmax(1) == test.labels).mean() == pytest.approx(run["accuracy"], abs=1e-9)
  mean = (each[0] + each[1] + 2 * each[2]) / 4
  assert result["accuracy"] == pytest.approx((mean.argmax(1) == test.labels).mean(), abs=1e-9)
  np.testing.assert_allclose(
      result["loss"], -np.log(mean[np.arange(len(mean)), test.labels]).mean(), rtol=1e-4)
  # Export reads the ensemble's evaluation back into model.json.
  meta = export.export(str(runs / "a"), "latest", str(tmp_path / "export"), formats=("jax",),
                       ensemble=others)
  assert meta["test_accuracy"] == result["accuracy"]


def test_runs_of_other_classes_or_a_member_are_refused(runs):
  with pytest.raises(ConfigError, match=r"--ensemble: .*three was trained on mnist \(3 classes: "
                                        r"0, 1, 2; input 28x28x1\).*leave .*three out"):
    predict.predict(str(runs / "a"), ["x.png"], "latest", ensemble=[str(runs / "three")])
  with pytest.raises(ConfigError, match="names a run twice"):
    predict.predict(str(runs / "a"), ["x.png"], "latest", ensemble=[str(runs / "b")] * 2)
  with pytest.raises(ConfigError, match="give one of the two"):
    predict.predict(str(runs / "c"), ["x.png"], "latest", member=0, ensemble=[str(runs / "a")])


def test_the_command_line_says_what_was_wrong_in_one_line(runs):
  result = subprocess.run(
      [sys.executable, "train.py", "--mode=export", f"--workdir={runs / 'a'}",
       f"--ensemble={runs / 'three'}", "--checkpoint=latest", f"--output={runs / 'x'}"],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1].startswith("error: --ensemble: ")
  assert "Traceback" not in result.stderr and not (runs / "x").exists()
