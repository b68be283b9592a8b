"""Fields shared by every config; each runnable config calls `base(MODEL)` and overrides a few.

Not a runnable config itself (it has no `get_config`).
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

import nets


def base(model: str = "cnn") -> ml_collections.ConfigDict:
  """Every shared field, and `model`'s fields with the defaults its nets/ module declares."""
  c = ml_collections.ConfigDict()

  # --- Data ---
  # mnist, fashion_mnist or kmnist (prepared tfds data if there is some, else their IDX files,
  # downloaded when missing), any other tfds image-classification dataset prepared in
  # array_record format, or folder:/path for a directory of images in one subfolder per class
  # (docs/data.md).
  c.dataset = "mnist"
  # Where the data lives: prepared tfds data, or the IDX files (in it or its <dataset>/ folder,
  # where downloads go). Unset: tfds data in $TFDS_DATA_DIR, else ~/tensorflow_datasets; IDX
  # files in ~/.cache/mnist_flax/data/<dataset>/.
  c.data_dir = config_dict.placeholder(str)
  # The base URL that missing IDX files are downloaded from, e.g. a local mirror (unset: the
  # dataset's published mirrors, tried in order).
  c.data_url = config_dict.placeholder(str)
  # Decoded arrays are cached here after the first load (unset: ~/.cache/mnist_flax/datasets;
  # "none" or "": no cache).
  c.cache_dir = config_dict.placeholder(str)
  c.validation_fraction = 0.1  # share of train held out for validation (0 disables validation)
  c.split_seed = 0  # seed of the train/validation carve, independent of `seed`
  # Caps for quick runs and tests (0 = all):
  c.max_train_examples = 0  # use at most this many training examples
  c.max_eval_examples = 0  # ... and at most this many of each evaluation split
  # Keep only these classes (comma-separated names or indices, e.g. "0,1,2" or "cat,dog"; "" =
  # all), relabelled 0..k-1 in the order given, in every split.
  c.classes = ""
  # Few-shot: at most N training examples per class (0 = all), a reproducible choice seeded by
  # split_seed, made after the validation carve so validation is unchanged.
  c.max_per_class = 0
  # For --config.dataset=folder:/path (docs/data.md): how its images become model inputs.
  c.folder = ml_collections.ConfigDict()
  c.folder.image_size = 28  # every image is resized to image_size x image_size
  c.folder.channels = 1  # 1 (grey) or 3 (RGB)
  c.folder.test_fraction = 0.1  # share of each class held out for testing when there is no test/

  # --- Task ---
  # What is learnt (training/tasks/): classify (the nets classifiers) or gan (configs/dcgan.py).
  c.task = "classify"

  # --- Model: `name` picks the architecture; the other fields are its module fields ---
  # A config overrides only the fields it tunes: each field, its default and its comment are
  # declared once, in the model's nets/ module, and all of them take --config.model.FIELD=V.
  c.model = ml_collections.ConfigDict(nets.config_fields(model))
  # The architecture: one of the models that nets/ registers (--mode=show lists them and their
  # fields). Set on the command line, its own defaults replace the config file's model fields.
  c.model.name = model
  # Compute dtype: float32 or bfloat16 (parameters and loss stay float32). bfloat16 is for
  # GPU/TPU: on CPU it is slower than float32.
  c.dtype = "float32"

  # --- Optimization ---
  c.optimizer = "adam"  # sgd | momentum | adam | adamw
  c.learning_rate = 1e-3  # peak learning rate
  c.momentum = 0.9  # for momentum (and sgd, where it is ignored)
  c.nesterov = False  # Nesterov momentum, for `momentum`
  c.adam_b1 = 0.9  # Adam's first-moment (gradient) decay, for adam and adamw
  c.adam_b2 = 0.999  # Adam's second-moment (squared gradient) decay, for adam and adamw
  c.weight_decay = 0.0  # decoupled for adamw, L2 added to the gradient otherwise
  c.schedule = "constant"  # constant | cosine | warmup_cosine | onecycle | constant_linear
  c.warmup_epochs = 0.0  # for warmup_cosine (fractions allowed)
  c.end_lr_factor = 0.0  # final learning rate as a fraction of the peak (cosine schedules)
  c.onecycle_pct_start = 0.3  # for onecycle: share of the steps spent rising to the peak
  # For constant_linear: the final share of the steps over which the rate falls linearly from
  # the peak to end_lr_factor times it (the GANs' schedule).
  c.decay_fraction = 0.3
  c.grad_clip_norm = 0.0  # clip gradients to this global norm; 0 disables
  c.label_smoothing = 0.0  # share of each target spread evenly over the classes (0: one-hot)
  # On-device augmentation of training batches (never of evaluation), drawn per image and
  # applied as one bilinear resampling (training/data/augment.py); 0 turns each off.
  c.augment = ml_collections.ConfigDict()
  c.augment.shift = 0.0  # shift by up to this many pixels per axis (fractions of a pixel too)
  c.augment.rotate = 0.0  # rotate by up to this many degrees either way
  c.augment.zoom = 0.0  # scale by a factor in [1 - zoom, 1 + zoom], e.g. 0.1
  c.augment.crop = 0  # pad and crop: translate by a whole number of pixels in [-crop, crop]
  # Elastic distortion (Simard et al. 2003): a random displacement field smoothed by a Gaussian
  # of elastic_sigma pixels, scaled by `elastic` pixels (34 with sigma 4 for 28x28 digits).
  c.augment.elastic = 0.0  # the field's strength in pixels (0: off)
  c.augment.elastic_sigma = 4.0  # the field's smoothness: its Gaussian's sigma in pixels
  # Evaluate (and checkpoint) an exponential moving average of the weights with this decay,
  # e.g. 0.999; 0 disables it.
  c.ema_decay = 0.0
  c.batch_size = 128  # global training batch
  c.eval_batch_size = 1000  # examples per evaluation call (changes no result, only memory)
  # Test-time augmentation of every evaluation (validation, test, --mode=evaluate): the mean of
  # the softmax over each image and its copies shifted by this many pixels up, down, left and
  # right (5 forward passes).
  c.tta_shift = 0  # pixels each shifted view moves (0: off)
  c.num_epochs = 10  # passes over the training examples
  c.seed = 0  # parameter init, shuffling and dropout

  # --- Populations: several models trained in one compiled program (docs/populations.md) ---
  # Members with seeds seed, seed+1, ..., each with its own initialization, dropout,
  # augmentation and data order; test_metrics.json adds their mean +- std and their ensemble.
  c.population = 1
  # A JSON object of fields to lists of values, e.g. '{"learning_rate": [0.001, 0.003]}': the
  # members are the product of the lists, each with `population` seeds ("": no sweep). Fields
  # that change only values: learning_rate, weight_decay, label_smoothing, ema_decay,
  # grad_clip_norm, augment.*, model.*dropout*.
  c.sweep = ""
  # How the members run in the program: vmap (batched), loop (one after another) or auto (loop on
  # CPU for models with convolutions, which a batch of members would make slow; vmap elsewhere).
  c.population_mode = "auto"
  # Each member its own validation carve of the training examples (drawn from its seed, the
  # share validation_fraction), training on the rest: members that differ on purpose, as a
  # single run with split_seed=seed does (docs/populations.md).
  c.population_splits = False

  # --- Fine-tuning (docs/finetuning.md) ---
  # Start from another run's checkpoint: "DIR", "DIR:best", "DIR:latest" or "DIR:STEP" ("": off).
  c.init_from = ""
  # Regex (re.search) on parameter paths such as "Conv_0/kernel": those get no updates ("": none).
  c.freeze = ""
  c.init_lr_multiplier = 1.0  # scales the learning rate of the parameters init_from loaded

  # --- Checkpoints (orbax, in <workdir>/checkpoints; re-running resumes from the latest) ---
  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.enabled = True  # False: no checkpoints, so no resume (quick experiments)
  c.checkpoint.every_epochs = 1  # save after every N epochs (and always after the last)
  c.checkpoint.every_steps = 0  # also every N steps, counted from each epoch's start (0: off)
  c.checkpoint.keep = 2  # the latest N checkpoints are kept ...
  c.checkpoint.keep_best = 1  # ... plus the best N by validation accuracy
  # Resuming with other settings than the checkpoint's (learning rate, seed, model, ...) is
  # refused unless this is True; the run's length, paths, logging and devices may always change.
  c.checkpoint.allow_config_changes = False

  # Stop with a checkpoint after this many steps in this process (0: run to the end); for jobs
  # with a time limit: each re-run continues where the last stopped.
  c.stop_after_steps = 0

  # --- Devices ---
  # The device mesh: the batch is split along "data", parameters are replicated. -1 = all the
  # devices (of all processes); e.g. (4,) uses the first 4 of one host's devices.
  c.mesh_shape = (-1,)
  c.mesh_axes = ("data",)  # the mesh's axis names; the batch is split along "data"

  # --- Runtime ---
  # Persistent XLA compilation cache (unset: ~/.cache/mnist_flax/jax; "none": off).
  c.compilation_cache_dir = config_dict.placeholder(str)

  # Train steps per jitted call (a lax.scan): 0 picks by backend (1 on CPU, where scanning made
  # steps slower; the log interval on GPU/TPU, where it saves a dispatch per step). Logs and
  # saves fall on the calls' ends, counted from each epoch's start.
  c.steps_per_call = 0

  # --- Logging ---
  c.log_every_steps = 100  # host-side metric fetch and NaN check, every N steps of an epoch
  c.progress_bar = True  # a live bar of each epoch's steps and loss (process 0 only)
  c.test_every_epoch = False  # also evaluate the test split after every epoch (for curves)
  # At the end of a run, write its figures and report.html to the workdir (docs/report.md).
  c.report = True
  # Trace this many train steps with jax.profiler after the first call (which compiles), into
  # <workdir>/tensorboard/plugins/profile, for TensorBoard or Perfetto (0: no trace).
  c.profile_steps = 0
  return c


def patch_token_recipe(c: ml_collections.ConfigDict) -> None:
  """The training of the models of image patches (configs/vit.py, configs/mixer.py), which lack
  a conv net's inductive bias: AdamW with warm-up and cosine decay, clipped gradients, random
  shifts of up to 2 pixels (the shift invariance a conv net has built in) and an evaluated
  moving average of the weights. Set here without comments: the fields' own stay in base()."""
  c.optimizer, c.weight_decay = "adamw", 0.05
  c.schedule, c.warmup_epochs, c.learning_rate = "warmup_cosine", 0.5, 2e-3
  c.grad_clip_norm = 1.0
  c.augment.shift = 2.0
  c.ema_decay = 0.999
