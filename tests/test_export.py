"""--mode=export (training/modes/export.py): the jax.export and ONNX models of every architecture against
the in-process model on real MNIST, the command and its errors, and the examples that use them.

The ONNX half needs jax2onnx and onnxruntime, which cannot share the main venv (jax2onnx 0.17
requires orbax-checkpoint < 0.11.37): `.ci/export-venv` runs this file in a venv of its own.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax import export as jax_export  # jax 0.7.1 has no jax.export until it is imported
from PIL import Image

import configs
import nets
from training import ConfigError
from training.store import checkpoint
from training import data
from training.modes import export, export_meta, onnx_convert, triton
from training.compute import optim
from training import train_and_evaluate
from training.modes import predict
from training.data import images
from training.tasks.classify import state as state_lib
from training.tasks.classify import steps
from training.tasks import restore

from conftest import REPO, load_config, real_data_dir, shrink

HAVE_ONNX = onnx_convert.onnx_available()
needs_onnx = pytest.mark.skipif(not HAVE_ONNX, reason=(
    "jax2onnx/onnxruntime not installed here; .ci/export-venv runs these tests in a venv of their "
    "own (jax2onnx 0.17 requires orbax-checkpoint<0.11.37)"))
N_IMAGES = 1000


def _config(name: str) -> tuple[str, ml_collections.ConfigDict]:
  """The runnable config of architecture `name` (the config of that name first: resnet.py, not
  large.py), else the CNN's with the model's own defaults."""
  for config_name in sorted(configs.names(), key=lambda n: n != name):
    if load_config(config_name).model.name == name:
      return config_name, load_config(config_name)
  config = load_config("cnn")
  config.model = ml_collections.ConfigDict({"name": name})
  return "cnn", config


# Every registered architecture with its config's settings; configs/best.py for the CNN with
# batch norm and a moving average of the weights.
CASES = {name: _config(name) for name in nets.names()}
CASES["cnn (configs/best.py)"] = ("best", load_config("best"))


@pytest.fixture(scope="module")
def mnist(data_cache):
  return data.load("mnist", data_dir=real_data_dir(), cache_dir=data_cache)


def _initialized_workdir(workdir: str, config: ml_collections.ConfigDict,
                         info: dict) -> state_lib.TrainState:
  """A model with random weights saved through the training's checkpoints, as step 7.

  The state has the structure that training makes (create_train_state, traced abstractly: no
  compilation) and random values: weights scaled by their fan-in, batch-norm statistics away
  from 0 and 1, a moving average unlike the live weights, so that using the wrong ones shows."""
  fields = {k: v for k, v in config.model.items() if k != "name"}
  model = nets.create(config.model.name, num_classes=info["num_classes"], **fields)
  tx = optim.make_optimizer(config, optim.make_schedule(config, steps_per_epoch=1))
  key = jax.random.PRNGKey(0)
  abstract = jax.eval_shape(lambda: state_lib.create_train_state(
      model, tx, tuple(info["image_shape"]), key, key, ema=config.ema_decay > 0))
  rng = np.random.default_rng(0)

  def fill(path, leaf):
    name = str(getattr(path[-1], "key", getattr(path[-1], "name", path[-1])))
    if not np.issubdtype(leaf.dtype, np.floating):
      return np.zeros(leaf.shape, leaf.dtype)  # step, counts, the RNG key
    if name == "var":
      values = rng.uniform(0.5, 2.0, leaf.shape)
    elif name == "scale":
      values = 1 + rng.normal(0, 0.1, leaf.shape)
    else:
      values = rng.normal(0, 1 / np.sqrt(np.prod(leaf.shape[:-1])) if leaf.ndim > 1 else 0.1,
                          leaf.shape)
    return values.astype(leaf.dtype)
  state = jax.tree_util.tree_map_with_path(fill, abstract).replace(step=np.int32(7))
  ckpt = checkpoint.Checkpointer(workdir, config, info)
  ckpt.save(state, {checkpoint.BEST_METRIC: 0.5})
  ckpt.wait()
  ckpt.close()
  return state


@pytest.fixture(scope="module", params=list(CASES))
def exported(request, tmp_path_factory, mnist):
  """(case, workdir, model.json, the in-process model's probabilities of the first test images)."""
  _, config = CASES[request.param]
  workdir = str(tmp_path_factory.mktemp("export"))
  state = _initialized_workdir(workdir, config, mnist.info())
  meta = export.export(workdir)
  # What --mode=evaluate and --mode=predict use (the moving average, if kept); and the live
  # weights, which must give other probabilities when they are not those.
  both = jax.jit(lambda s, x: [jax.nn.softmax(s.apply_fn(v, steps.preprocess(x), train=False))
                               for v in (s.eval_variables(), s.variables())])
  expected, live = map(np.asarray, both(state, mnist.test.images[:N_IMAGES]))
  assert np.abs(live - expected).max() > 1e-3 if state.ema else np.array_equal(live, expected)
  return request.param, workdir, meta, expected


def _in_batches(run, images: np.ndarray, batch_size: int) -> np.ndarray:
  return np.concatenate([run(images[i:i + batch_size])
                         for i in range(0, len(images), batch_size)])


def _assert_same(got: np.ndarray, expected: np.ndarray) -> None:
  """Probabilities within 1e-5, and the same labels wherever the top two are not a tie to that
  precision (an initialized model is unsure: its top two can be 1e-7 apart)."""
  np.testing.assert_allclose(got, expected, rtol=0, atol=export.TOLERANCE)
  top2 = np.sort(expected, axis=-1)[:, -2:]
  clear = top2[:, 1] - top2[:, 0] > 2 * export.TOLERANCE
  assert clear.mean() > 0.97
  np.testing.assert_array_equal(got.argmax(-1)[clear], expected.argmax(-1)[clear])


def test_jax_export_artifact_matches_the_trained_model(exported, mnist):
  case, workdir, meta, expected = exported
  with open(os.path.join(workdir, "export", "model.jax"), "rb") as f:
    model = jax_export.deserialize(bytearray(f.read()))
  assert str(model.in_avals[0]) == "uint8[batch,28,28,1]", model.in_avals
  assert set(model.platforms) == {"cpu", "cuda", "rocm", "tpu"}
  call = jax.jit(model.call)
  images = mnist.test.images[:N_IMAGES]
  for batch_size in (1, 37):  # 37: 27 full batches and one of 1
    _assert_same(_in_batches(lambda x: np.asarray(call(x)), images, batch_size), expected)
  assert meta["source"]["weights"] == ("ema" if CASES[case][1].ema_decay > 0 else "params")
  assert meta["max_abs_difference"]["jax"] <= export.TOLERANCE


@needs_onnx
def test_onnx_model_matches_the_trained_model(exported, mnist):
  import onnxruntime
  case, workdir, meta, expected = exported
  assert meta["files"]["onnx"] == "model.onnx" and meta["onnx_opset"] == onnx_convert.ONNX_OPSET
  session = onnxruntime.InferenceSession(os.path.join(workdir, "export", "model.onnx"),
                                         providers=["CPUExecutionProvider"])
  (inp,), (out,) = session.get_inputs(), session.get_outputs()
  assert (inp.name, inp.type, inp.shape[1:]) == ("images", "tensor(uint8)", [28, 28, 1])
  assert isinstance(inp.shape[0], str) and out.name == "probabilities"  # a symbolic batch size
  images = mnist.test.images[:N_IMAGES]
  for batch_size in (1, 37):
    _assert_same(_in_batches(lambda x: session.run(None, {"images": x})[0], images, batch_size),
                 expected)


@needs_onnx
def test_an_operation_onnx_cannot_express_leaves_out_onnx_alone(tmp_path, mnist):
  """Flax's LSTM cells split a random key to make their (zero) initial state: jax2onnx has no
  conversion for that, so the LSTM variant of the RNN has no ONNX model; its jax.export model
  is written, and model.json says why the ONNX one is not."""
  config = load_config("rnn")
  config.model.cell = "lstm"
  _initialized_workdir(str(tmp_path), config, mnist.info())
  with pytest.raises(export.ExportError) as e:  # ONNX alone: nothing can be written
    export.export(str(tmp_path), formats=["onnx"])
  message = str(e.value)
  assert "\n" not in message and "'random_split'" in message and "'rnn' to ONNX" in message
  assert "recurrent.py" in message  # where: flax's initialize_carry
  assert not os.path.exists(tmp_path / "export")  # nothing half-written
  meta = export.export(str(tmp_path))
  assert sorted(os.listdir(tmp_path / "export")) == ["model.jax", "model.json"]
  assert meta["files"] == {"jax": "model.jax", "onnx": None}
  assert "'random_split'" in meta["not_written"]["onnx"]


def test_a_format_that_cannot_be_made_is_left_out_and_said_so(tmp_path, mnist, monkeypatch):
  """As the export venv's LSTM (above), with a converter that fails here: the jax model and
  model.json are written, the summary says what was not and why."""
  _initialized_workdir(str(tmp_path), load_config("mlp"), mnist.info())

  def refuses(probabilities, shape, model_name):
    raise onnx_convert.UnsupportedOperationError(f"Cannot export {model_name!r} to ONNX: no 'x'.")
  monkeypatch.setattr(export, "export_onnx", refuses)
  meta = export.export(str(tmp_path))
  assert sorted(os.listdir(tmp_path / "export")) == ["model.jax", "model.json"]
  saved = json.load(open(tmp_path / "export" / "model.json"))
  assert saved["files"] == {"jax": "model.jax", "onnx": None}
  assert saved["not_written"] == {"onnx": "Cannot export 'mlp' to ONNX: no 'x'"}
  summary = export_meta.format_summary(meta)
  assert "model.onnx  not written: Cannot export 'mlp' to ONNX: no 'x'" in summary
  assert "checked: jax within" in summary and meta["unsaved"] is None
  with pytest.raises(export.ExportError, match=r"Nothing could be exported to onnx: onnx: "
                                               r"Cannot export 'mlp' to ONNX"):
    export.export(str(tmp_path), output=str(tmp_path / "onnx_only"), formats=["onnx"])
  with pytest.raises(export.ExportError, match="Unknown export format.*tflite"):
    export.export(str(tmp_path), formats=["jax", "tflite"])
  # A converter whose model disagrees with the trained one: left out as well, never written.
  original = export.export_jax
  monkeypatch.setattr(export, "export_jax", lambda p, shape: original(lambda x: p(x) * 0.5, shape))
  monkeypatch.setattr(export, "export_onnx", refuses)
  with pytest.raises(export.ExportError, match=r"jax: its probabilities differ from the trained "
                                               r"model's by 0.\d+, over 1e-05 \(a converter bug\)"):
    export.export(str(tmp_path), output=str(tmp_path / "bad"))
  assert not os.path.exists(tmp_path / "bad")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_cache, mnist):
  """A real MLP run (100 steps, with a moving average of the weights) and its export."""
  workdir = str(tmp_path_factory.mktemp("mlp_run"))
  config = shrink(load_config("mlp"), num_epochs=1, max_train_examples=12800, batch_size=128,
                  max_eval_examples=0, eval_batch_size=1000, ema_decay=0.9, log_every_steps=50,
                  data_dir=real_data_dir(), cache_dir=data_cache)
  _, summary = train_and_evaluate(config, workdir)
  return workdir, summary, export.export(workdir)


def test_model_json_describes_the_input_and_the_source(trained):
  workdir, summary, meta = trained
  with open(os.path.join(workdir, "export", "model.json")) as f:
    saved = json.load(f)
  assert saved == {k: v for k, v in meta.items() if k not in ("directory", "sizes", "unsaved")}
  assert saved["input"]["shape"] == [None, 28, 28, 1] and saved["input"]["dtype"] == "uint8"
  assert saved["output"]["shape"] == [None, 10] and saved["class_names"] == list("0123456789")
  assert saved["background"] == "light_on_dark" and saved["fit"] == "digit"
  assert saved["source"] == {"workdir": os.path.abspath(workdir), "checkpoint": "best",
                             "step": 100, "weights": "ema"}
  assert saved["test_accuracy"] == summary["test"]["accuracy"] > 0.85
  assert saved["files"]["onnx"] == ("model.onnx" if HAVE_ONNX else None)
  assert ("onnx" in saved.get("not_written", {})) == (not HAVE_ONNX)


def test_bad_inputs_fail_with_one_clear_line(trained, tmp_path):
  workdir, _, _ = trained
  with pytest.raises(ConfigError, match="No checkpoints in"):
    export.export(str(tmp_path / "empty"))
  with pytest.raises(ConfigError, match=r"No checkpoint 'newest'.*best, latest or one of the "
                                        r"steps \[100\]"):
    export.export(workdir, "newest", output=str(tmp_path / "out"))
  with pytest.raises(export.OutputExistsError, match="already holds an export.*--overwrite"):
    export.export(workdir)
  (tmp_path / "file").write_text("")
  with pytest.raises(export.ExportError, match="is a file"):
    export.export(workdir, output=str(tmp_path / "file"))


def _run(*args: str) -> subprocess.CompletedProcess:
  env = {**os.environ, "TFDS_DATA_DIR": real_data_dir()}
  return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=300)


def test_export_command(trained, tmp_path):
  workdir, _, _ = trained
  refused = _run("train.py", "--mode=export", f"--workdir={workdir}")
  assert refused.returncode == 1
  assert refused.stderr.strip().splitlines()[-1].startswith(
      f"error: {os.path.abspath(workdir)}/export already holds an export")
  done = _run("train.py", "--mode=export", f"--workdir={workdir}", "--checkpoint=latest",
              f"--output={tmp_path / 'out'}", "--overwrite")
  assert done.returncode == 0, done.stderr[-3000:]
  assert "mlp from the latest checkpoint (step 100, EMA weights, test accuracy" in done.stdout
  assert ("model.onnx" in done.stdout) and "checked: jax within" in done.stdout
  assert sorted(os.listdir(tmp_path / "out")) == sorted(
      ["model.jax", "model.json"] + (["model.onnx"] if HAVE_ONNX else []))


def test_triton_repository_holds_the_onnx_model_its_config_names(trained, tmp_path):
  """--formats=...,triton: the ONNX model as version 1 of a Triton repository, whose
  config.pbtxt names its input and output tensors with their types and shapes (less the batch
  dimension); without the ONNX model, the repository is left out and said so."""
  workdir, _, _ = trained
  out = tmp_path / "out"
  meta = export.export(workdir, output=str(out), formats=["jax", "triton"])
  repository = out / "triton" / triton.model_name(meta)
  if not HAVE_ONNX:
    assert "ONNX model, which was not made" in meta["not_written"]["triton"]
    assert not (out / "triton").exists() and (out / "model.jax").exists()
    return
  assert (repository / "1" / "model.onnx").read_bytes() == (out / "model.onnx").read_bytes()
  import onnx
  graph = onnx.load(str(repository / "1" / "model.onnx")).graph
  config = (repository / "config.pbtxt").read_text()
  for tensor, kind in ((graph.input[0], "TYPE_UINT8"), (graph.output[0], "TYPE_FP32")):
    dims = ", ".join(str(d.dim_value) for d in tensor.type.tensor_type.shape.dim[1:])
    assert f'name: "{tensor.name}" data_type: {kind} dims: [ {dims} ]' in config
  assert "dynamic_batching {" in config and "a Triton model repository" in export_meta.format_summary(
      meta)


def _write_digits(mnist, tmp_path, workdir: str) -> tuple[list[str], list[str], list[int]]:
  """Test digits that the trained model gets right, as 28x28 PNGs and as 84x84 dark-on-light
  JPEGs (what a scan looks like); their true labels."""
  labels = [p["label"] for p in predict.predict(workdir, [
      _save(mnist.test.images[i], tmp_path / f"probe{i}.png") for i in range(20)])]
  right = [i for i in range(20) if labels[i] == mnist.test.labels[i]][:6]
  assert len(right) == 6
  plain = [_save(mnist.test.images[i], tmp_path / f"digit{i}.png") for i in right]
  scans = [_save(mnist.test.images[i], tmp_path / f"scan{i}.jpg", scan=True) for i in right]
  return plain, scans, [int(mnist.test.labels[i]) for i in right]


def _save(image: np.ndarray, path, scan: bool = False) -> str:
  img = Image.fromarray(image[:, :, 0])
  if scan:
    img = Image.fromarray(255 - np.asarray(img.resize((84, 84), Image.Resampling.BICUBIC)))
  img.save(path)
  return str(path)


def _labels(stdout: str) -> list[int]:
  return [int(line.split()[1]) for line in stdout.strip().splitlines()]


def test_examples_classify_image_files_as_predict_does(trained, mnist, tmp_path):
  workdir, _, _ = trained
  plain, scans, truth = _write_digits(mnist, tmp_path, workdir)
  predicted = [p["label"] for p in predict.predict(workdir, scans, invert=True)]
  export_dir = os.path.join(workdir, "export")
  examples = ["classify_jax.py"] + (["classify_onnx.py"] if HAVE_ONNX else [])
  for example in examples:
    script = os.path.join("examples", example)
    result = _run("-X", "importtime", script, export_dir, *plain)
    assert result.returncode == 0, result.stderr[-3000:]
    assert _labels(result.stdout) == truth, (example, result.stdout)
    assert all(line.startswith(f) for f, line in zip(plain, result.stdout.splitlines()))
    # Dark-on-light scans of another size: fitted and inverted as --mode=predict does them.
    inverted = _run(script, export_dir, "--invert", *scans)
    assert inverted.returncode == 0 and _labels(inverted.stdout) == predicted, inverted.stdout
    modules = {line.split("|")[-1].strip()
               for line in result.stderr.splitlines() if line.startswith("import time:")}
    imported = {m.split(".")[0] for m in modules}
    assert "numpy" in imported
    # Of this repository: images.py (loaded by path) and what it imports, training/errors.py.
    assert {m for m in modules if m.split(".")[0] == "training"} == {"training",
                                                                     "training.errors"}
    if example == "classify_onnx.py":  # onnxruntime alone: no JAX, no Flax
      assert not imported & {"jax", "jaxlib", "flax", "optax", "orbax"}, imported
    else:
      assert not imported & {"flax", "optax", "orbax", "nets"}, imported
    _bad_and_odd_files_in(script, export_dir, plain[0], tmp_path)
  if not HAVE_ONNX:
    pytest.skip("classify_onnx.py not run: no onnxruntime here (.ci/export-venv runs it)")


def _bad_and_odd_files_in(script: str, export_dir: str, digit: str, tmp_path) -> None:
  """An example goes on past files it cannot read (one `error:` line each, no traceback) and
  notes blank, tiny and light-background images as --mode=predict does."""
  (tmp_path / "text.png").write_text("not an image")
  Image.new("L", (300, 200), 12).save(tmp_path / "blank.png")
  Image.new("L", (5, 5), 0).save(tmp_path / "tiny.png")
  Image.open(digit).point(lambda v: 255 - v).save(tmp_path / "light.png")
  files = [str(tmp_path / n) for n in ("missing.png", "text.png", "blank.png", "tiny.png",
                                       "light.png")] + [digit]
  run = _run(script, export_dir, *files)
  assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr[-3000:]
  errors = run.stderr.strip().splitlines()
  assert errors[0] == f"error: {files[0]}: no such file."
  assert errors[1].startswith(f"error: {files[1]}: cannot be read as an image")
  assert errors[-1] == "error: 2 of 6 files could not be classified."
  blank, tiny, light, good = run.stdout.strip().splitlines()
  assert blank == f"{files[2]}  -  no class   (blank: no ink found)"
  assert tiny.startswith(f"{files[3]}  -  no class   (5x5 pixels: too small to hold a digit")
  assert light.endswith("(light background: dark ink on paper needs --invert)")
  assert good.startswith(digit) and "(" not in good


def _damage(export_dir, damage: str, model: str) -> None:
  """Spoils a copy of an export the way `damage` says."""
  path = export_dir / model
  if damage == "truncated model":
    path.write_bytes(path.read_bytes()[:1000])
  elif damage == "empty model":
    path.write_bytes(b"")
  elif damage == "missing model":
    path.unlink()
  elif damage == "model is a folder":
    path.unlink()
    path.mkdir()
  elif damage == "truncated model.json":
    json_path = export_dir / "model.json"
    json_path.write_text(json_path.read_text()[:200])
  elif damage == "model.json of another shape":  # the files of two exports
    meta = json.loads((export_dir / "model.json").read_text())
    meta["input"]["shape"] = [None, 32, 32, 1]
    (export_dir / "model.json").write_text(json.dumps(meta))
  elif damage == "model.json not an export's":
    (export_dir / "model.json").write_text(json.dumps({"files": ["model.jax"]}))
  else:  # "no model.json": not an export folder
    (export_dir / "model.json").unlink()


def _expected_error(damage: str, export_dir, model: str) -> str:
  """The start of the one line that an example prints for an export spoilt by `damage`."""
  reader = "onnxruntime" if model == "model.onnx" else "jax.export"
  return "error: " + {
      "truncated model": f"{export_dir}/{model} is damaged (1,000 bytes that {reader} cannot ",
      "empty model": f"{export_dir}/{model} is damaged (0 bytes that {reader} cannot ",
      "missing model": f"{export_dir}/{model} is missing",
      "model is a folder": (f"{export_dir}/model.onnx is missing (a directory)"
                            if model == "model.onnx" else f"cannot read {export_dir}/model.jax ("),
      "truncated model.json": f"{export_dir}/model.json is damaged (",
      "model.json of another shape": f"{export_dir}/{model} does not match model.json (inputs and "
                                     "outputs [(28, 28, 1), (10,)] in the model, [(32, 32, 1), "
                                     "(10,)] in model.json)",
      "model.json not an export's": f"{export_dir}/model.json is damaged (not what --mode=export "
                                    "writes)",
      "no model.json": f"cannot read {export_dir}/model.json",
  }[damage]


@pytest.mark.parametrize("damage", ["truncated model", "empty model", "missing model",
                                    "model is a folder", "truncated model.json",
                                    "model.json of another shape", "model.json not an export's",
                                    "no model.json"])
@pytest.mark.parametrize("example", ["classify_jax.py", "classify_onnx.py"])
def test_examples_refuse_a_missing_or_damaged_export_in_one_line(trained, example, damage,
                                                                 tmp_path):
  """Not a traceback: one `error:` line naming the file and what is wrong with it, and the
  command that makes the export (again); nothing in the export directory is changed."""
  if example == "classify_onnx.py" and not HAVE_ONNX:
    pytest.skip("classify_onnx.py not run: no onnxruntime here (.ci/export-venv runs it)")
  workdir, _, _ = trained
  model = "model.onnx" if example == "classify_onnx.py" else "model.jax"
  export_dir = tmp_path / "export"
  shutil.copytree(os.path.join(workdir, "export"), export_dir)
  _damage(export_dir, damage, model)
  before = {p.name: p.is_dir() or p.read_bytes() for p in export_dir.iterdir()}
  digit = _save(np.zeros((28, 28, 1), np.uint8), tmp_path / "digit.png")
  run = _run(os.path.join("examples", example), str(export_dir), digit)
  assert run.returncode == 1 and not run.stdout, (run.stdout, run.stderr[-3000:])
  lines = run.stderr.strip().splitlines()
  assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr[-3000:]
  assert {p.name: p.is_dir() or p.read_bytes() for p in export_dir.iterdir()} == before
  assert lines[0].startswith(_expected_error(damage, export_dir, model)), lines[0]
  assert lines[0].endswith("; run --mode=export first." if damage == "no model.json" else
                           f"; export it again: python train.py --mode=export --workdir=RUN "
                           f"--output={export_dir} --overwrite"), lines[0]


def test_image_files_are_read_in_batches_of_one_shape(tmp_path):
  paths = [str(tmp_path / f"{i}.png") for i in range(5)]
  for i, path in enumerate(paths):
    Image.new("L", (28, 28), 40 * i).save(path)
  batches = list(images.read_batches(paths + [str(tmp_path / "none.png")], (28, 28, 1), 4))
  assert [list(chunk) for chunk, _, _ in batches] == [paths[:4], paths[4:] + [
      str(tmp_path / "none.png")]]
  assert batches[0][2] is batches[1][2] and batches[0][2].shape == (4, 28, 28, 1)
  assert isinstance(batches[1][1][1], images.ImageError)
  assert batches[1][2][0].max() == 160  # refilled: the fifth image's pixels


def test_importing_training_images_imports_no_jax():
  code = ("import sys, training.data.images; "
          "print(sorted({m.split('.')[0] for m in sys.modules} & {'jax', 'jaxlib', 'flax'}))")
  result = _run("-c", code)
  assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr


def test_a_population_exports_its_ensemble_to_both_formats(tmp_path, mnist, data_cache):
  """Its members' probabilities averaged in one function: what --mode=predict gives, in
  model.jax and in model.onnx (whose converter has no batched convolution: the members run in
  turn), with the ensemble's test accuracy in model.json."""
  config = shrink(load_config("cnn"), population=2, data_dir=real_data_dir(), cache_dir=data_cache,
                  **{"model.features": (4, 8), "model.dense": (16,)})
  train_and_evaluate(config, str(tmp_path / "pop"))
  meta = export.export(str(tmp_path / "pop"), "latest", str(tmp_path / "export"))
  images = mnist.test.images[:64]
  restored = restore.restore(str(tmp_path / "pop"), "latest")
  expected = np.asarray(jnp.exp(steps.log_probabilities(
      restored.state, steps.preprocess(images), population=True)))
  saved = json.loads((tmp_path / "pop" / "test_metrics.json").read_text())
  assert meta["members"] == 2 and meta["test_accuracy"] == saved["ensemble"]["accuracy"]
  jax_model = jax_export.deserialize(bytearray((tmp_path / "export" / "model.jax").read_bytes()))
  np.testing.assert_allclose(jax_model.call(images), expected, atol=export.TOLERANCE)
  if HAVE_ONNX:
    import onnxruntime
    session = onnxruntime.InferenceSession(str(tmp_path / "export" / "model.onnx"))
    np.testing.assert_allclose(session.run(None, {"images": images})[0], expected,
                               atol=export.TOLERANCE)


def test_the_large_config_trains_and_exports_on_mock_data(mock_mnist, tmp_path):
  """configs/large.py, whose accuracy needs an accelerator, at its full size: a few steps, and
  the export of what they trained, checked against the in-process model."""
  train_and_evaluate(shrink(load_config("large")), str(tmp_path))
  meta = export.export(str(tmp_path), "latest", formats=("jax",))
  assert meta["model"] == "resnet" and meta["parameters"] > 4_000_000
  assert meta["max_abs_difference"]["jax"] <= export.TOLERANCE
