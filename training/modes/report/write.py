"""The report of one run: its checkpoint's predictions on the test split, the figures, the page
and the figures as TensorBoard images."""

from __future__ import annotations

import glob
import io
import os
import shutil
import tempfile
import time
from typing import Any

import jax
import numpy as np

from training.errors import ConfigError, DataNotFoundError, unsaved
from training.tasks.classify import scores as scores_lib, steps
from training.modes import evaluate, show
from training.modes.report import figures, population
from training.modes.report.figures import MISTAKES_GRID, STYLE
from training.modes.report.page import img, report_html
from training.modes.report.records import (ReportError, TEST_METRICS, check_run_dir, read_json,
                                           read_metrics, status, write_file)
from training.tasks import restore as restore_lib

REPORT_EVENTS = ".report"  # the name ending of the report's TensorBoard event file


def predict_log_probs(state: Any, images: np.ndarray, batch_size: int = 1000,
                      population: bool = False) -> np.ndarray:
  """Log class probabilities of uint8 `images` (N, H, W, C) under the state's eval variables (a
  population's ensemble's), in fixed-size batches (one compiled program; the last batch padded)."""
  apply = jax.jit(lambda s, x: steps.log_probabilities(s, steps.preprocess(x), population))
  batch_size = max(1, min(batch_size, len(images)))
  out = []
  for start in range(0, len(images), batch_size):
    batch = images[start:start + batch_size]
    n = len(batch)
    if n < batch_size:
      batch = np.concatenate([batch, np.zeros((batch_size - n, *batch.shape[1:]), batch.dtype)])
    out.append(np.asarray(apply(state, batch), np.float64)[:n])
  return np.concatenate(out)


def confident_mistakes(probs: np.ndarray, labels: np.ndarray, k: int = 32
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The misclassified examples, most confident first: (indices, predicted classes, probability
  of the predicted class), at most `k` of them. Ties keep the examples' order."""
  predicted = probs.argmax(axis=1)
  confidence = probs[np.arange(len(probs)), predicted]
  wrong = np.flatnonzero(predicted != labels)
  chosen = wrong[np.argsort(-confidence[wrong], kind="stable")][:k]
  return chosen, predicted[chosen], confidence[chosen]


def scores(log_probs: np.ndarray, labels: np.ndarray, num_classes: int) -> dict[str, Any]:
  """Test metrics as `metrics.summarize` gives them, plus per-class precision, recall and F1."""
  predicted = log_probs.argmax(axis=1)
  cm = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(cm, (labels, predicted), 1)
  result = scores_lib.summarize({"confusion": cm, "count": len(labels),
                                  "loss_sum": -log_probs[np.arange(len(labels)), labels].sum()})
  tp, support, called = np.diag(cm).astype(float), cm.sum(1), cm.sum(0)
  precision = np.divide(tp, called, out=np.zeros_like(tp), where=called > 0)
  recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
  total = precision + recall
  f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(tp), where=total > 0)
  result.update(precision=precision.tolist(), recall=recall.tolist(), f1=f1.tolist(),
                support=support.tolist())
  return result


def model_summary(restored: Any) -> str:
  """flax's per-layer table (inputs, outputs, parameter shapes and counts) of the checkpoint's
  model, as `--mode=show` prints it; the parameters' shapes alone if tabulating fails."""
  info = restored.dataset_info
  try:
    return show.model_summary(restored.config, tuple(info["image_shape"]), info["num_classes"])
  except Exception as e:  # the table is a convenience: the parameters say the essentials
    lines = [f"(flax's tabulate failed: {type(e).__name__}: {e}; the parameters:)"]
    for path, leaf in jax.tree_util.tree_flatten_with_path(restored.state.params)[0]:
      lines.append(f"{jax.tree_util.keystr(path):60} {str(tuple(leaf.shape)):>20} "
                   f"{int(np.prod(leaf.shape)):>12,}")
    return "\n".join(lines)


def _leaves(tree: Any) -> list[Any]:
  return jax.tree_util.tree_leaves(tree)


def _predict_test(restored: Any, data_dir: str | None, dataset: Any = None,
                  data_url: str | None = None) -> tuple[Any, np.ndarray]:
  """The dataset whose test split is the run's (its classes; all unless max_eval_examples capped
  it), `dataset` when given; the log probabilities of the test split's classes."""
  if dataset is None:
    dataset = evaluate.load_data(restored.config, data_dir, data_url,
                                 restored.dataset_info.get("class_names"))
  return dataset, predict_log_probs(restored.state, dataset.test.images,
                                    restored.config.eval_batch_size, bool(restored.members))


def _figures(records, restored, dataset, log_probs, final
             ) -> tuple[dict[str, bytes], dict[str, Any]]:
  """The four figures as PNG bytes (a sweep's fifth), and the test scores and mistakes they
  show (a population's: its ensemble's). A mistake's index is its test example's index in the
  source (`dataset.order` says which: the original file's order where the source has one), so
  that a person can look it up; an image folder's mistakes also name their files."""
  import matplotlib
  test, order, files = dataset.test, dataset.order, dataset.test_files
  names = [str(n) for n in restored.dataset_info["class_names"]]
  result = scores(log_probs, test.labels, len(names))
  chosen = confident_mistakes(np.exp(log_probs), test.labels, MISTAKES_GRID[0] * MISTAKES_GRID[1])
  wrong = int(result["count"] - round(result["accuracy"] * result["count"]))
  run = f"{restored.config.model.name} on {restored.dataset_info['name']}"
  ckpt = f"{restored.which} checkpoint, step {restored.step}"
  if restored.members:
    run += f", {len(restored.members)} members' ensemble"
  with matplotlib.rc_context(STYLE):
    pngs = {
        "learning_curves": _curves(records, restored, f"{run}: learning curves"),
        "confusion_matrix": figures.plot_confusion_matrix(
            result["confusion_matrix"], names,
            f"Test confusion matrix: {result['accuracy']:.2%} correct\n({ckpt})"),
        "per_class": figures.plot_per_class(result, names, f"{run}: per-class scores on the test split "
                                    f"(macro F1 {result['macro_f1']:.4f}, {ckpt})"),
        "mistakes": figures.plot_mistakes(
            test.images, test.labels, chosen, names,
            f"The {len(chosen[0])} most confident of {wrong} test mistakes ({run}, {ckpt})"
            + (f"\n#: index in {order}" if order else ""), test.indices),
    }
    swept = restored.population.swept
    if swept and final and final.get("members"):
      pngs["sweep"] = population.plot_sweep(final["members"], swept,
                                            f"{run}: test accuracy against the swept values")
  mistakes = [{"index": int(test.indices[i]), "label": int(test.labels[i]), "predicted": int(p),
               "probability": float(q), **({"file": files[test.indices[i]]} if files else {})}
              for i, p, q in zip(*chosen)]
  return pngs, {"test": result, "mistakes": mistakes, "wrong": wrong, "index_order": order}


def _curves(records: dict[str, Any], restored: Any, title: str) -> bytes:
  """The learning curves: a population's as bands, one per swept setting."""
  if not restored.members or not records["members"]:
    return figures.plot_learning_curves(records, title)
  swept = restored.population.swept
  rows = [{"member": m.index, **m.values} for m in restored.members]
  return population.plot_members(records, population.settings(rows, swept), title)


def _members_section(restored: Any, final: dict[str, Any] | None, pngs: dict[str, bytes]
                     ) -> list[str]:
  """A population's members table and sweep figure, as HTML (nothing for a single model)."""
  if not restored.members:
    return []
  swept = restored.population.swept
  out = [f"<h2>Members ({len(restored.members)})</h2>"]
  if final and final.get("members"):
    out.append(population.members_table(final["members"], swept, final.get("ensemble")))
  else:
    out.append("<p class=\"meta\">The run has not finished: no test scores of its members yet.</p>")
  if "sweep" in pngs:
    out.append(img("sweep", pngs["sweep"]))
  return out


def _tensorboard_images(workdir: str, pngs: dict[str, bytes], step: int) -> None:
  """The figures as TensorBoard images (tag report/<name>) at the checkpoint's step, in an event
  file of the report's own that replaces the one an earlier report wrote: reports made again
  add no second copy of the images at the same step."""
  from PIL import Image
  from tensorboardX import SummaryWriter
  directory = os.path.join(workdir, "tensorboard")
  earlier = glob.glob(os.path.join(glob.escape(directory), f"*{REPORT_EVENTS}"))
  # Written aside first, so that TensorBoard never reads a half-written file or two copies.
  aside = tempfile.mkdtemp(dir=workdir, prefix=".report-events-")
  try:
    writer = SummaryWriter(aside, filename_suffix=REPORT_EVENTS)
    try:
      for name, png in pngs.items():
        image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
        writer.add_image(f"report/{name}", image, step, dataformats="HWC")
    finally:
      writer.close()
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(aside):
      os.replace(os.path.join(aside, name), os.path.join(directory, name))
      earlier = [p for p in earlier if os.path.basename(p) != name]
  finally:
    shutil.rmtree(aside, ignore_errors=True)
  for path in earlier:
    os.remove(path)


def _save(workdir: str, pngs: dict[str, bytes], page: str, step: int
          ) -> tuple[dict[str, str], str | None]:
  """Writes the figures, report.html and the TensorBoard images into the workdir: ({name: path}
  of the files written, a note naming those that could not be, or None)."""
  files, failed, error = {}, [], None
  outputs = [(name, f"{name}.png", pngs[name]) for name in pngs] + [
      ("report", "report.html", page)]
  for name, file, content in outputs:
    try:
      write_file(os.path.join(workdir, file), content)
      files[name] = os.path.join(workdir, file)
    except OSError as e:  # a read-only workdir: the report's results are printed all the same
      failed.append(file)
      error = e
  try:
    _tensorboard_images(workdir, pngs, step)
  except OSError as e:
    failed.append("the TensorBoard images")
    error = e
  return files, "note: " + unsaved(_listed(failed), workdir, error) if failed else None


def _listed(names: list[str]) -> str:
  return ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]


def _report(workdir: str, which: str, data_dir: str | None, records: dict[str, Any],
            dataset: Any, data_url: str | None) -> dict[str, Any]:
  t0 = time.perf_counter()
  restored = restore_lib.restore(workdir, which)
  dataset, log_probs = _predict_test(restored, data_dir, dataset, data_url)
  t1 = time.perf_counter()
  final = read_json(os.path.join(workdir, TEST_METRICS))
  pngs, found = _figures(records, restored, dataset, log_probs, final)
  found["params"] = sum(int(np.prod(p.shape)) for p in _leaves(restored.state.params)) // max(
      len(restored.members), 1)
  t2 = time.perf_counter()
  summary = model_summary(restored)
  t3 = time.perf_counter()
  page = report_html(workdir, restored, records, found, final, pngs, summary,
                     _members_section(restored, final, pngs))
  files, note = _save(workdir, pngs, page, restored.step)
  t4 = time.perf_counter()
  return {"files": files, "unsaved": note, "checkpoint": restored.which,
          "step": restored.step, **found,
          "dataset": restored.dataset_info["name"], "model": restored.config.model.name,
          "max_eval_examples": restored.config.get("max_eval_examples", 0),
          "status": status(records, restored.config, final is not None),
          "seconds": {"restore_and_predict": t1 - t0, "figures": t2 - t1,
                      "model_summary": t3 - t2, "write": t4 - t3}}


def write_report(workdir: str, which: str = "best", data_dir: str | None = None,
                 dataset: Any = None, data_url: str | None = None) -> dict[str, Any]:
  """Writes the report of the run in `workdir` from its checkpoint `which` ("best", falling back
  to the latest when none ranks best; "latest"; or a step): the figures, `report.html` and the
  figures as TensorBoard images. The test split is loaded as the checkpoint's config says (from
  `data_dir`, or downloaded from `data_url`, if given), or taken from `dataset` (a
  `data.Dataset`: the training loop's own).

  Returns {"files": {name: path} of the files written, "unsaved": a note naming those that
  could not be (a read-only workdir) or None, "checkpoint", "step", "status", "model",
  "dataset", "test": scores of the checkpoint on the test split, "wrong": its number of
  mistakes, "mistakes": the examples shown in mistakes.png (each with its "index" in the
  source's test split, and an image folder's its "file"), "index_order": what those indices
  count, "params", "seconds": each part's time}.

  Raises ReportError (a ConfigError) for a workdir that is not a run, has no metrics or no
  checkpoint, and for any failure while drawing: the run's own files (metrics, checkpoints) are
  never touched, so a caller can take it as a warning.
  """
  t0, cpu0 = time.perf_counter(), time.process_time()
  check_run_dir(workdir, writable=False)  # a read-only one gets its report printed, not saved
  try:
    records = read_metrics(workdir)
    out = _report(workdir, which, data_dir, records, dataset, data_url)
  except ReportError:
    raise
  except (ConfigError, DataNotFoundError) as e:  # no checkpoint, or no data to predict
    raise ReportError(f"Cannot write the report of {workdir}: {e}") from e
  except Exception as e:
    raise ReportError(f"Writing the report of {workdir} failed: {type(e).__name__}: {e}") from e
  out["seconds"].update(total=time.perf_counter() - t0, cpu=time.process_time() - cpu0)
  return out


def format_result(result: dict[str, Any]) -> str:
  """What `write_report` did, in a few lines for the terminal."""
  t = result["test"]
  capped = (", the run's max_eval_examples: --mode=evaluate scores the whole split"
            if result.get("max_eval_examples") else "")
  files = result["files"]
  figures = [os.path.basename(f) for n, f in files.items() if n != "report"]
  wrote = (f"wrote {files['report']}" if "report" in files else "wrote " + ", ".join(figures)
           if figures else "")
  if "report" in files and figures:
    wrote += f" and {', '.join(figures)}"
  return "\n".join(line for line in [
      f"{result['model']} on {result['dataset']}, {result['checkpoint']} checkpoint (step "
      f"{result['step']}); {result['status']}",
      f"test ({t['count']:,} examples{capped}): accuracy {t['accuracy']:.2%}  macro F1 "
      f"{t['macro_f1']:.4f}  ({result['wrong']} mistakes; the {len(result['mistakes'])} most "
      "confident are shown)",
      f"{wrote} in {result['seconds']['total']:.1f}s" if wrote else "",
      result.get("unsaved") or ""] if line)
