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
