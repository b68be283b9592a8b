"""How good a GAN's images are, judged by a classifier trained by this project.

The Frechet distance between the classifier's penultimate-layer features of generated and real
images (an FID with this project's own network instead of Inception), next to the same distance
between real train and test images; for a conditional GAN, how often the classifier sees the
requested class; and the entropy of the predicted classes (a collapsed GAN draws few classes).
"""

from __future__ import annotations

import dataclasses
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

import nets
from training import members, settings
from training.errors import ConfigError
from training.tasks.classify import steps
from training.store.checkpoint import read_latest
from training.tasks import restore

TRAIN_COMMAND = "python train.py --config=configs/speedrun.py --workdir=runs/speedrun"

D_COLLAPSE = 0.01  # a mean discriminator loss below this: the generator gets no signal


def _check_classifier_workdir(workdir: str) -> None:
  """A ConfigError naming the command that trains a classifier, unless `workdir` holds one."""
  how = (f"train one (about 20 s on 2 CPU cores) with `{TRAIN_COMMAND}` and pass "
         "--config.gan.eval_classifier=runs/speedrun")
  if not os.path.isdir(os.path.join(workdir, "checkpoints")):
    raise ConfigError(f"No trained classifier in {workdir} to measure the images with: {how}.")
  _, (saved,) = read_latest(workdir, "config")
  name = saved["model"]["name"] if saved else None
  if name is None:
    raise ConfigError(f"No complete checkpoint in {workdir} to measure the images with: {how}.")
  if nets.kind_of(name) != "classifier":
    raise ConfigError(f"{workdir} holds a {name!r} model, not a classifier, so it cannot measure "
                      f"the images: {how}.")
  if count := len(members.Population.of(settings.from_json(saved)).members):
    raise ConfigError(f"{workdir} holds a population of {count} classifiers; the images are "
                      f"measured by one classifier's features: {how}.")


class ClassifierFeatures:
  """A trained classifier's penultimate features and logits of uint8 images, in jitted batches.

  The penultimate features are the input of the model's last nn.Dense call, captured by
  intercepting every Dense call, so any registered classifier works unchanged.
  """

  def __init__(self, workdir: str, which: str = "best", batch_size: int = 1000):
    _check_classifier_workdir(workdir)
    restored = restore.restore(workdir, which)
    self.workdir, self.batch_size = workdir, batch_size
    self.num_classes = restored.dataset_info["num_classes"]
    self.image_shape = tuple(restored.dataset_info["image_shape"])
    variables, apply_fn = restored.state.eval_variables(), restored.state.apply_fn

    def features_and_logits(images):
      dense_inputs = []

      def record(next_fun, args, kwargs, context):
        if isinstance(context.module, nn.Dense) and context.method_name == "__call__":
          dense_inputs.append(args[0])
        return next_fun(*args, **kwargs)

      with nn.intercept_methods(record):
        logits = apply_fn(variables, steps.preprocess(images), train=False)
      features = dense_inputs[-1].astype(jnp.float32)
      return features.reshape(features.shape[0], -1), logits

    self._apply = jax.jit(features_and_logits)

  def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, H, W, C) images -> (features (N, D), logits (N, classes)), float32 numpy."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.shape[1:] != self.image_shape:
      raise ValueError(f"Expected uint8 images of shape (N, {', '.join(map(str, self.image_shape))})"
                       f", got {images.dtype} {images.shape}.")
    features, logits = [], []
    for start in range(0, len(images), self.batch_size):
      part = images[start:start + self.batch_size]
      pad = self.batch_size - len(part)  # one compiled shape: the last batch is padded
      padded = np.concatenate([part, np.zeros((pad, *part.shape[1:]), np.uint8)])
      f, l = self._apply(padded)
      features.append(np.asarray(f)[:len(part)])
      logits.append(np.asarray(l)[:len(part)])
    return np.concatenate(features), np.concatenate(logits)


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Mean and covariance of (N, D) features, in float64."""
  f = np.asarray(features, np.float64)
  return f.mean(0), np.cov(f, rowvar=False)


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
  """The Frechet distance between Gaussians N(mu1, cov1) and N(mu2, cov2):
  |mu1 - mu2|^2 + tr(cov1) + tr(cov2) - 2 tr((cov1 cov2)^1/2)."""
  # tr((cov1 cov2)^1/2) = tr((s cov2 s)^1/2) with s = cov1^1/2: a symmetric PSD matrix, whose
  # eigenvalues are real, unlike a general sqrtm's result (complex rounding, singular warnings
  # when a feature is constant, e.g. a dead ReLU).
  root = lambda m: np.sqrt(np.clip(scipy.linalg.eigvalsh(m), 0.0, None))
  w, v = scipy.linalg.eigh(np.asarray(cov1, np.float64))
  s = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
  diff = np.asarray(mu1, np.float64) - np.asarray(mu2, np.float64)
  trace_sqrt = root(s @ np.asarray(cov2, np.float64) @ s).sum()
  return float(max(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * trace_sqrt, 0.0))


def class_accuracy(logits: np.ndarray, requested: np.ndarray) -> dict[str, object]:
  """How often the argmax class is the requested one: overall, and per requested class (NaN
  for a class never requested)."""
  predicted, requested = np.argmax(logits, -1), np.asarray(requested)
  hits = predicted == requested
  per_class = [float(hits[requested == c].mean()) if np.any(requested == c) else float("nan")
               for c in range(logits.shape[-1])]
  return {"accuracy": float(hits.mean()), "per_class": per_class}


def prediction_entropy(logits: np.ndarray) -> float:
  """Entropy in bits of the histogram of argmax classes: log2(classes) when all are equally
  frequent, 0 when every image is one class."""
  counts = np.bincount(np.argmax(logits, -1), minlength=logits.shape[-1])
  p = counts[counts > 0] / counts.sum()
  return float(-(p * np.log2(p)).sum() + 0.0)


@dataclasses.dataclass
class Reference:
  """The real test images' feature statistics, and the train-vs-test Frechet distance."""
  mu: np.ndarray
  cov: np.ndarray
  fd: float


def reference(classifier: ClassifierFeatures, train_images: np.ndarray, test_images: np.ndarray,
              n: int = 10_000, seed: int = 0) -> Reference:
  """The test images' statistics and their Frechet distance to `n` random train images: what
  a generator that drew real digits would score with `n` samples."""
  pick = np.random.default_rng(seed).permutation(len(train_images))[:n]
  mu, cov = feature_stats(classifier(test_images)[0])
  train_mu, train_cov = feature_stats(classifier(train_images[pick])[0])
  return Reference(mu, cov, frechet_distance(train_mu, train_cov, mu, cov))


def evaluate(classifier: ClassifierFeatures, images: np.ndarray, ref: Reference,
             requested: np.ndarray | None = None) -> dict[str, object]:
  """All the measures of generated uint8 `images` (of the `requested` classes, if conditional)."""
  features, logits = classifier(images)
  fd = frechet_distance(*feature_stats(features), ref.mu, ref.cov)
  result = {"fd": fd, "reference_fd": ref.fd, "fd_ratio": fd / ref.fd,
            "entropy": prediction_entropy(logits)}
  if requested is not None:
    accuracy = class_accuracy(logits, requested)
    result.update(class_accuracy=accuracy["accuracy"], per_class_accuracy=accuracy["per_class"])
  return result


def discriminator_collapse(mean_d_loss: float, first_step: int, last_step: int) -> str | None:
  """Whether a discriminator won outright over steps first_step-last_step (its mean loss under
  D_COLLAPSE: it tells real from generated images perfectly, so the generator gets no gradient),
  said in a sentence; None when it did not."""
  if mean_d_loss >= D_COLLAPSE:
    return None
  return (f"the discriminator's loss averaged {mean_d_loss:.4f} over steps {first_step}-"
          f"{last_step}: it tells real from generated images perfectly and the generator learns "
          "nothing")
