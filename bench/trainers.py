"""One trainer of bench/compare.py, run in its own process:

    python bench/trainers.py TRAINER CONFIG EPOCHS [FIELD=VALUE ...]

TRAINER: "this project", pytorch, "pytorch compiled" or "jax recipe"; FIELD=VALUE sets a config
field by dotted name (seed=3, model.weight_init=torch), its value a Python literal, else a
string.

Prints one JSON line: device, per-epoch train seconds, (seconds since training start, test
accuracy) after each epoch, training examples per epoch, seconds from process start to training.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import math
import os
import sys
import time

T0 = float(os.environ.get("BENCH_T0", time.time()))
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def load_config(path: str, epochs: int):
  spec = importlib.util.spec_from_file_location("bench_config", os.path.join(REPO, path))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  if epochs:
    config.num_epochs = epochs
  config.progress_bar = False
  return config


def load_data(config):
  from training import data
  return data.load(config.dataset, data_dir=config.data_dir, cache_dir=config.cache_dir,
                   validation_fraction=config.validation_fraction, split_seed=config.split_seed)


def this_project(config) -> dict:
  from training import train_and_evaluate
  from training.compute import runtime
  runtime.setup(config)
  import jax
  config.test_every_epoch = True
  _, s = train_and_evaluate(config)
  t_train = time.time() - s["time/train_s"]
  return {"device": str(jax.devices()[0].device_kind),
          "epoch_s": [e["time/train_epoch_s"] for e in s["epochs"]],
          "evals": [(e["time/elapsed_s"], e["test/accuracy"]) for e in s["epochs"]],
          "examples": s["epochs"][0]["time/steps_per_s"] * s["epochs"][0]["time/train_epoch_s"]
                      * config.batch_size,
          "first_step_s": t_train - T0}


def jax_recipe(config) -> dict:
  """The usual Flax-example loop: numpy batches from the host, one jitted step per batch."""
  import jax
  import numpy as np
  from training.compute import build, optim
  from training.tasks.classify import state as state_lib, steps
  ds = load_data(config)
  model = build.build_model(config, ds.num_classes)
  spe = len(ds.train) // config.batch_size
  tx = optim.make_optimizer(config, optim.make_schedule(config, spe))
  k1, k2 = jax.random.split(jax.random.PRNGKey(config.seed))
  state = state_lib.create_train_state(model, tx, ds.image_shape, k1, k2)
  train_step = jax.jit(lambda state, batch: steps.train_step(state, batch, state.rng),
                       donate_argnums=0)

  @jax.jit
  def predict(state, images):
    return state.apply_fn(state.variables(), steps.preprocess(images), train=False).argmax(-1)

  rng = np.random.default_rng(config.seed)
  epoch_s, evals = [], []
  t_train = time.time()
  for _ in range(config.num_epochs):
    t = time.time()
    perm = rng.permutation(len(ds.train))
    for i in range(spe):
      idx = perm[i * config.batch_size:(i + 1) * config.batch_size]
      batch = {"image": ds.train.images[idx], "label": ds.train.labels[idx]}
      state, metrics = train_step(state, batch)
    jax.block_until_ready(metrics)
    epoch_s.append(time.time() - t)
    correct = sum(int((np.asarray(predict(state, ds.test.images[i:i + 1000]))
                       == ds.test.labels[i:i + 1000]).sum()) for i in range(0, len(ds.test), 1000))
    evals.append((time.time() - t_train, correct / len(ds.test)))
  return {"device": str(jax.devices()[0].device_kind), "epoch_s": epoch_s, "evals": evals,
          "examples": spe * config.batch_size, "first_step_s": t_train - T0}


def _lr(config, step: int, total: int) -> float:
  """The optax schedules of training/compute/optim.py, for PyTorch (same formulas)."""
  peak = config.learning_rate
  if config.schedule == "constant":
    return peak
  if config.schedule == "onecycle":  # optax.cosine_onecycle_schedule, div factors 25 and 1e4
    pct_start = config.get("onecycle_pct_start", 0.3)
    up, start, end = int(pct_start * total), peak / 25.0, peak / 25.0 / 1e4
    if step < up:
      return peak + (start - peak) * (1 + math.cos(math.pi * step / up)) / 2
    frac = min(1.0, (step - up) / max(1, total - up))
    return end + (peak - end) * (1 + math.cos(math.pi * frac)) / 2
  if config.schedule == "cosine":
    alpha = config.end_lr_factor
    return peak * ((1 - alpha) * (1 + math.cos(math.pi * min(step, total) / total)) / 2 + alpha)
  raise SystemExit(f"bench: schedule {config.schedule} is not mirrored in PyTorch")


def torch_setup(config, image_shape, num_classes: int, device: str, *, pool_first: bool = False,
                channels_last: bool = False, lr_tensor: bool = False, fused: bool | None = None):
  """The config's network, optimizer and loss in PyTorch: (net, optimizer, loss_fn).

  The weights are initialized as `config.model.weight_init` says where the config names one
  ("lecun": flax's truncated normal and zero biases; "torch": PyTorch's own), else as PyTorch
  does.

  pool_first: each CNN stage max-pools before its ReLU instead of after. The same function and
  the same gradients (ReLU is monotone, so both orders pick the same maximum and both pass no
  gradient where it is <= 0), on a quarter of the elements; see `compiled_pytorch` for why.
  channels_last: the parameters in channels_last memory format (feed channels_last images).
  lr_tensor: the optimizer's learning rate is a 0-d tensor on `device` (param_groups[0]["lr"]),
  to be changed in place, so a compiled optimizer step does not recompile when it changes.
  fused: the optimizer's `fused` argument (None: PyTorch's default).
  """
  import torch
  from torch import nn
  m = config.model
  layers: list[nn.Module] = []
  if m.name in ("cnn", "cnn_flax_example"):
    if m.get("downsample", "max") != "max" or m.get("batch_norm") or m.get("convs_per_stage", 1) > 1:
      raise SystemExit("bench: only the plain max-pool CNN is mirrored in PyTorch")
    c, side = image_shape[-1], image_shape[0]
    for f in m.features:
      act_pool = [nn.MaxPool2d(2), nn.ReLU()] if pool_first else [nn.ReLU(), nn.MaxPool2d(2)]
      layers += [nn.Conv2d(c, f, m.kernel_size, padding="same"), *act_pool]
      c, side = f, side // 2
    width = c * side * side
    layers.append(nn.Flatten())
    hidden = m.dense
  elif m.name == "mlp":
    layers.append(nn.Flatten())
    width, hidden = math.prod(image_shape), m.hidden
  else:
    raise SystemExit(f"bench: model {m.name} is not mirrored in PyTorch")
  for h in hidden:
    layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(m.dropout)]
    width = h
  layers.append(nn.Linear(width, num_classes))
  net = nn.Sequential(*layers).to(device)
  if m.get("weight_init", "torch") == "lecun":
    _lecun_init(net)
  if channels_last:
    net = net.to(memory_format=torch.channels_last)
  lr = torch.tensor(config.learning_rate, device=device) if lr_tensor else config.learning_rate
  extra = {} if fused is None else {"fused": fused}
  if config.optimizer in ("adam", "adamw"):
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    betas = (config.get("adam_b1", 0.9), config.get("adam_b2", 0.999))
    opt = cls(net.parameters(), lr=lr, betas=betas, weight_decay=config.weight_decay, **extra)
  else:
    opt = torch.optim.SGD(net.parameters(), lr=lr,
                          momentum=config.momentum if config.optimizer == "momentum" else 0.0,
                          **extra)
  return net, opt, nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)


def _lecun_init(net) -> None:
  """flax's default init in place: kernels from a normal truncated at 2 standard deviations,
  rescaled to variance 1/fan_in (flax's lecun_normal), and zero biases."""
  import torch
  from torch import nn
  for layer in net.modules():
    if isinstance(layer, (nn.Conv2d, nn.Linear)):
      fan_in = layer.weight[0].numel()
      std = math.sqrt(1.0 / fan_in) / .87962566103423978  # the truncated normal's std is 0.88
      with torch.no_grad():
        nn.init.trunc_normal_(layer.weight, std=std, a=-2 * std, b=2 * std)
        layer.bias.zero_()


def torch_step(net, opt, loss_fn, images, labels, lr: float) -> None:
  """One training step on uint8 NCHW images, as a plain PyTorch loop does it."""
  for g in opt.param_groups:
    g["lr"] = lr
  loss = loss_fn(net(images.float() / 255.0), labels)
  opt.zero_grad(set_to_none=True)
  loss.backward()
  opt.step()


def compiled_torch_step(net, opt, loss_fn, *, amp_dtype=None, mode: str | None = None,
                        backend: str = "inductor"):
  """The whole train step under one torch.compile: `step(images, labels)` on uint8 NCHW images
  returns the (detached) loss. Dynamo compiles the forward with its backward (AOTAutograd, one
  graph pair) and the optimizer step (its own graph: torch.optim breaks the graph around step()
  on purpose, to compile it as an inference graph that updates the parameters in place); the
  learning rate must be a tensor (`torch_setup(lr_tensor=True)`), changed in place between
  steps. amp_dtype: autocast the forward and loss to it (e.g. torch.bfloat16); mode: the
  torch.compile mode ("reduce-overhead": CUDA graphs); backend: torch.compile's (tests use
  "aot_eager": the same graphs and autograd, without Inductor's slow C++ code generation)."""
  import contextlib
  import torch
  device_type = next(net.parameters()).device.type
  autocast = (lambda: torch.autocast(device_type, dtype=amp_dtype)) if amp_dtype else (
      contextlib.nullcontext)

  def step(images, labels):
    with autocast():
      loss = loss_fn(net(images.float() / 255.0), labels)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.detach()

  return torch.compile(step, mode=mode, dynamic=False, backend=backend)


def pytorch(config) -> dict:
  """The same network and hyperparameters; data on the device; a plain loop."""
  return _torch_trainer(config, compiled=False)


def compiled_pytorch(config) -> dict:
  """The same network and hyperparameters as `pytorch`, run as an expert would.

  Everywhere: the whole train step under torch.compile (`compiled_torch_step`), compiled in the
  first epoch (its compile time counts there, as the JAX trainers' does); the learning rate a
  device tensor updated in place, so the schedule's per-step changes recompile nothing; fixed
  shapes (dynamic=False; the last partial batch is dropped as in all trainers); each CNN stage
  pools before its ReLU (the same math, see `torch_setup`; with ReLU first, Inductor's CPU code
  for the mask ReLU saves for its backward, a bool per conv output, made the step 1.7x slower
  than eager, and pooling first makes that mask 4x smaller).
  On CUDA also: bf16 autocast, channels_last, fused Adam, TF32 for what stays float32, cuDNN
  autotuning and mode="reduce-overhead" (CUDA graphs: kernels this small leave a GPU step bound
  by launch overhead).
  On CPU the default mode (CUDA graphs are the whole of "reduce-overhead"; there are none on
  CPU), float32 (bf16 made this project's CPU steps slower too), the default memory format
  (Inductor already runs the CPU convolutions channels_last) and Inductor's
  `fallback_random`: its own CPU code draws each dropout bit from a fresh Philox engine,
  scalar, which made the MLP step 1.2x slower than eager; ATen's generator is vectorized.
  Evaluation runs eagerly (in inference mode, under the same autocast)."""
  return _torch_trainer(config, compiled=True)


def _torch_trainer(config, compiled: bool) -> dict:
  import contextlib
  import torch
  torch.manual_seed(config.seed)
  device = "cuda" if torch.cuda.is_available() else "cpu"
  cuda = device == "cuda"
  ds = load_data(config)
  amp_dtype, channels_last, mode = None, False, None
  if compiled:
    if cuda:
      torch.backends.cudnn.benchmark = True
      torch.set_float32_matmul_precision("high")
      amp_dtype, channels_last, mode = torch.bfloat16, True, "reduce-overhead"
    else:  # dropout's random bits from ATen's vectorized generator (see `compiled_pytorch`)
      import torch._inductor.config
      torch._inductor.config.fallback_random = True
    net, opt, loss_fn = torch_setup(config, ds.image_shape, ds.num_classes, device,
                                    pool_first=True, channels_last=channels_last, lr_tensor=True,
                                    fused=True if cuda else None)
    lr_t = opt.param_groups[0]["lr"]
    step_fn = compiled_torch_step(net, opt, loss_fn, amp_dtype=amp_dtype, mode=mode)
  else:
    net, opt, loss_fn = torch_setup(config, ds.image_shape, ds.num_classes, device)
  layout = torch.channels_last if channels_last else torch.contiguous_format
  to_nchw = lambda a: (torch.from_numpy(a).permute(0, 3, 1, 2).contiguous(memory_format=layout)
                       .to(device))
  train_x, train_y = to_nchw(ds.train.images), torch.from_numpy(ds.train.labels).long().to(device)
  test_x, test_y = to_nchw(ds.test.images), torch.from_numpy(ds.test.labels).long().to(device)
  bs, spe = config.batch_size, len(ds.train) // config.batch_size
  total = spe * config.num_epochs
  sync = torch.cuda.synchronize if cuda else (lambda: None)
  no_grad = torch.inference_mode if compiled else torch.no_grad
  autocast = (lambda: torch.autocast(device, dtype=amp_dtype)) if amp_dtype else (
      contextlib.nullcontext)
  epoch_s, evals, step = [], [], 0
  t_train = time.time()
  for _ in range(config.num_epochs):
    t = time.time()
    net.train()
    perm = torch.randperm(len(train_y), device=device)
    for i in range(spe):
      idx = perm[i * bs:(i + 1) * bs]
      if compiled:
        lr_t.fill_(_lr(config, step, total))
        if mode == "reduce-overhead":
          torch.compiler.cudagraph_mark_step_begin()
        step_fn(train_x[idx], train_y[idx])
      else:
        torch_step(net, opt, loss_fn, train_x[idx], train_y[idx], _lr(config, step, total))
      step += 1
    sync()
    epoch_s.append(time.time() - t)
    net.eval()
    with no_grad(), autocast():
      correct = sum(int((net(test_x[i:i + 1000].float() / 255.0).argmax(1) == test_y[i:i + 1000])
                        .sum()) for i in range(0, len(test_y), 1000))
    evals.append((time.time() - t_train, correct / len(test_y)))
  name = torch.cuda.get_device_name() if cuda else "cpu"
  return {"device": name, "epoch_s": epoch_s, "evals": evals, "examples": spe * bs,
          "first_step_s": t_train - T0}


TRAINERS = {"this project": this_project, "pytorch": pytorch, "pytorch compiled": compiled_pytorch,
            "jax recipe": jax_recipe}


def parse_overrides(items: list[str]) -> dict:
  """["seed=3", "model.weight_init=torch"] -> {"seed": 3, "model.weight_init": "torch"}: Python
  literals, else strings."""
  fields = {}
  for item in items:
    name, sep, value = item.partition("=")
    if not sep:
      raise SystemExit(f"bench: expected FIELD=VALUE, got {item!r}")
    try:
      fields[name] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      fields[name] = value
  return fields


if __name__ == "__main__":
  trainer, config_path, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3])
  config = load_config(config_path, epochs)
  from training import settings  # after sys.path holds the checkout, as the trainers' imports
  settings.set_fields(config, parse_overrides(sys.argv[4:]))
  print(json.dumps(TRAINERS[trainer](config)))
