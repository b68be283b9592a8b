"""On-device augmentation and the moving average of the weights."""

from __future__ import annotations

import jax
import ml_collections
import jax.numpy as jnp
import numpy as np
import pytest

from training import train_and_evaluate
from training.data import augment
from training.compute import mesh as mesh_lib
from training.compute import optim
from training.compute import build
from training.tasks.classify import state as state_lib
from training.compute import device
from training.tasks.classify import steps

from conftest import load_config, shrink


def _dot(h=5, w=5, at=(1, 3)):
  x = np.zeros((1, h, w, 1), np.float32)
  x[0, at[0], at[1], 0] = 1.0
  return x


def test_warp_shifts_and_rotates_like_numpy():
  x = _dot()
  shifted = augment.warp(jnp.asarray(x), jnp.zeros(1), jnp.array([[1.0, -2.0]]))
  np.testing.assert_allclose(shifted[0, :, :, 0], np.roll(x[0, :, :, 0], (1, -2), (0, 1)),
                             atol=1e-6)
  rotated = augment.warp(jnp.asarray(x), jnp.array([np.pi / 2]), jnp.zeros((1, 2)))
  np.testing.assert_allclose(rotated[0, :, :, 0], np.rot90(x[0, :, :, 0]), atol=1e-6)


def test_random_affine_is_per_image_seeded_and_bounded():
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.random((8, 28, 28, 1)), jnp.float32)
  assert augment.random_affine(images, jax.random.PRNGKey(0)) is images  # off: untouched
  a = augment.random_affine(images, jax.random.PRNGKey(0), max_shift=2.0, max_rotate_deg=10.0)
  b = augment.random_affine(images, jax.random.PRNGKey(0), max_shift=2.0, max_rotate_deg=10.0)
  c = augment.random_affine(images, jax.random.PRNGKey(1), max_shift=2.0, max_rotate_deg=10.0)
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)
  assert a.shape == images.shape and float(a.min()) >= 0.0 and float(a.max()) <= 1.0
  # Each image draws its own warp: the same image twice in a batch comes out differently.
  twice = jnp.concatenate([images[:1], images[:1]])
  pair = augment.random_affine(twice, jax.random.PRNGKey(0), max_shift=2.0, max_rotate_deg=10.0)
  assert not np.allclose(pair[0], pair[1])


def _state_and_batch(ema: bool):
  config = load_config("cnn")
  model = build.build_model(config, num_classes=10)
  tx = optim.make_optimizer(config, optim.make_schedule(config, steps_per_epoch=10))
  k1, k2 = jax.random.split(jax.random.PRNGKey(0))
  state = state_lib.create_train_state(model, tx, (28, 28, 1), k1, k2, ema=ema)
  rng = np.random.default_rng(0)
  batch = {"image": rng.integers(0, 256, (16, 28, 28, 1), dtype=np.uint8),
           "label": rng.integers(0, 10, (16,), dtype=np.int32)}
  return state, batch


def test_ema_follows_the_weights_with_warmup():
  state, batch = _state_and_batch(ema=True)
  before = state.params
  step = jax.jit(lambda s, b: steps.train_step(s, b, s.rng, ema_decay=0.999))
  state, _ = step(state, batch)
  # At step 0 the warm-up decay is min(0.999, 1/10): the average moves 90% of the way.
  for p0, p1, e in zip(*(jax.tree_util.tree_leaves(t) for t in
                         (before, state.params, state.ema["params"]))):
    np.testing.assert_allclose(e, 0.1 * p0 + 0.9 * p1, rtol=1e-5, atol=1e-7)
  assert state.eval_variables()["params"] is state.ema["params"]
  plain, _ = _state_and_batch(ema=False)
  assert plain.ema == {} and plain.eval_variables()["params"] is plain.params


def test_augmentation_changes_the_step_but_not_evaluation():
  state, batch = _state_and_batch(ema=False)
  _, plain = steps.train_step(state, batch, state.rng)
  _, augmented = steps.train_step(state, batch, state.rng, augment_shift=2.0, augment_rotate=10.0)
  assert float(plain["loss"]) != float(augmented["loss"])
  # A driver built with augmentation evaluates the images as they are: the same metrics as
  # the plain eval step on the untouched batch.
  plain_eval = steps.eval_step(state, {**batch, "mask": np.ones(16, np.float32)}, num_classes=10)
  driver = device.DeviceSteps(mesh_lib.make_mesh((-1,), ("data",)), 16, 16, 10,
                             **steps.device_steps(augment_shift=2.0, augment_rotate=10.0))
  evaluated = driver.evaluate(driver.put(state), *driver.put_eval(batch["image"], batch["label"]))
  np.testing.assert_array_equal(evaluated["confusion"], plain_eval["confusion"])
  np.testing.assert_allclose(evaluated["loss_sum"], plain_eval["loss_sum"], rtol=1e-6)


def test_training_with_augmentation_and_ema_resumes_exactly(mock_mnist, tmp_path):
  from training import Preempted
  config = shrink(load_config("cnn"), num_epochs=2, ema_decay=0.99, log_every_steps=1,
                  **{"augment.shift": 2.0, "augment.rotate": 8.0})
  whole, a = train_and_evaluate(config, str(tmp_path / "whole"))
  with pytest.raises(Preempted):
    train_and_evaluate(_with(config, stop_after_steps=4), str(tmp_path / "split"))
  resumed, b = train_and_evaluate(config, str(tmp_path / "split"))
  for x, y in zip(jax.tree_util.tree_leaves(whole.ema), jax.tree_util.tree_leaves(resumed.ema)):
    np.testing.assert_array_equal(x, y)
  assert a["test"] == b["test"]


def _with(config, **fields):
  c = ml_collections.ConfigDict(config.to_dict())
  c.update(fields)
  return c


@pytest.mark.parametrize("field, value", [
    ("ema_decay", 1.0), ("augment.rotate", -5.0), ("augment.elastic", -1.0),
    ("augment.crop", -1), ("augment.zoom", 1.0), ("augment.elastic_sigma", 0.0)])
def test_bad_regularization_values_fail_clearly(field, value, mock_mnist):
  with pytest.raises(ValueError, match=field.split(".")[-1]):
    train_and_evaluate(shrink(load_config("mlp"), **{field: value}))


def test_test_time_augmentation_is_an_option_of_the_evaluation_only():
  """tta_shift averages the softmax over 5 shifted views in every evaluation: another loss than
  the plain evaluation, the same as the views averaged by hand."""
  state, batch = _state_and_batch(ema=False)
  masked = {**batch, "mask": np.ones(16, np.float32)}
  plain = steps.eval_step(state, masked, num_classes=10)
  tta = steps.eval_step(state, masked, num_classes=10, tta_shift=1)
  assert float(tta["loss_sum"]) != float(plain["loss_sum"]) and float(tta["count"]) == 16
  views = augment.shifted_views(steps.preprocess(batch["image"]), 1)
  probs = np.mean([jax.nn.softmax(state.apply_fn(state.variables(), v, train=False))
                   for v in views], axis=0)
  nll = -np.log(probs[np.arange(16), batch["label"]]).sum()
  np.testing.assert_allclose(float(tta["loss_sum"]), nll, rtol=1e-4)
  driver = device.DeviceSteps(mesh_lib.make_mesh((-1,), ("data",)), 16, 16, 10, tta_shift=1,
                              **steps.device_steps())
  evaluated = driver.evaluate(driver.put(state), *driver.put_eval(batch["image"], batch["label"]))
  np.testing.assert_array_equal(evaluated["confusion"], tta["confusion"])
