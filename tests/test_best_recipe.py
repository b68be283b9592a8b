"""configs/best.py at 3 epochs on the real MNIST keeps what its augmentation and schedule buy.

The floors come from docs/performance.md ("The best recipe, shortened"), measured by
bench/recipe_parts.py, whose own functions this test calls so that both measure the same thing:
best.py clears every floor; without its shift and rotation it falls below the warped floor
(95.93%), with a constant learning rate below the last epoch's training floor (98.90%).
"""

from __future__ import annotations

import importlib.util

import pytest

from conftest import REPO, real_data_dir

_spec = importlib.util.spec_from_file_location("recipe_parts", REPO / "bench" / "recipe_parts.py")
recipe_parts = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(recipe_parts)

TEST_FLOOR, WARPED_FLOOR, TRAIN_FLOOR = 0.9935, 0.975, 0.991


@pytest.mark.slow
def test_best_recipe_keeps_its_augmentation_and_schedule(data_cache):
  config = recipe_parts.variant("best", 3, data_dir=real_data_dir(), cache_dir=data_cache)
  assert config.seed == 0 and config.augment.rotate > 0 and config.schedule != "constant"
  warped, labels = recipe_parts.warped_test_split(config)
  row = recipe_parts.measure(config, warped, labels)
  assert row["test"] >= TEST_FLOOR, row
  assert row["warped"] >= WARPED_FLOOR, row  # the shift and rotation
  assert row["train"] >= TRAIN_FLOOR, row  # the one-cycle decay, seen on the augmented batches
