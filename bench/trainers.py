"""One trainer of bench/compare.py, run in its own process:

    python bench/trainers.py {"this project"|pytorch|"jax recipe"} CONFIG EPOCHS

Prints one JSON line: device, per-epoch train seconds, (seconds since training start, test
accuracy) after each epoch, training examples per epoch, seconds from process start to training.
"""

from __future__ import annotations

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
  from training import runtime, train_and_evaluate
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
  from training import loop, optim, steps
  ds = load_data(config)
  model = loop.build_model(config, ds.num_classes)
  spe = len(ds.train) // config.batch_size
  tx = optim.make_optimizer(config, optim.make_schedule(config, spe))
  k1, k2 = jax.random.split(jax.random.PRNGKey(config.seed))
  state = steps.create_train_state(model, tx, ds.image_shape, k1, k2)
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
  """The optax schedules of training/optim.py, for PyTorch (same formulas)."""
  peak = config.learning_rate
  if config.schedule == "constant":
    return peak
  if config.schedule == "onecycle":  # optax.cosine_onecycle_schedule defaults
    up, start, end = int(0.3 * total), peak / 25.0, peak / 25.0 / 1e4
    if step < up:
      return peak + (start - peak) * (1 + math.cos(math.pi * step / up)) / 2
    frac = min(1.0, (step - up) / max(1, total - up))
    return end + (peak - end) * (1 + math.cos(math.pi * frac)) / 2
  if config.schedule == "cosine":
    alpha = config.end_lr_factor
    return peak * ((1 - alpha) * (1 + math.cos(math.pi * min(step, total) / total)) / 2 + alpha)
  raise SystemExit(f"bench: schedule {config.schedule} is not mirrored in PyTorch")


def torch_setup(config, image_shape, num_classes: int, device: str):
  """The config's network, optimizer and loss in PyTorch: (net, optimizer, loss_fn)."""
  import torch
  from torch import nn
  m = config.model
  layers: list[nn.Module] = []
  if m.name in ("cnn", "cnn_flax_example"):
    if m.get("downsample", "max") != "max" or m.get("batch_norm") or m.get("convs_per_stage", 1) > 1:
      raise SystemExit("bench: only the plain max-pool CNN is mirrored in PyTorch")
    c, side = image_shape[-1], image_shape[0]
    for f in m.features:
      layers += [nn.Conv2d(c, f, m.kernel_size, padding="same"), nn.ReLU(), nn.MaxPool2d(2)]
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
  if config.optimizer in ("adam", "adamw"):
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    opt = cls(net.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
  else:
    opt = torch.optim.SGD(net.parameters(), lr=config.learning_rate,
                          momentum=config.momentum if config.optimizer == "momentum" else 0.0)
  return net, opt, nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)


def torch_step(net, opt, loss_fn, images, labels, lr: float) -> None:
  """One training step on uint8 NCHW images, as a plain PyTorch loop does it."""
  for g in opt.param_groups:
    g["lr"] = lr
  loss = loss_fn(net(images.float() / 255.0), labels)
  opt.zero_grad(set_to_none=True)
  loss.backward()
  opt.step()


def pytorch(config) -> dict:
  """The same network and hyperparameters; data on the device; a plain loop."""
  import torch
  torch.manual_seed(config.seed)
  device = "cuda" if torch.cuda.is_available() else "cpu"
  ds = load_data(config)
  net, opt, loss_fn = torch_setup(config, ds.image_shape, ds.num_classes, device)
  to_nchw = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).contiguous().to(device)
  train_x, train_y = to_nchw(ds.train.images), torch.from_numpy(ds.train.labels).long().to(device)
  test_x, test_y = to_nchw(ds.test.images), torch.from_numpy(ds.test.labels).long().to(device)
  bs, spe = config.batch_size, len(ds.train) // config.batch_size
  total = spe * config.num_epochs
  sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
  epoch_s, evals, step = [], [], 0
  t_train = time.time()
  for _ in range(config.num_epochs):
    t = time.time()
    net.train()
    perm = torch.randperm(len(train_y), device=device)
    for i in range(spe):
      idx = perm[i * bs:(i + 1) * bs]
      torch_step(net, opt, loss_fn, train_x[idx], train_y[idx], _lr(config, step, total))
      step += 1
    sync()
    epoch_s.append(time.time() - t)
    net.eval()
    with torch.no_grad():
      correct = sum(int((net(test_x[i:i + 1000].float() / 255.0).argmax(1) == test_y[i:i + 1000])
                        .sum()) for i in range(0, len(test_y), 1000))
    evals.append((time.time() - t_train, correct / len(test_y)))
  name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
  return {"device": name, "epoch_s": epoch_s, "evals": evals, "examples": spe * bs,
          "first_step_s": t_train - T0}


if __name__ == "__main__":
  trainer, config_path, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3])
  run = {"this project": this_project, "pytorch": pytorch, "jax recipe": jax_recipe}[trainer]
  print(json.dumps(run(load_config(config_path, epochs))))
