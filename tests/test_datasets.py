"""Other datasets by name: shapes and classes come from the tfds dataset info (mock data)."""

from __future__ import annotations

import pytest

from training import train_and_evaluate
from training import data

from conftest import load_config, shrink


@pytest.mark.parametrize("name, shape, classes, first_class", [
    ("fashion_mnist", (28, 28, 1), 10, "T-shirt/top"),
    ("kmnist", (28, 28, 1), 10, "o"),
    ("cifar10", (32, 32, 3), 10, None),  # nothing is hard-wired to 28x28x1
])
def test_other_datasets_train_by_name(name, shape, classes, first_class, mock_mnist, tmp_path):
  ds = data.load(name, cache_dir="none")
  assert ds.image_shape == shape and ds.train.images.shape[1:] == shape
  assert ds.num_classes == classes
  if first_class:  # (the mock of cifar10 has no label names without its metadata files)
    assert ds.class_names[0] == first_class
  state, summary = train_and_evaluate(shrink(load_config("mlp"), dataset=name), str(tmp_path))
  assert summary["test"]["count"] == 48 and len(summary["test"]["per_class_accuracy"]) == classes
  assert state.params["Dense_0"]["kernel"].shape[0] == shape[0] * shape[1] * shape[2]


def test_unprepared_tfds_data_is_refused_before_tfds_builds(tmp_path, monkeypatch):
  """A tfds dataset that is not prepared is named as such, an unknown one as unknown, without a
  builder: tfds' builder looks unprepared data up online and leaves a temporary folder behind."""
  import tempfile

  from training.data import tfds_source
  from training.errors import ConfigError, DataNotFoundError
  strays = tmp_path / "tmp"
  strays.mkdir()
  monkeypatch.setattr(tempfile, "tempdir", str(strays))
  with pytest.raises(DataNotFoundError, match="'cifar10' is not prepared in"):
    data.load("cifar10", data_dir=str(tmp_path / "tfds"), cache_dir="none")
  with pytest.raises(ConfigError, match="Unknown tfds dataset 'no_such_set'"):
    data.load("no_such_set", data_dir=str(tmp_path / "tfds"), cache_dir="none")
  assert list(strays.iterdir()) == []
  # Prepared data is found in each of tfds' layouts: a version, or a config and a version.
  for folder, names in (("mnist/3.0.1", ("mnist", "mnist:3.0.1")),
                        ("emnist/digits/3.0.0", ("emnist", "emnist/digits", "emnist/digits:3.0.0"))):
    assert not any(tfds_source.is_prepared(n, str(tmp_path / "tfds")) for n in names)
    (tmp_path / "tfds" / folder).mkdir(parents=True)
    (tmp_path / "tfds" / folder / "dataset_info.json").write_text("{}")
    assert all(tfds_source.is_prepared(n, str(tmp_path / "tfds")) for n in names)
