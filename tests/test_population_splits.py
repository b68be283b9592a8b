"""--config.population_splits: each member of a population its own validation carve and its own
training examples (the rest), drawn from its seed; a member trains and validates as the single
run with split_seed=seed does."""

from __future__ import annotations

import json

import numpy as np
import pytest

from training import ConfigError, data, train_and_evaluate
from training.modes import evaluate

from conftest import load_config, shrink


def _cnn(**overrides):
  return shrink(load_config("cnn"), **{"model.features": (4, 8), "model.dense": (16,),
                                       "num_epochs": 2, **overrides})


def _member_validation(workdir, member: int) -> list[float]:
  """The validation loss of `member` at each epoch, from metrics.jsonl."""
  records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  return [r["validation/loss"] for r in records
          if r.get("member") == member and "validation/loss" in r]


def test_each_member_carves_its_own_split_of_the_whole_pool(mock_mnist):
  ds = data.from_config(_cnn())
  pool, train, validation = data.member_carves(ds, 0.1, [3, 4, 5])
  assert len(pool) == len(ds.train) + len(ds.validation) == 64
  assert np.all(np.diff(pool.indices) > 0)  # the source's order
  assert train.shape == (3, 58) and validation.shape == (3, 6)
  for t, v in zip(train, validation):
    assert not set(t) & set(v) and set(t) | set(v) == set(range(64))
  # The members see different examples: no two hold out the same ones.
  assert len({tuple(v) for v in validation}) == 3
  # A member's carve is that of a single run with split_seed = its seed.
  single = data.from_config(_cnn(split_seed=4))
  np.testing.assert_array_equal(pool.indices[validation[1]], single.validation.indices)
  np.testing.assert_array_equal(pool.images[train[1]], single.train.images)


def test_a_member_trains_and_validates_as_a_single_run_with_its_split(mock_mnist, tmp_path,
                                                                       capsys):
  config = _cnn(population=2, seed=3, population_mode="loop", population_splits=True)
  _, population = train_and_evaluate(config, str(tmp_path / "population"))
  for k, seed in enumerate((3, 4)):
    _, single = train_and_evaluate(_cnn(seed=seed, split_seed=seed), str(tmp_path / f"s{seed}"))
    member = population["members"][k]
    np.testing.assert_allclose(member["loss"], single["test"]["loss"], rtol=1e-4)
    # Validation on the member's own carve, each epoch.
    np.testing.assert_allclose(_member_validation(tmp_path / "population", k),
                               _member_validation(tmp_path / f"s{seed}", None), rtol=1e-4)
  assert "ensemble" in population  # on the shared test split
  # The shared validation split afterwards holds examples that members trained on: said so.
  evaluate.evaluate(str(tmp_path / "population"), "latest", split="validation")
  assert "note: members trained with population_splits" in capsys.readouterr().out
  assert "validation/ensemble_accuracy" not in population["epochs"][-1]


def test_population_splits_without_a_population_is_refused():
  with pytest.raises(ConfigError, match="population_splits gives each member"):
    train_and_evaluate(_cnn(population_splits=True))


def test_population_splits_without_validation_is_refused():
  """With nothing held out, every member's carve would be the whole pool: no split of its own."""
  with pytest.raises(ConfigError, match="with validation_fraction=0 every member would train on "
                     "the same examples"):
    train_and_evaluate(_cnn(population=2, population_splits=True, validation_fraction=0.0))
