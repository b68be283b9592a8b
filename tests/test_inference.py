"""Evaluate and predict from a trained workdir (real MNIST), and the image conversion."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from training import ConfigError, train_and_evaluate
from training import data
from training.data import images
from training.modes import predict
from training.modes import evaluate
from training.tasks import restore
from training.tasks.classify import steps

from conftest import REPO, load_config, real_data_dir, shrink


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_cache):
  """A short real-MNIST MLP run with 2 epochs, so best and latest checkpoints both exist."""
  workdir = str(tmp_path_factory.mktemp("mlp_run"))
  config = shrink(load_config("mlp"), num_epochs=2, max_train_examples=12800,
                  max_eval_examples=0, batch_size=128, eval_batch_size=1000,
                  log_every_steps=50, data_dir=real_data_dir(), cache_dir=data_cache)
  _, summary = train_and_evaluate(config, workdir)
  mnist = data.load("mnist", data_dir=real_data_dir(), cache_dir=data_cache)
  return workdir, summary, mnist


def test_evaluate_latest_reproduces_the_training_runs_test_metrics(trained):
  workdir, summary, _ = trained
  result = evaluate.evaluate(workdir, "latest", "test")
  assert result["count"] == 10_000 and result["checkpoint_step"] == 200
  assert result["accuracy"] == summary["test"]["accuracy"] > 0.9
  assert result["confusion_matrix"] == summary["test"]["confusion_matrix"]
  saved = json.loads(open(os.path.join(workdir, "eval_test_step200.json")).read())
  assert saved["accuracy"] == result["accuracy"]


def test_evaluate_best_and_a_step_and_the_validation_split(trained):
  workdir, summary, _ = trained
  epochs = summary["epochs"]
  best_epoch = max(range(len(epochs)), key=lambda i: (epochs[i]["validation/accuracy"], i))
  best = evaluate.evaluate(workdir, "best", "validation")
  assert best["checkpoint_step"] == 100 * (best_epoch + 1) and best["count"] == 6000
  assert best["accuracy"] == pytest.approx(epochs[best_epoch]["validation/accuracy"], abs=1e-6)
  assert evaluate.evaluate(workdir, "100", "test")["checkpoint_step"] == 100
  with pytest.raises(ConfigError, match=r"No checkpoint '7'.*steps \[100, 200\]"):
    evaluate.evaluate(workdir, "7")


def _write(array: np.ndarray, path, scale: int = 1, invert: bool = False, rgba: bool = False):
  img = Image.fromarray(array[:, :, 0])
  if scale > 1:
    img = img.resize((28 * scale, 28 * scale), Image.Resampling.BICUBIC)
  if invert:
    img = Image.fromarray(255 - np.asarray(img))
  if rgba:  # light ink whose background is transparent
    img = Image.merge("RGBA", (img, img, img, img))
  img.save(path)
  return str(path)


def test_predict_real_digits_written_as_png(trained, tmp_path):
  workdir, _, mnist = trained
  x, y = mnist.test.images[:20], mnist.test.labels[:20]
  state = restore.restore(workdir, "latest").state
  expected = np.asarray(jax.jit(lambda s, b: s.apply_fn(
      s.eval_variables(), steps.preprocess(b), train=False))(state, x)).argmax(-1)
  files = [_write(im, tmp_path / f"{i}.png") for i, im in enumerate(x)]
  exact = predict.predict(workdir, files, "latest")
  # A 28x28 PNG is the test image itself: the same prediction as the model on the array.
  assert [p["label"] for p in exact] == expected.tolist()
  assert all(abs(sum(p["probabilities"]) - 1) < 1e-5 for p in exact)
  assert all(p["probability"] == max(p["probabilities"]) for p in exact)
  # Larger, black-on-white and transparent versions go through MNIST's box-and-centre fitting.
  variants = {
      "large": ([_write(im, tmp_path / f"l{i}.png", scale=5) for i, im in enumerate(x)], False),
      "inverted": ([_write(im, tmp_path / f"v{i}.jpg", scale=3, invert=True)
                    for i, im in enumerate(x)], True),
      "transparent": ([_write(im, tmp_path / f"t{i}.png", scale=2, rgba=True)
                       for i, im in enumerate(x)], False),
  }
  for name, (paths, invert) in variants.items():
    predictions = predict.predict(workdir, paths, "latest", invert=invert)
    assert np.mean(np.asarray([p["label"] for p in predictions]) == y) >= 0.85, name
    assert not any(p["light_background"] for p in predictions), name
  # Forgetting --invert on dark-on-light files is pointed out next to the (useless) prediction.
  forgot = predict.predict(workdir, variants["inverted"][0][:2], "latest")
  assert all(p["light_background"] for p in forgot)
  assert "needs --invert" in predict.format_predictions(forgot)
  assert "needs --invert" not in predict.format_predictions(exact)


def test_fit_digit_boxes_and_centres_like_mnist(tmp_path):
  canvas = np.zeros((300, 200), np.uint8)
  canvas[20:140, 10:70] = 255  # a tall bar in a corner, 120x60
  Image.fromarray(canvas).save(tmp_path / "bar.png")
  out = images.load(str(tmp_path / "bar.png"), (28, 28, 1))[0][:, :, 0]
  rows, cols = np.nonzero(out > 128)
  assert rows.max() - rows.min() + 1 == 20 and cols.max() - cols.min() + 1 == 10
  assert abs((rows.min() + rows.max()) / 2 - 13.5) <= 1 and abs((cols.min() + cols.max()) / 2
                                                                 - 13.5) <= 1
  resized = images.load(str(tmp_path / "bar.png"), (28, 28, 1), fit="resize")[0][:, :, 0]
  assert resized[:2].max() > 0  # the whole frame, corner included


def test_deep_images_are_scaled_by_their_bit_depth(tmp_path):
  """16-bit PNGs and TIFFs (65535 white), 32-bit integer TIFFs (2**31 - 1, PIL's signed range)
  and float TIFFs ([0, 1]; other ranges by what holds them) read as their 8-bit original."""
  a = np.zeros((28, 28), np.uint8)
  a[4:24, 10:18] = np.linspace(30, 255, 20, dtype=np.uint8)[:, None]
  deep = {"16.png": a.astype(np.uint16) * 257, "16.tif": a.astype(np.uint16) * 257,
          "32.tif": (a.astype(np.int64) * (2**31 - 1) // 255).astype(np.int32),
          "unit.tif": (a / 255).astype(np.float32), "bytes.tif": a.astype(np.float32),
          "signed.tif": (a / 127.5 - 1).astype(np.float32)}
  for name, array in deep.items():
    Image.fromarray(array).save(tmp_path / name)
    got = images.read(str(tmp_path / name), (28, 28, 1), fit="resize")
    np.testing.assert_allclose(got.array[:, :, 0], a, atol=1, err_msg=name)
    assert not got.blank, name
  # 16-bit values of an 8-bit range are dark in 16 bits: scaled by the depth, not stretched.
  Image.fromarray(a.astype(np.uint16)).save(tmp_path / "dark.png")
  assert images.read(str(tmp_path / "dark.png"), (28, 28, 1), fit="resize").array.max() <= 1


def test_predictions_go_to_a_csv_or_jsonl_file(trained, tmp_path):
  workdir, _, mnist = trained
  odd = tmp_path / "odd, names"
  odd.mkdir()
  files = [_write(mnist.test.images[0], odd / 'a digit, "seven".png'),
           str(odd / "missing file.png"), str(odd / "blank page.png")]
  Image.new("L", (50, 50), 250).save(files[2])
  for kind in ("csv", "jsonl"):
    output = tmp_path / f"predictions.{kind}"
    out, err = io.StringIO(), io.StringIO()
    failed = predict.predict_command(workdir, files, output=str(output), out=out, err=err)
    assert [f["file"] for f in failed] == [files[1]]
    assert out.getvalue().splitlines()[-1] == (
        f"3 files: 1 classified, 1 blank (no class), 1 could not be read; written to {output}")
    if kind == "csv":
      rows = list(csv.DictReader(open(output, newline="", encoding="utf-8")))
      probabilities = lambda row: [row[f"p_{c}"] for c in "0123456789"]
    else:
      rows = [json.loads(line) for line in open(output, encoding="utf-8")]
      probabilities = lambda row: list((row["probabilities"] or {}).values()) or [""] * 10
    assert [row["file"] for row in rows] == files  # commas, quotes and spaces survive
    digit, missing, blank = rows
    assert str(digit["class"]) == str(mnist.test.labels[0])
    assert abs(sum(map(float, probabilities(digit))) - 1) < 1e-4
    assert float(digit["probability"]) == max(map(float, probabilities(digit)))
    assert "no such file" in missing["error"] and not missing["class"]
    assert not blank["class"] and not blank["probability"] and "blank: no ink found" in (
        blank["notes"] if kind == "csv" else blank["notes"][0])
    assert not any(probabilities(blank)) and not os.path.exists(f"{output}.tmp")
  with pytest.raises(ConfigError, match=r"--output=.*x.txt: give a .csv or .jsonl file"):
    predict.predict_command(workdir, files, output=str(tmp_path / "x.txt"))
  with pytest.raises(ConfigError, match="Cannot write --output=.*No such file or directory"):
    predict.predict_command(str(tmp_path / "no_run"), files, output=str(tmp_path / "no" / "p.csv"))


def test_bad_prediction_inputs_fail_clearly(trained, tmp_path):
  workdir, _, _ = trained
  (tmp_path / "text.png").write_text("not an image")
  missing, text = str(tmp_path / "nope.png"), str(tmp_path / "text.png")
  assert predict.predict(workdir, [missing, text]) == [
      {"file": missing, "error": f"{missing}: no such file."},
      {"file": text, "error": f"{text}: cannot be read as an image (UnidentifiedImageError: "
                              f"cannot identify image file {text!r}); give PNG or JPEG files."}]
  with pytest.raises(ConfigError, match="Give the image files"):
    predict.predict(workdir, [])
  with pytest.raises(ConfigError, match="No checkpoints in"):
    evaluate.evaluate(str(tmp_path / "empty"))


def _bad_and_odd_files(mnist, tmp_path) -> dict[str, str]:
  """Good digits among files that cannot be used and images that hold no digit."""
  d = tmp_path / "mix"
  d.mkdir()
  files = {"good0": _write(mnist.test.images[0], d / "good0.png"),
           "missing": str(d / "missing.png"),
           "text": str(d / "text.png"),
           "truncated": str(d / "truncated.png"),
           "bomb": str(d / "bomb.png"),
           "good1": _write(mnist.test.images[1], d / "good1.png", scale=4),
           "blank": str(d / "blank.png"),
           "dot": str(d / "dot.png"),
           "folder": str(d)}
  (d / "text.png").write_text("not an image")
  whole = (d / "good1.png").read_bytes()
  (d / "truncated.png").write_bytes(whole[:len(whole) // 2])
  # Over twice PIL's limit of 89 megapixels: PIL refuses to decode it (a decompression bomb).
  Image.new("1", (14_000, 14_000)).save(d / "bomb.png")
  Image.new("L", (300, 200), 12).save(d / "blank.png")
  Image.new("L", (1, 1), 255).save(d / "dot.png")
  return files


def test_predict_goes_on_past_files_that_cannot_be_used(trained, tmp_path):
  workdir, _, mnist = trained
  files = _bad_and_odd_files(mnist, tmp_path)
  out = {name: p for name, p in zip(files, predict.predict(workdir, list(files.values()),
                                                              "latest"))}
  assert [p["file"] for p in out.values()] == list(files.values())  # in order, one each
  assert {n for n, p in out.items() if "error" in p} == {"missing", "text", "truncated", "bomb",
                                                         "folder"}
  assert out["missing"]["error"].endswith("missing.png: no such file.")
  assert "truncated.png: cannot be read as an image" in out["truncated"]["error"]
  assert "bomb.png: too large to read safely (196000000 pixels, over PIL's limit" in \
      out["bomb"]["error"]
  assert "is a directory" in out["folder"]["error"]
  assert out["good0"]["label"] == mnist.test.labels[0] and not out["good0"]["warnings"]
  assert out["good1"]["label"] == mnist.test.labels[1] and not out["good1"]["warnings"]
  # An image without ink gets no class (the model's answer would be noise, however sure), and
  # says why; the raw probabilities stay in the entry.
  assert out["blank"]["warnings"] == ["blank: no ink found"]
  assert out["dot"]["warnings"] == ["1x1 pixels: too small to hold a digit",
                                    "blank: no ink found"]
  for name in ("blank", "dot"):
    assert out[name]["blank"] and out[name]["label"] is None and out[name]["probability"] is None
    assert len(out[name]["probabilities"]) == 10
  assert not out["good0"]["blank"]
  line = predict.format_predictions([out["blank"]])
  assert line.endswith("-  no class   (blank: no ink found)") and "p=" not in line


def test_predict_command_prints_the_good_and_reports_the_bad(trained, tmp_path):
  workdir, _, mnist = trained
  files = _bad_and_odd_files(mnist, tmp_path)
  run = subprocess.run([sys.executable, "train.py", "--mode=predict", f"--workdir={workdir}",
                        *files.values()], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert run.returncode == 1
  *lines, summary = run.stdout.strip().splitlines()
  assert [line.split()[0] for line in lines] == [files[n] for n in ("good0", "good1", "blank",
                                                                     "dot")]
  assert "blank: no ink found" in lines[2]
  # No "(0 of them flagged: ...)" clause when none are.
  assert summary == "9 files: 2 classified, 2 blank (no class), 5 could not be read"
  errors = run.stderr.strip().splitlines()
  assert len(errors) == 6 and all(line.startswith("error: ") for line in errors), run.stderr
  assert errors[-1] == "error: 5 of 9 files could not be classified."
  assert "Traceback" not in run.stderr and "DecompressionBomb" not in run.stderr


# Reads 20,000 files in one predict command, in its own process, and reports the peak RSS of
# that process alone (RUSAGE_CHILDREN of this wrapper, which has no other child).
PEAK_RSS = """if True:
  import resource, subprocess, sys
  run = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  sys.stderr.write(run.stderr)
  lines = run.stdout.splitlines()
  print(run.returncode, len(lines), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


@pytest.mark.slow
def test_predict_memory_does_not_grow_with_the_number_of_files(trained, tmp_path):
  workdir, _, mnist = trained
  images_dir = tmp_path / "many"
  images_dir.mkdir()
  n = 20_000
  for i in range(n):
    Image.fromarray(mnist.test.images[i % 10_000][:, :, 0]).save(images_dir / f"{i:05d}.png")
  names = sorted(os.listdir(images_dir))
  run = subprocess.run([sys.executable, "-c", PEAK_RSS, sys.executable, str(REPO / "train.py"),
                        "--mode=predict", f"--workdir={workdir}", *names], cwd=images_dir,
                       capture_output=True, text=True, timeout=900)
  returncode, printed, peak_kib = map(int, run.stdout.split())
  assert returncode == 0 and printed == n + 1, run.stderr[-3000:]  # and the summary line
  assert peak_kib < 1024 * 1024, f"peak RSS {peak_kib / 1024:.0f} MiB for {n} files"


def test_checkpoint_without_its_dataset_item_fails_clearly(trained, tmp_path):
  """A checkpoint from another version (or damaged) names itself and the fix, not a KeyError."""
  workdir, _, _ = trained
  copy = tmp_path / "run"
  shutil.copytree(workdir, copy)
  for step_dir in (copy / "checkpoints").iterdir():
    if step_dir.name.isdigit():
      shutil.rmtree(step_dir / "dataset")
  with pytest.raises(ConfigError, match="has no usable 'dataset' item.*new --workdir"):
    predict.predict(str(copy), [_write(np.zeros((28, 28, 1), np.uint8), tmp_path / "x.png")])


def test_evaluate_and_predict_commands(trained, tmp_path):
  workdir, summary, mnist = trained
  env = {**os.environ, "TFDS_DATA_DIR": real_data_dir()}
  run = lambda *args: subprocess.run([sys.executable, "train.py", *args], cwd=REPO, env=env,
                                     capture_output=True, text=True, timeout=300)
  ev = run("--mode=evaluate", f"--workdir={workdir}", "--checkpoint=latest")
  assert ev.returncode == 0, ev.stderr[-2000:]
  assert (f"test: loss {summary['test']['loss']:.4f}  accuracy "
          f"{summary['test']['accuracy']:.2%}") in ev.stdout + ev.stderr
  assert "(10000 examples)" in ev.stdout + ev.stderr
  files = [_write(im, tmp_path / f"{i}.png") for i, im in enumerate(mnist.test.images[:3])]
  pr = run("--mode=predict", f"--workdir={workdir}", *files)
  assert pr.returncode == 0, pr.stderr[-2000:]
  *lines, summary = pr.stdout.strip().splitlines()
  assert len(lines) == 3 and all(f in line for f, line in zip(files, lines))
  assert summary.startswith("3 files: 3 classified")
  assert all("p=" in line and "top:" in line for line in lines)
  missing = str(tmp_path / "missing.png")
  bad = run("--mode=predict", f"--workdir={workdir}", missing)
  assert bad.returncode == 1 and bad.stderr == (f"error: {missing}: no such file.\n"
                                                "error: 1 of 1 files could not be classified.\n")


def _enlarged(array: np.ndarray, size: int, resample, fmt: str, quality: int = 0) -> io.BytesIO:
  """An MNIST digit enlarged to size x size and encoded as PNG or JPEG, as a user's file."""
  buf = io.BytesIO()
  img = Image.fromarray(array[:, :, 0]).resize((size, size), resample)
  img.save(buf, format=fmt, **({"quality": quality} if quality else {}))
  buf.seek(0)
  return buf


R = Image.Resampling


def test_fit_digit_gives_back_an_enlarged_mnist_digit(trained):
  """MNIST's recipe (the ink's box scaled to 20 pixels, anti-aliased; the centre of mass on
  pixel (14, 14)) applied to an enlarged MNIST digit gives back nearly the digit itself: within
  2.8 grey levels a pixel on average when it was enlarged by pixel repetition, 6.6-7.4 when
  smoothly (the enlargement's blur stays). The placement at (13.5, 13.5) that it replaced was 16
  grey levels off."""
  _, _, mnist = trained
  x = mnist.test.images[:200]
  for resample, fmt, quality, most in [(R.NEAREST, "PNG", 0, 3.5), (R.BILINEAR, "PNG", 0, 9.0),
                                       (R.BICUBIC, "JPEG", 75, 9.0)]:
    fitted = np.stack([images.load(_enlarged(a, 280, resample, fmt, quality), (28, 28, 1))[0]
                       for a in x])
    error = np.abs(fitted.astype(np.float32) - x).mean()  # grey levels of 255, per pixel
    assert error < most, (resample, fmt, error)


@pytest.mark.slow
def test_fit_digit_classifies_enlarged_test_digits_as_well_as_the_originals(trained):
  """2,000 test digits enlarged to 280x280 (bilinear, bicubic, nearest; PNG and JPEG) classify
  as the originals do, within 0.1 point."""
  workdir, _, mnist = trained
  n = 2000
  x, y = mnist.test.images[:n], mnist.test.labels[:n]
  state = restore.restore(workdir, "latest").state
  apply = jax.jit(lambda s, b: s.apply_fn(s.eval_variables(), steps.preprocess(b), train=False))
  accuracy = lambda arrays: float(np.mean(np.asarray(apply(state, arrays)).argmax(-1) == y))
  original = accuracy(x)
  results = {}
  for name, resample, fmt, quality in [("bilinear png", R.BILINEAR, "PNG", 0),
                                       ("bicubic jpeg 75", R.BICUBIC, "JPEG", 75),
                                       ("nearest jpeg 95", R.NEAREST, "JPEG", 95)]:
    results[name] = accuracy(np.stack([
        images.load(_enlarged(a, 280, resample, fmt, quality), (28, 28, 1))[0] for a in x]))
  print(f"originals {original:.2%}: " + ", ".join(f"{k} {v:.2%}" for k, v in results.items()))
  assert min(results.values()) >= original - 0.001, (original, results)


@pytest.mark.parametrize("orientation, turn", [(1, None), (6, Image.Transpose.ROTATE_90),
                                               (3, Image.Transpose.ROTATE_180)])
def test_a_photo_is_read_upright_by_its_exif_orientation(tmp_path, orientation, turn):
  """A phone's photo is stored turned, with an EXIF tag saying how to turn it back: read, it is
  the upright digit (and the file is left as it was)."""
  upright = np.zeros((28, 28), np.uint8)
  upright[4:24, 12:16] = 255  # a "1" ...
  upright[4:8, 8:16] = 255  # ... with a flag at its top, so that every turn is told apart
  stored = Image.fromarray(upright)
  if turn is not None:  # what the camera wrote: the digit turned, and the tag to undo it
    stored = stored.transpose(turn)
  exif = Image.Exif()
  exif[0x0112] = orientation
  path = tmp_path / "photo.png"
  stored.save(path, exif=exif)
  loaded = images.read(str(path), (28, 28, 1))
  np.testing.assert_array_equal(loaded.array[..., 0], upright)
  assert Image.open(path).getexif()[0x0112] == orientation
