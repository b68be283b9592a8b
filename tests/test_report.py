"""The report of a run (figures, report.html, TensorBoard images) and the comparison of runs,
on short real-MNIST runs: a finished one, and one stopped part-way as a kill or preemption
leaves it."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import struct
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from training import ConfigError, Preempted, train_and_evaluate
from training import data
from training.modes import report
from training.modes.report import figures, records as report_records, write as report_write
from training.tasks import restore
from training.tasks.classify import steps

from conftest import REPO, load_config, real_data_dir, shrink


def _config(data_cache, **overrides):
  """The MLP on 2,560 training examples: 20 steps an epoch, logged every 5; the whole test split."""
  return shrink(load_config("mlp"), num_epochs=2, max_train_examples=2560, max_eval_examples=0,
                batch_size=128, eval_batch_size=1000, log_every_steps=5,
                data_dir=real_data_dir(), cache_dir=data_cache, **overrides)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_cache):
  """A finished run (2 epochs), which writes its report at its end, and a run stopped at step 30 (mid second
  epoch) that keeps only its latest checkpoint, which no validation metric ranks: the report
  falls back to it. Its metrics.jsonl ends in a line cut short, as a kill leaves it."""
  root = tmp_path_factory.mktemp("report_runs")
  finished, killed = str(root / "finished"), str(root / "killed")
  train_and_evaluate(_config(data_cache, report=True), finished)
  assert os.path.exists(os.path.join(finished, "report.html"))  # written by the run itself
  with pytest.raises(Preempted):
    train_and_evaluate(_config(data_cache, learning_rate=1e-3, stop_after_steps=30,
                               **{"checkpoint.keep": 1, "checkpoint.keep_best": 0}), killed)
  with open(os.path.join(killed, "metrics.jsonl"), "a") as f:
    f.write('{"step": 35, "train/lo')
  result = report.write_report(finished)
  return {"finished": finished, "killed": killed, "result": result}


def _png_size(path: str) -> tuple[int, int]:
  with Image.open(path) as image:
    assert image.format == "PNG"
    image.verify()
  with Image.open(path) as image:
    image.load()  # decodes every pixel: a truncated file fails here
    return image.size


def _expected_size(name: str) -> tuple[int, int]:
  w, h = figures.SIZES[name]
  return round(w * figures.DPI), round(h * figures.DPI)


def _tensorboard_images(workdir: str) -> dict[str, int]:
  """{tag: step} of the image summaries in the workdir's TensorBoard event files."""
  from tensorboardX.proto import event_pb2
  found = {}
  directory = os.path.join(workdir, "tensorboard")
  for name in os.listdir(directory):
    with open(os.path.join(directory, name), "rb") as f:
      buf = f.read()
    at = 0
    while at + 12 <= len(buf):  # TFRecord: length, its crc, the record, its crc
      (n,) = struct.unpack("<Q", buf[at:at + 8])
      event = event_pb2.Event.FromString(buf[at + 12:at + 12 + n])
      at += 12 + n + 4
      for value in event.summary.value:
        if value.HasField("image"):
          found[value.tag] = event.step
  return found


def test_report_of_a_finished_run(runs):
  workdir, result = runs["finished"], runs["result"]
  assert result["checkpoint"] == "best" and result["status"] == "finished: 2 of 2 epochs"
  for name in figures.FIGURES:
    assert result["files"][name] == os.path.join(workdir, f"{name}.png")
    assert _png_size(result["files"][name]) == _expected_size(name), name
  # The checkpoint's test metrics, on the whole test split: the best checkpoint is the final one
  # here (its validation accuracy is the higher), so they are the training run's.
  saved = json.load(open(os.path.join(workdir, "test_metrics.json")))
  test = result["test"]
  assert test["count"] == 10_000 and result["step"] == 40
  assert test["confusion_matrix"] == saved["test"]["confusion_matrix"]
  assert test["accuracy"] == pytest.approx(saved["test"]["accuracy"], abs=1e-9)
  assert test["macro_f1"] == pytest.approx(saved["test"]["macro_f1"], abs=1e-9)
  assert test["loss"] == pytest.approx(saved["test"]["loss"], rel=1e-4)
  assert np.mean(test["f1"]) == pytest.approx(test["macro_f1"])
  assert _tensorboard_images(workdir) == {f"report/{n}": 40 for n in figures.FIGURES}


def test_report_html_is_one_page_with_the_images_and_the_metrics(runs):
  result = runs["result"]
  page = open(result["files"]["report"], encoding="utf-8").read()
  sources = re.findall(r'<img id="(\w+)"[^>]* src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
  assert [name for name, _ in sources] == ["learning_curves", "confusion_matrix", "per_class",
                                           "mistakes"]
  for name, encoded in sources:  # the very figures written beside it
    assert base64.b64decode(encoded) == open(result["files"][name], "rb").read()
  assert page.count("src=") == 4 and "http://" not in page and "https://" not in page
  test = result["test"]
  for text in (f"{test['accuracy']:.2%}", f"{test['macro_f1']:.4f}", f"{test['loss']:.4f}",
               "10,000", "669,706", "Total Parameters", "Dense_0", "float32[784,512]",
               "&quot;learning_rate&quot;: 0.002", "best checkpoint (step 40)"):
    assert text in page, text


def test_mistakes_are_the_most_confident_wrong_predictions(runs, data_cache):
  """mistakes.png shows exactly the misclassified test images, most confident first: checked
  against the model's own predictions, made here without the report's code."""
  result = runs["result"]
  state = restore.restore(runs["finished"], "best").state
  test = data.load("mnist", data_dir=real_data_dir(), cache_dir=data_cache).test
  logits = jax.jit(lambda s, x: s.apply_fn(s.eval_variables(), steps.preprocess(x),
                                           train=False))(state, test.images)
  probs = np.asarray(jax.nn.softmax(logits, axis=-1), np.float64)
  predicted, confidence = probs.argmax(1), probs.max(1)
  wrong = np.flatnonzero(predicted != test.labels)
  assert result["wrong"] == len(wrong) > 32  # a weak model: more mistakes than the grid's 32
  shown = result["mistakes"]
  assert len(shown) == 32
  indices = np.asarray([m["index"] for m in shown])
  assert set(indices) <= set(wrong)
  assert all(m["label"] == test.labels[m["index"]] != m["predicted"] == predicted[m["index"]]
             for m in shown)
  p = np.asarray([m["probability"] for m in shown])
  np.testing.assert_allclose(p, confidence[indices], rtol=1e-5)
  assert np.all(np.diff(p) <= 0)
  # No unshown mistake is more confident than the least confident one shown.
  assert confidence[np.setdiff1d(wrong, indices)].max() <= p[-1] + 1e-6


def test_confident_mistakes_selection():
  probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4], [0.2, 0.8], [0.55, 0.45]])
  labels = np.array([0, 0, 0, 1, 0, 1])  # wrong: 1 (0.8), 2 (0.7), 3 (0.6), 4 (0.8), 5 (0.55)
  indices, predicted, confidence = report_write.confident_mistakes(probs, labels, k=4)
  assert indices.tolist() == [1, 4, 2, 3]  # ties keep the examples' order
  assert predicted.tolist() == [1, 1, 1, 0]
  np.testing.assert_allclose(confidence, [0.8, 0.8, 0.7, 0.6])
  none = report_write.confident_mistakes(probs, probs.argmax(1))
  assert [len(a) for a in none] == [0, 0, 0]


def test_read_metrics_keeps_the_resumed_runs_records(tmp_path):
  """A run killed after step 30 resumed from its checkpoint at step 20: the killed attempt's
  records after step 20 are replaced by the resumed run's; a line cut short is skipped."""
  lines = [{"step": s, "train/loss": 1.0} for s in (10, 20)]
  lines += [{"step": 20, "epoch": 1, "train/loss": 0.9}, {"step": 30, "train/loss": 0.5}]
  lines += [{"step": s, "train/loss": 0.1} for s in (30, 40)]
  lines += [{"step": 40, "epoch": 2, "train/loss": 0.2}, {"step": 40, "test/accuracy": 0.9}]
  text = "\n".join(map(json.dumps, lines)) + '\n{"step": 50, "tr'
  (tmp_path / "metrics.jsonl").write_text(text)
  records = report_records.read_metrics(str(tmp_path))
  assert [(r["step"], r["train/loss"]) for r in records["steps"]] == [
      (10, 1.0), (20, 1.0), (30, 0.1), (40, 0.1)]
  assert [r["epoch"] for r in records["epochs"]] == [1, 2]
  assert records["final"] == {"step": 40, "test/accuracy": 0.9}


def test_report_of_a_stopped_run_uses_its_latest_checkpoint(runs, tmp_path, data_cache):
  killed = str(tmp_path / "killed")
  shutil.copytree(runs["killed"], killed)
  assert not os.path.exists(os.path.join(killed, "test_metrics.json"))
  # As the training loop calls it: with its dataset (here of 500 test examples), not loaded again.
  ds = data.load("mnist", data_dir=real_data_dir(), cache_dir=data_cache, max_eval_examples=500)
  result = report.write_report(killed, dataset=ds)  # "best", but no checkpoint ranks best
  assert result["checkpoint"] == "latest" and result["step"] == 30
  assert result["test"]["count"] == 500 and sum(map(sum, result["test"]["confusion_matrix"])) == 500
  assert result["status"].startswith("unfinished") and "1 of 2 epochs" in result["status"]
  for name in figures.FIGURES:
    assert _png_size(result["files"][name]) == _expected_size(name), name
  page = open(result["files"]["report"], encoding="utf-8").read()
  assert "latest checkpoint (step 30)" in page and "test_metrics.json" not in page
  assert page.count('src="data:image/png;base64,') == 4


def test_comparison_of_two_runs(runs, tmp_path):
  out = str(tmp_path / "comparison")
  text = report.write_comparison([runs["finished"], runs["killed"]], out)
  lines = text.splitlines()
  assert lines[0].split() == ["finished", "killed"]
  rows = {line.split()[0]: line.split()[1:] for line in lines[2:]}
  # Only the setting that differs (stop_after_steps and checkpoint.* say nothing of the model).
  assert rows["learning_rate"] == ["0.002", "0.001"]
  assert not any(k.startswith(("checkpoint", "stop_after", "data_dir", "model")) for k in rows)
  saved = json.load(open(os.path.join(runs["finished"], "test_metrics.json")))
  assert rows["test"] == ["accuracy", f"{saved['test']['accuracy']:.2%}", "-"]
  assert rows["macro"] == ["F1", f"{saved['test']['macro_f1']:.4f}", "-"]
  assert rows["epochs"] == ["2/2", "1/2", "(unfinished)"]
  assert rows["parameters"] == ["669,706", "669,706"]  # the killed run's from its checkpoint
  assert _png_size(os.path.join(out, "comparison.png")) == _expected_size("comparison")
  page = open(os.path.join(out, "comparison.html"), encoding="utf-8").read()
  assert page.count('src="data:image/png;base64,') == 1 and "<td>learning_rate</td>" in page


def test_bad_workdirs_fail_with_one_clear_error(runs, tmp_path, monkeypatch):
  def fails(path, match):
    with pytest.raises(report.ReportError, match=match) as e:
      report.write_report(str(path))
    assert isinstance(e.value, ConfigError)  # train.py prints it as one `error:` line

  fails(tmp_path / "nowhere", "no such directory")
  (tmp_path / "file").write_text("x")
  fails(tmp_path / "file", "a file, not a directory")
  parent = tmp_path / "runs"
  shutil.copytree(runs["killed"], parent / "a")
  (parent / "notes").mkdir()
  fails(parent, r"not a training run's workdir.*holds the runs a: pass one")
  fails(parent / "notes", r"not a training run's workdir.*Pass the --workdir of a training run")
  (parent / "new").mkdir()
  shutil.copy(os.path.join(runs["killed"], "config.json"), parent / "new")
  fails(parent / "new", "has no metrics.jsonl")
  (parent / "empty_log").mkdir()
  (parent / "empty_log" / "metrics.jsonl").write_text("")
  fails(parent / "empty_log", "holds no training metrics")
  (parent / "nockpt").mkdir()
  shutil.copy(os.path.join(runs["killed"], "metrics.jsonl"), parent / "nockpt")
  fails(parent / "nockpt", "Cannot write the report of .*nockpt: No checkpoints in")
  with pytest.raises(report.ReportError, match="Name the runs"):
    report.write_comparison([], str(tmp_path / "out"))

  # A failure while drawing is a ReportError too, and leaves the run's own files as they were.
  before = {f: os.path.getmtime(os.path.join(parent / "a", f)) for f in os.listdir(parent / "a")}
  monkeypatch.setattr(figures, "plot_per_class", lambda *a: 1 / 0)
  fails(parent / "a", "Writing the report of .* failed: ZeroDivisionError")
  assert {f: os.path.getmtime(os.path.join(parent / "a", f))
          for f in os.listdir(parent / "a")} == before
  assert not [f for f in os.listdir(parent / "a") if f.endswith((".png", ".html", ".tmp"))]

  # A comparison's unwritable output: root writes anywhere, so the probe is told it may not, as
  # it would be. (A run's own unwritable workdir gets its report printed: the next test.)
  monkeypatch.setattr(os, "access", lambda path, mode: False)
  with pytest.raises(report.ReportError, match=r"Cannot write the report into .*\(Permission "
                                               r"denied\)"):
    report.write_comparison([str(parent / "a")], str(tmp_path / "out"))


def test_the_report_of_a_read_only_run_is_printed_with_what_was_not_saved(runs, tmp_path,
                                                                          monkeypatch):
  """Every write fails as on a read-only file system (tests/test_read_only.py makes one for
  real, where it can): the report is computed and printed, and one line says what was not
  saved."""
  workdir = str(tmp_path / "run")
  shutil.copytree(runs["finished"], workdir)
  before = sorted(os.listdir(workdir))

  def read_only(*args, **kwargs):
    raise OSError(30, "Read-only file system")
  monkeypatch.setattr(report_write, "write_file", read_only)
  monkeypatch.setattr(report_write.tempfile, "mkdtemp", read_only)
  result = report.write_report(workdir)
  assert result["files"] == {} and result["test"]["count"] == 10_000
  assert result["unsaved"] == (
      "note: could not write learning_curves.png, confusion_matrix.png, per_class.png, "
      f"mistakes.png, report.html and the TensorBoard images into {workdir}: the workdir is "
      "read-only.")
  text = report.format_result(result)
  assert text.splitlines()[-1] == result["unsaved"] and "wrote" not in text
  assert f"test (10,000 examples): accuracy {result['test']['accuracy']:.2%}" in text
  assert sorted(os.listdir(workdir)) == before


def test_report_command(runs, tmp_path):
  env = {**os.environ, "TFDS_DATA_DIR": real_data_dir()}
  run = lambda *args: subprocess.run([sys.executable, "train.py", "--mode=report", *args],
                                     cwd=REPO, env=env, capture_output=True, text=True,
                                     timeout=300)
  workdir = str(tmp_path / "run")
  shutil.copytree(runs["finished"], workdir)
  one = run(f"--workdir={workdir}", "--checkpoint=latest")
  assert one.returncode == 0, one.stderr[-2000:]
  assert "latest checkpoint (step 40)" in one.stdout and "wrote " in one.stdout
  assert os.path.isfile(os.path.join(workdir, "report.html"))
  out = str(tmp_path / "cmp")
  both = run(runs["finished"], runs["killed"], f"--workdir={out}")
  assert both.returncode == 0, both.stderr[-2000:]
  assert "learning_rate" in both.stdout and os.path.isfile(os.path.join(out, "comparison.html"))
  assert both.stdout.strip().splitlines()[-1] == (  # where it went
      f"wrote {out}/comparison.html and comparison.png (the runs' curves overlaid)")
  bad = run(str(tmp_path / "nowhere"))
  assert bad.returncode == 1 and "error: No run in" in bad.stderr
  assert "Traceback" not in bad.stderr


def test_one_run_given_as_an_argument_is_reported_and_reports_again_replace_their_images(
    runs, tmp_path):
  """`--mode=report DIR` reports DIR (it wrote a one-column comparison into ./runs/comparison),
  and a report made again replaces its TensorBoard images instead of adding a copy."""
  workdir = str(tmp_path / "run")
  shutil.copytree(runs["finished"], workdir)
  elsewhere = tmp_path / "cwd"
  elsewhere.mkdir()
  for _ in range(2):
    one = subprocess.run([sys.executable, str(REPO / "train.py"), "--mode=report", workdir],
                         cwd=elsewhere, env={**os.environ, "TFDS_DATA_DIR": real_data_dir()},
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    assert f"wrote {workdir}/report.html and learning_curves.png" in one.stdout
  assert not os.listdir(elsewhere)  # no runs/comparison
  events = [n for n in os.listdir(os.path.join(workdir, "tensorboard")) if n.endswith(".report")]
  assert len(events) == 1, events
  assert _image_events(workdir) == {f"report/{n}": [40] for n in figures.FIGURES}


def _image_events(workdir: str) -> dict[str, list[int]]:
  """{tag: the steps of every image event of it} in the workdir's TensorBoard files."""
  from tensorboardX.proto import event_pb2
  found: dict[str, list[int]] = {}
  directory = os.path.join(workdir, "tensorboard")
  for name in sorted(os.listdir(directory)):
    buf = open(os.path.join(directory, name), "rb").read()
    at = 0
    while at + 12 <= len(buf):
      (n,) = struct.unpack("<Q", buf[at:at + 8])
      event = event_pb2.Event.FromString(buf[at + 12:at + 12 + n])
      at += 12 + n + 4
      for value in event.summary.value:
        if value.HasField("image"):
          found.setdefault(value.tag, []).append(event.step)
  return found


def _records(steps: list[tuple[int, float]], epochs: list[tuple[int, float]]) -> dict:
  return {"steps": [{"step": s, "train/loss": 2.3 - a, "train/accuracy": a,
                     "train/learning_rate": 1e-3, "train/grad_norm": 1.5} for s, a in steps],
          "epochs": [{"step": s, "epoch": i + 1, "validation/accuracy": a, "validation/loss": 0.3,
                      "train/accuracy": a, "train/loss": 0.4} for i, (s, a) in enumerate(epochs)]}


def test_the_learning_curves_of_a_short_run_show_its_points():
  """One log step (a run shorter than log_every_steps): each series is a marker, the x ticks
  are whole steps around it, the learning-rate panel is not empty."""
  fig = figures.learning_curves_figure(_records([(23, 0.6)], [(23, 0.6)]), "short")
  loss, acc, lr = fig.axes[:3]
  for ax in (loss, acc, lr):
    per_step = ax.lines[0]
    assert list(per_step.get_xdata()) == [23] and per_step.get_marker() == "o"
  assert list(lr.lines[0].get_ydata()) == [1e-3]
  ticks = [t for t in lr.get_xticks() if lr.get_xlim()[0] <= t <= lr.get_xlim()[1]]
  assert ticks and all(float(t).is_integer() for t in ticks), ticks
  assert lr.get_xlim()[0] <= 22 and lr.get_xlim()[1] >= 24
  assert not acc.texts
  lower = figures.learning_curves_figure(_records([(23, 0.4)], [(23, 0.6)]), "short").axes[1]
  assert [t.get_text() for t in lower.texts] == ["1 log step below the axis (lowest 40.0%)"]


def test_the_accuracy_panel_says_when_early_log_steps_fall_below_it():
  steps = [(s, min(0.99, 0.1 * s)) for s in range(1, 41)]
  fig = figures.learning_curves_figure(_records(steps, [(20, 0.97), (40, 0.98)]), "long")
  loss, acc, lr = fig.axes[:3]
  assert acc.get_ylim()[0] > 90
  notes = [t.get_text() for t in acc.texts]
  assert notes == ["9 log steps below the axis (lowest 10.0%)"], notes
  assert loss.lines[0].get_marker() in ("None", None, "")  # 40 points: a plain line


def _chromium() -> str | None:
  return next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))),
              None)


def _screenshot(browser: str, page: str, out: str, size=(1280, 3600)) -> np.ndarray:
  subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                  f"--user-data-dir={out}.profile", f"--window-size={size[0]},{size[1]}",
                  f"--screenshot={out}", f"file://{page}"],
                 check=True, capture_output=True, timeout=120)
  with Image.open(out) as image:
    assert image.size == size
    return np.asarray(image.convert("RGB")).astype(int)


@pytest.mark.skipif(_chromium() is None, reason="no chromium to render report.html in (Debian: "
                    "apt-get install chromium)")
def test_report_html_renders_in_a_browser(runs, tmp_path):
  """Headless Chromium loads report.html from the file and shows its figures: the coloured
  pixels (curves, heatmap, bars) are there with the images, and absent with them blanked."""
  page = runs["result"]["files"]["report"]
  shot = _screenshot(_chromium(), page, str(tmp_path / "with.png"))
  blank = tmp_path / "blank.html"
  blank.write_text(re.sub(r'src="data:image/png;base64,[^"]+"', 'src=""',
                          open(page, encoding="utf-8").read()), encoding="utf-8")
  without = _screenshot(_chromium(), str(blank), str(tmp_path / "without.png"))
  coloured = lambda rgb: (rgb.max(-1) - rgb.min(-1) > 60).mean()
  non_white = lambda rgb: (rgb.min(-1) < 200).mean()
  assert coloured(shot) > 0.01 and coloured(without) < 0.001, (coloured(shot), coloured(without))
  assert non_white(shot) > non_white(without) + 0.05
  # The figures run down the page, from the curves under the tables to the mistakes' grid of
  # digits (black squares) at the bottom.
  rows = np.flatnonzero((shot.max(-1) - shot.min(-1) > 60).sum(1) >= 3)
  assert rows.max() - rows.min() > 2000, (rows.min(), rows.max())
  dark = lambda rgb: (rgb.max(-1) < 40).mean()
  assert dark(shot) > dark(without) + 0.03, (dark(shot), dark(without))


def test_the_reports_test_line_says_how_many_examples_and_why():
  """A run tested on max_eval_examples=500 reports on those 500; --mode=evaluate on the whole
  split: the lines say so, so that the two figures are not taken for one."""
  result = {"model": "mlp", "dataset": "mnist", "checkpoint": "best", "step": 8,
            "status": "finished: 1 of 1 epochs", "files": {}, "mistakes": [], "wrong": 95,
            "seconds": {"total": 1.0}, "max_eval_examples": 500,
            "test": {"accuracy": 0.81, "macro_f1": 0.8, "count": 500}}
  line = report.format_result(result).splitlines()[1]
  assert line.startswith("test (500 examples, the run's max_eval_examples: --mode=evaluate scores "
                         "the whole split): accuracy 81.00%")
  result.update(max_eval_examples=0, test={**result["test"], "count": 10_000})
  assert report.format_result(result).splitlines()[1].startswith("test (10,000 examples): ")
