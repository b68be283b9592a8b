"""configs/speedrun.py: its optimizer fields, and on the real MNIST its one-epoch 99%."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from training import ConfigError, train_and_evaluate
from training.compute import optim

from conftest import load_config, real_data_dir


def test_adam_betas_and_onecycle_start_reach_optax():
  config = load_config("speedrun")
  config.update(adam_b1=0.7, adam_b2=0.9, onecycle_pct_start=0.25)
  params = {"w": jnp.arange(6.0).reshape(2, 3)}
  grads = [{"w": jnp.full((2, 3), g)} for g in (1.0, -3.0, 0.5)]
  for name, expected in (("adam", optax.adam(1e-2, b1=0.7, b2=0.9)),
                         ("adamw", optax.adamw(1e-2, b1=0.7, b2=0.9, weight_decay=0.0))):
    config.update(optimizer=name, weight_decay=0.0)
    tx = optim.make_optimizer(config, optax.constant_schedule(1e-2))
    state, ref_state = tx.init(params), expected.init(params)
    for g in grads:
      update, state = tx.update(g, state, params)
      ref, ref_state = expected.update(g, ref_state, params)
      np.testing.assert_array_equal(update["w"], ref["w"])
  lr = optim.make_schedule(config, steps_per_epoch=100)  # 1 epoch: the peak is at step 25
  assert float(lr(25)) == pytest.approx(config.learning_rate)
  assert float(lr(0)) == pytest.approx(config.learning_rate / 25)
  assert float(lr(15)) < float(lr(25)) and float(lr(35)) < float(lr(25))


def test_the_defaults_are_optax_defaults():
  config = load_config("cnn")
  assert (config.adam_b1, config.adam_b2, config.onecycle_pct_start) == (0.9, 0.999, 0.3)
  lr = optim.make_schedule(config, steps_per_epoch=100)
  ref = optax.cosine_onecycle_schedule(config.num_epochs * 100, config.learning_rate)
  assert [float(lr(s)) for s in range(0, 501, 10)] == [float(ref(s)) for s in range(0, 501, 10)]


@pytest.mark.parametrize("field, value, match", [
    ("adam_b1", 1.0, r"adam_b1 is a moment decay rate and must be in \[0, 1\), got 1.0"),
    ("adam_b2", -0.1, r"adam_b2 is a moment decay rate and must be in \[0, 1\), got -0.1"),
    ("onecycle_pct_start", 1.0, r"onecycle_pct_start .* must be in \[0, 1\), got 1.0"),
])
def test_bad_optimizer_fields_fail_clearly(field, value, match):
  config = load_config("speedrun")
  config[field] = value
  with pytest.raises(ConfigError, match=match):
    optim.make_optimizer(config, optim.make_schedule(config, steps_per_epoch=10))


@pytest.mark.slow
def test_speedrun_reaches_99_percent_in_one_epoch(data_cache):
  """Seed 0 (99.06%), unchanged but for the cache; seeds 0-4 reach 99.06-99.19%."""
  config = load_config("speedrun")
  assert config.num_epochs == 1
  config.update(data_dir=real_data_dir(), cache_dir=data_cache, progress_bar=False)
  state, summary = train_and_evaluate(config)
  assert int(state.step) == 60_000 // config.batch_size  # one epoch of all 60,000 images
  assert summary["test"]["count"] == 10_000
  assert summary["test"]["accuracy"] >= 0.989, summary["test"]["accuracy"]
