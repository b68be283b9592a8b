"""bench/: the PyTorch mirror of the configs (schedule, network), the compiled train step, and
compare.py's tables and arguments.

The tests that build torch networks skip without torch (not a dependency of this project: `pip
install torch` to run them); the schedule mirror and the tables need none and always run.
"""

from __future__ import annotations

import importlib.util

import ml_collections
import numpy as np
import optax
import pytest

from conftest import REPO, load_config

try:
  import torch
except ImportError:
  torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="needs torch: pip install torch")


def _bench_module(name: str):
  spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


trainers = _bench_module("trainers")
compare = _bench_module("compare")


def _tiny(name: str) -> ml_collections.ConfigDict:
  c = load_config(name)
  if name == "cnn":
    c.model.features, c.model.dense = (4, 8), (16,)
  else:
    c.model.hidden, c.model.dropout = (32,), 0.0
  return c


@pytest.mark.parametrize("pct_start", [None, 0.3, 0.25, 0.0])
def test_lr_mirrors_optax_onecycle(pct_start):
  c = ml_collections.ConfigDict({"learning_rate": 3e-3, "schedule": "onecycle"})
  if pct_start is not None:
    c.onecycle_pct_start = pct_start
  total = 100
  schedule = optax.cosine_onecycle_schedule(total, 3e-3,
                                            pct_start=0.3 if pct_start is None else pct_start)
  mirrored = [trainers._lr(c, s, total) for s in range(total + 2)]
  np.testing.assert_allclose(mirrored, [float(schedule(s)) for s in range(total + 2)],
                             rtol=1e-5, atol=1e-9)


@needs_torch
def test_pool_first_is_the_same_network():
  """Max-pooling before the ReLU: the same outputs and gradients as after it."""
  config = _tiny("cnn")
  torch.manual_seed(0)
  net, _, _ = trainers.torch_setup(config, (28, 28, 1), 10, "cpu")
  swapped, _, _ = trainers.torch_setup(config, (28, 28, 1), 10, "cpu", pool_first=True)
  swapped.load_state_dict(net.state_dict())
  x = torch.randn(8, 1, 28, 28)
  outs, grads = [], []
  for n in (net, swapped):
    out = n(x)
    out.square().sum().backward()
    outs.append(out.detach())
    grads.append([p.grad for p in n.parameters()])
  torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)
  for a, b in zip(*grads):
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@needs_torch
def test_adam_betas_come_from_the_config():
  config = _tiny("mlp")
  _, opt, _ = trainers.torch_setup(config, (28, 28, 1), 10, "cpu")
  assert opt.param_groups[0]["betas"] == (0.9, 0.999)
  config.adam_b1, config.adam_b2 = 0.8, 0.95
  _, opt, _ = trainers.torch_setup(config, (28, 28, 1), 10, "cpu", lr_tensor=True)
  assert opt.param_groups[0]["betas"] == (0.8, 0.95)
  assert isinstance(opt.param_groups[0]["lr"], torch.Tensor)


@needs_torch
@pytest.mark.parametrize("name", ["cnn", "mlp"])
def test_compiled_step_learns_without_recompiling(name):
  """The compiled step (Dynamo + AOTAutograd; Inductor's code generation is too slow for a unit
  test) lowers the loss on a fixed batch, and changing the learning rate recompiles nothing."""
  import torch._dynamo
  torch._dynamo.reset()
  config = _tiny(name)
  torch.manual_seed(0)
  net, opt, loss_fn = trainers.torch_setup(config, (28, 28, 1), 10, "cpu", pool_first=True,
                                           lr_tensor=True)
  step = trainers.compiled_torch_step(net, opt, loss_fn, backend="aot_eager")
  images = torch.randint(0, 256, (32, 1, 28, 28), dtype=torch.uint8)
  labels = torch.randint(0, 10, (32,))
  losses = [float(step(images, labels))]  # compiles
  with torch.compiler.set_stance("fail_on_recompile"):
    for i in (1, 2):
      opt.param_groups[0]["lr"].fill_(trainers._lr(config, i, 10))
      losses.append(float(step(images, labels)))
  assert losses[2] < losses[1] < losses[0], losses
  torch._dynamo.reset()


def test_one_epoch_row_has_no_compile_time():
  r = {"epoch_s": [10.0], "evals": [(11.0, 0.991)], "examples": 60_000, "first_step_s": 2.0,
       "wall_s": 15.0, "peak_rss_mib": 900.0}
  row = compare._row(r)
  assert row["compile_s"] is None and row["epoch_s"] == 10.0 and row["to_99_s"] == 11.0
  row = compare._row({**r, "epoch_s": [10.0, 4.0, 5.0], "evals": [(11, .98), (15, .99), (20, .99)]})
  assert row["compile_s"] == pytest.approx(5.5) and row["to_99_s"] == 15


@needs_torch
@pytest.mark.parametrize("init", ["torch", "lecun"])
def test_the_mirror_initializes_as_the_config_says(init):
  """model.weight_init in both frameworks: the same distributions per layer (PyTorch's own:
  kernels and biases uniform in +-1/sqrt(fan_in); flax's: a truncated normal of variance 1/fan_in
  and zero biases)."""
  import jax
  import nets
  config = load_config("speedrun")
  config.model.weight_init = init
  torch.manual_seed(0)
  net, _, _ = trainers.torch_setup(config, (28, 28, 1), 10, "cpu")
  ours = nets.create("cnn", num_classes=10, features=config.model.features,
                     dense=config.model.dense, weight_init=init)
  params = ours.init(jax.random.PRNGKey(0), np.zeros((1, 28, 28, 1)), train=False)["params"]
  layers = [m for m in net if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
  assert [n for n in params] == ["Conv_0", "Conv_1", "Dense_0", "Dense_1"] and len(layers) == 4
  for layer, p in zip(layers, params.values()):
    fan_in = layer.weight[0].numel()
    w, b = layer.weight.detach().numpy(), layer.bias.detach().numpy()
    kernel, bias = np.asarray(p["kernel"]), np.asarray(p["bias"])
    assert kernel.size == w.size and bias.size == b.size
    expected_std = 1 / np.sqrt(3 * fan_in) if init == "torch" else 1 / np.sqrt(fan_in)
    for x in (w, kernel):
      assert x.std() == pytest.approx(expected_std, rel=0.25)
    if init == "torch":
      for x in (w, kernel, b, bias):
        assert np.abs(x).max() <= 1 / np.sqrt(fan_in) + 1e-7
      assert np.abs(bias).max() > 0.5 / np.sqrt(fan_in)
    else:
      assert not b.any() and not bias.any()
      assert np.abs(w).max() <= 2.01 / np.sqrt(fan_in) / .87962566103423978


def test_seeds_overrides_and_the_accuracy_table():
  assert compare.parse_seeds("0-4") == [0, 1, 2, 3, 4]
  assert compare.parse_seeds("0,3,7-8") == [0, 3, 7, 8]
  assert compare.parse_seeds("") == [None]
  assert trainers.parse_overrides(["seed=3", "model.weight_init=torch", "learning_rate=1e-3"]) == {
      "seed": 3, "model.weight_init": "torch", "learning_rate": 1e-3}
  rows = {"a": [{"seed": 0, "final_acc": 0.99}, {"seed": 1, "final_acc": 0.992}]}
  table = compare.accuracy_table(rows, [0, 1])
  assert "| a | 99.00% | 99.20% | 99.10% +- 0.14% |" in table
