"""--mode=serve (training/modes/serve/): a real server process on 127.0.0.1 answering as
--mode=predict does, its bad inputs, its batching, its drain on SIGTERM, serving an export folder
and a population; the Triton repository of --mode=export; and (slow) all 10,000 test digits
posted as PNGs giving --mode=evaluate's accuracy."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest

httpx = pytest.importorskip("httpx", reason="the test extra's httpx talks to the server")
pytest.importorskip("fastapi", reason="--mode=serve needs the serve extra: pip install -e "
                    "'.[serve]'")

from training import data, train_and_evaluate
from training.modes import evaluate, export, predict, triton
from training.modes.serve import batcher as batcher_lib
from training.modes.serve import model as model_lib

import serving
from conftest import REPO, load_config, real_data_dir, shrink

N_DIGITS = 24  # test digits compared with --mode=predict's answers


@pytest.fixture(scope="module")
def mnist(data_cache):
  return data.load("mnist", data_dir=real_data_dir(), cache_dir=data_cache)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, data_cache) -> str:
  """A shrunk MLP run on the real data: its answers are poor, but they are the model's."""
  workdir = str(tmp_path_factory.mktemp("serve_mlp"))
  train_and_evaluate(shrink(load_config("mlp"), data_dir=real_data_dir(),
                            cache_dir=data_cache), workdir)
  return workdir


@pytest.fixture(scope="module")
def server(small_run):
  with serving.serving(small_run, "--max_batch=16", "--max_pixels=1000000") as s:
    yield s


def _files(mnist, n: int = N_DIGITS, start: int = 0) -> list[tuple[str, tuple]]:
  return [("file", (f"digit{i}.png", serving.png(mnist.test.images[i]), "image/png"))
          for i in range(start, start + n)]


def _raw(request: "httpx.Request") -> bytes:
  """The bytes of an HTTP/1.1 request, to send through a socket of the test's own."""
  body = request.read()
  head = [f"{request.method} {request.url.raw_path.decode()} HTTP/1.1",
          f"Host: {request.url.host}:{request.url.port}", f"Content-Length: {len(body)}"]
  head += [f"{k}: {v}" for k, v in request.headers.items()
           if k.lower() not in ("host", "content-length", "transfer-encoding")]
  return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def _status(sock: socket.socket) -> int:
  """The status of the answer on `sock` (read to its end: the request asked to close)."""
  answer = b""
  with sock:
    while chunk := sock.recv(65536):
      answer += chunk
  return int(answer.split(b" ", 2)[1]) if answer else 0


def _png_header(width: int, height: int) -> bytes:
  """A PNG that says it is width x height pixels, with almost no pixel data behind it."""
  def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
  return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0,
                                                             0, 0))
          + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def test_predictions_are_predict_modes(server, small_run, mnist, tmp_path):
  """Files (several per request) and JSON arrays get --mode=predict's classes, probabilities
  and notes for the same images."""
  files = _files(mnist)
  paths = []
  for _, (name, content, _) in files:
    paths.append(str(tmp_path / name))
    with open(paths[-1], "wb") as f:
      f.write(content)
  expected = predict.predict(small_run, paths)
  answer = httpx.post(server.url + "predict", files=files, timeout=60)
  assert answer.status_code == 200, answer.text
  got = answer.json()["predictions"]
  pixels = {"images": mnist.test.images[:N_DIGITS, :, :, 0].tolist()}
  from_json = httpx.post(server.url + "predict", json=pixels, timeout=60).json()["predictions"]
  for e, g, j in zip(expected, got, from_json, strict=True):
    assert g["file"] == os.path.basename(e["file"])
    assert g["class_name"] == j["class_name"] == e["class_name"]
    assert g["notes"] == j["notes"] == e["warnings"]
    np.testing.assert_allclose(list(g["probabilities"].values()), e["probabilities"], atol=1e-5)
    np.testing.assert_allclose(list(j["probabilities"].values()), e["probabilities"], atol=1e-5)


def test_notes_blank_and_light_background(server):
  blank = np.zeros((28, 28), np.uint8)
  stroke = blank.copy()
  stroke[4:24, 13:15] = 255
  files = [("file", ("blank.png", serving.png(blank))),
           ("file", ("paper.png", serving.png(255 - stroke)))]
  got = httpx.post(server.url + "predict", files=files, timeout=60).json()["predictions"]
  assert got[0]["class_name"] is None and got[0]["probability"] is None
  assert "blank" in got[0]["notes"][0]
  assert got[1]["class_name"] is not None and "light background" in got[1]["notes"][0]
  inverted = httpx.post(server.url + "predict?invert=true", files=files[1:], timeout=60).json()
  assert inverted["predictions"][0]["notes"] == []


BIG = 50 * 2**20


@pytest.mark.parametrize("case, request_args, status, error", [
    ("not an image", {"files": [("file", ("a.png", b"hello, not a picture"))]}, 400,
     "a.png: cannot be read as an image"),
    ("a truncated PNG", {"files": [("file", ("cut.png", _png_header(28, 28)[:40]))]}, 400,
     "cut.png: cannot be read as an image"),
    ("20000x20000 pixels", {"files": [("file", ("huge.png", _png_header(20000, 20000)))]}, 413,
     "huge.png: too many pixels"),
    ("over --max_pixels", {"files": [("file", ("wide.png", _png_header(2000, 1000)))]}, 413,
     "2000x1000 = 2000000; the limit is 1000000"),
    ("a 50 MB body", {"files": [("file", ("big.png", b"\0" * BIG))]}, 413,
     "over the limit of 20 MB (--max_body_mb)"),
    ("a wrong content type", {"content": b"hello", "headers": {"content-type": "text/plain"}},
     415, "content type text/plain"),
    ("an empty form", {"content": b"--b\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\n"
                                  b"no file\r\n--b--\r\n",
                       "headers": {"content-type": "multipart/form-data; boundary=b"}},
     400, "the form holds no files"),
    ("a form of text", {"data": {"note": "no files"}}, 400, "the form holds no files"),
    ("an empty file", {"files": [("file", ("empty.png", b""))]}, 400, "the file is empty"),
    ("too many files", {"files": [("file", ("a.png", b"x"))] * 257}, 400,
     "Maximum number of files is 256"),
    ("a broken multipart body", {"content": b"--b\r\nno headers end here",
                                 "headers": {"content-type": "multipart/form-data; boundary=b"}},
     400, "Invalid multipart data"),
    ("no boundary", {"content": b"x", "headers": {"content-type": "multipart/form-data"}}, 400,
     "Missing boundary in multipart"),
    ("too many arrays", {"json": {"images": [[[0] * 28] * 28] * 257}}, 413,
     "257 images in one request, over the limit of 256 (--max_images)"),
    ("malformed JSON", {"content": b'{"images": [[', "headers": {"content-type":
                                                                   "application/json"}},
     400, "the body is not valid JSON"),
    ("no images list", {"json": {"pixels": []}}, 400, 'no "images" list'),
    ("a wrong array shape", {"json": {"images": [[[0] * 27] * 28]}}, 400,
     '"images" has shape [1, 28, 27]'),
    ("ragged arrays", {"json": {"images": [[0, 1], [2]]}}, 400, "not arrays of numbers"),
    ("pixels out of range", {"json": {"images": [[[300] * 28] * 28]}}, 400, "outside 0-255"),
    ("a bad query parameter", {"files": [("file", ("a.png", b"x"))], "params": {"invert": "hm"}},
     400, "bad request parameter: query.invert"),
])
def test_bad_input_is_a_4xx_json_error_and_the_next_request_is_served(
    server, mnist, case, request_args, status, error):
  answer = httpx.post(server.url + "predict", timeout=60, **request_args)
  assert answer.status_code == status, (case, answer.text)
  assert error in answer.json()["error"], case
  after = httpx.post(server.url + "predict", files=_files(mnist, 1), timeout=60)
  assert after.status_code == 200 and after.json()["predictions"][0]["class_name"]


def test_an_image_over_pils_limit_is_refused_and_the_server_prints_no_warning(server, mnist):
  """9500x9500 pixels: over PIL's limit but under twice it, where PIL warns instead of refusing.
  The client gets its 413, the server's console no library warning."""
  before = len(server.output())
  files = [("file", ("blank.png", _png_header(9500, 9500)))]
  answer = httpx.post(server.url + "predict", files=files, timeout=60)
  assert answer.status_code == 413, answer.text
  assert answer.json()["error"].startswith("blank.png: too many pixels (90250000, over PIL's limit")
  after = httpx.post(server.url + "predict", files=_files(mnist, 1), timeout=60)
  assert after.status_code == 200
  time.sleep(0.5)  # the reader thread's last lines
  printed = server.output()[before:]
  assert "Warning" not in printed and "warnings.warn" not in printed, printed


def test_health_model_page_and_docs(server, small_run):
  assert httpx.get(server.url + "health").json()["status"] == "ok"
  described = httpx.get(server.url + "model").json()
  with open(os.path.join(small_run, "test_metrics.json")) as f:
    accuracy = json.load(f)["test"]["accuracy"]
  assert described["model"] == "mlp" and described["test_accuracy"] == pytest.approx(accuracy)
  assert described["class_names"] == [str(i) for i in range(10)]
  assert described["buckets"] == [1, 2, 4, 8, 16] and described["config"]["model"]["name"] == "mlp"
  assert "/predict" in httpx.get(server.url + "openapi.json").json()["paths"]
  assert httpx.get(server.url + "docs").status_code == 200
  page = httpx.get(server.url)
  assert page.headers["content-type"].startswith("text/html")
  # Self-contained: no script, style or font fetched from elsewhere (it must work offline).
  assert not re.search(r"(src|href)=\"(https?:)?//", page.text) and "@import" not in page.text
  assert "pointerdown" in page.text and "touch-action: none" in page.text
  missing = httpx.get(server.url + "nothing")
  assert missing.status_code == 404 and missing.json() == {"error": "Not Found"}
  # /predict is answered in front of FastAPI for POST only; other methods reach FastAPI's 405.
  wrong = httpx.get(server.url + "predict")
  assert wrong.status_code == 405 and wrong.json() == {"error": "Method Not Allowed"}


def test_concurrent_requests_share_device_calls_and_sigterm_drains_them(small_run, mnist):
  """8 requests whose bodies are on their way together share device calls (a batch waits, up to
  the window, while other requests are being read); SIGTERM while they wait lets them finish,
  then the server exits 0 and takes no new connection. Each body's last byte is held back until
  all 8 are being read, so that a loaded machine cannot serialize them."""
  server = serving.start(small_run, "--batch_window_ms=1500", "--max_batch=8")
  try:
    requests = [httpx.Request("POST", server.url + "predict", files=_files(mnist, 1, i),
                              headers={"Connection": "close"}) for i in range(8)]
    host, port = server.url.split("//")[1].rstrip("/").split(":")
    sockets = [socket.create_connection((host, int(port)), timeout=60) for _ in requests]
    raw = [_raw(r) for r in requests]
    for sock, message in zip(sockets, raw):
      sock.sendall(message[:-1])
    time.sleep(1.0)  # every request's handler is reading its body
    for sock, message in zip(sockets, raw):
      sock.sendall(message[-1:])
    time.sleep(0.3)
    server.proc.send_signal(subprocess.signal.SIGTERM)
    statuses = [_status(sock) for sock in sockets]
    assert server.proc.wait(timeout=60) == 0, server.output()
  finally:
    serving.end(server)
  assert statuses == [200] * 8
  time.sleep(0.2)  # the reader thread's last lines
  stopped = re.search(r"stopped after (\d+) device calls of (\d+) images", server.output())
  assert stopped and int(stopped.group(1)) <= 4 and int(stopped.group(2)) == 8, server.output()
  with pytest.raises(httpx.ConnectError):
    httpx.get(server.url + "health")


def test_workers_share_the_port_answer_alike_and_stop_together(small_run, mnist):
  """--workers=2: two processes accept on the one port (new connections reach both), each gives
  the same answers, and SIGTERM to the first stops both with status 0."""
  server = serving.start(small_run, "--workers=2", "--max_batch=4")
  try:
    answers = {}
    for _ in range(40):  # a new connection each time: the kernel hands it to either process
      with httpx.Client() as client:
        process = client.get(server.url + "health").json()["process"]
        answers[process] = client.post(server.url + "predict", files=_files(mnist, 3),
                                       timeout=60).json()["predictions"]
    assert len(answers) == 2, f"one process took all 40 connections: {answers.keys()}"
    first, second = answers.values()
    assert [a["class_name"] for a in first] == [a["class_name"] for a in second]
    for a, b in zip(first, second):
      assert a["probabilities"] == pytest.approx(b["probabilities"], abs=1e-6)
    assert serving.stop(server) == 0, server.output()
    for process in answers:
      if process != server.proc.pid:
        with pytest.raises(ProcessLookupError):
          os.kill(process, 0)  # the other worker has ended too, not left behind
  finally:
    serving.end(server)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _answers(port: int) -> bool:
  try:
    return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
  except httpx.HTTPError:
    return False


def _group_lives(group: int, for_s: float) -> bool:
  """Whether a process of the group is still there after for_s seconds (an ended worker may take
  a moment to be reaped)."""
  deadline = time.time() + for_s
  while time.time() < deadline:
    try:
      os.killpg(group, 0)
    except ProcessLookupError:
      return False
    time.sleep(0.05)
  return True


@pytest.mark.parametrize("how", ["SIGTERM to the first process", "Ctrl-C to the process group"])
def test_a_stop_while_the_workers_start_ends_them_all(small_run, how):
  """--workers=2, stopped as soon as the worker answers, while the first process is still
  starting (before it serves): every process ends, status 0, with the stop's note and no
  traceback, and nothing listens on the port."""
  port = _free_port()
  proc = subprocess.Popen(
      [sys.executable, "train.py", "--mode=serve", f"--workdir={small_run}", f"--port={port}",
       "--workers=2", "--max_batch=4"], cwd=REPO, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True, start_new_session=True)
  try:
    deadline = time.time() + serving.START_TIMEOUT_S
    while not _answers(port):
      if proc.poll() is not None or time.time() > deadline:
        os.killpg(proc.pid, signal.SIGKILL)  # a worker may hold the pipes open
        pytest.fail("no worker answered:\n" + "".join(proc.communicate(timeout=15)))
      time.sleep(0.01)
    if how.startswith("SIGTERM"):
      proc.send_signal(signal.SIGTERM)
    else:
      os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=15)  # its end of file: no process holds the pipes
    left = _group_lives(proc.pid, for_s=5)  # a worker included; asked before the kill below
  finally:
    with contextlib.suppress(ProcessLookupError):
      os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
  assert proc.returncode == 0, (out, err)
  assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
  assert "note: stopped after 0 device calls of 0 images in the first of 2 processes." in out
  assert not left, "a process of the server's group outlived it"
  with pytest.raises(ConnectionRefusedError):
    socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_batcher_batches_splits_and_returns_each_requests_rows():
  calls = []

  def model(images: np.ndarray) -> np.ndarray:
    calls.append(len(images))
    return images.reshape(len(images), -1)[:, :2].astype(np.float64)

  async def run() -> list[np.ndarray]:
    b = batcher_lib.Batcher(model, max_batch=8, window_s=0.05)
    b.start()
    sizes = [1, 3, 2, 5, 1, 11]  # 23 images: 11 is split into 8 + 3
    requests = [np.full((n, 2, 1, 1), k, np.uint8) for k, n in enumerate(sizes)]
    got = await asyncio.gather(*(b.probabilities(r) for r in requests))
    await b.stop()
    return requests, got
  requests, got = asyncio.run(run())
  for r, g in zip(requests, got):
    np.testing.assert_array_equal(g, r.reshape(len(r), -1)[:, :2])
  assert sum(calls) == 23 and max(calls) <= 8 and len(calls) <= 4, calls


def test_buckets():
  assert model_lib.buckets(64) == [1, 2, 4, 8, 16, 32, 64]
  assert model_lib.buckets(12) == [1, 2, 4, 8, 12]
  assert model_lib.buckets(1) == [1]


def test_an_export_folder_is_served_as_its_checkpoint(small_run, mnist, tmp_path):
  out = str(tmp_path / "export")
  export.export(small_run, output=out, formats=["jax"])
  files = _files(mnist, 6)
  answers = []
  for directory in (out, small_run):
    with serving.serving(directory, "--max_batch=4") as server:
      answers.append(httpx.post(server.url + "predict", files=files, timeout=60).json())
      assert httpx.get(server.url + "model").json()["served_from"] == (
          "export" if directory == out else "checkpoint")
  for e, c in zip(*(a["predictions"] for a in answers), strict=True):
    assert e["class_name"] == c["class_name"]
    np.testing.assert_allclose(list(e["probabilities"].values()),
                               list(c["probabilities"].values()), atol=1e-5)


def test_a_population_serves_its_ensemble_or_a_member(tmp_path, data_cache, mnist):
  workdir = str(tmp_path / "population")
  train_and_evaluate(shrink(load_config("mlp"), population=2, data_dir=real_data_dir(),
                            cache_dir=data_cache), workdir)
  files, got = _files(mnist, 4), {}
  for member in (None, 0, 1):
    flags = ["--max_batch=4"] + ([f"--member={member}"] if member is not None else [])
    with serving.serving(workdir, *flags) as server:
      described = httpx.get(server.url + "model").json()
      assert described["members"] == (2 if member is None else None)
      got[member] = np.array([list(p["probabilities"].values()) for p in httpx.post(
          server.url + "predict", files=files, timeout=60).json()["predictions"]])
  np.testing.assert_allclose(got[None], (got[0] + got[1]) / 2, atol=1e-5)


def _pbtxt(text: str) -> dict:
  """Protocol buffer text format, as Triton reads config.pbtxt: {field: value}, a message
  field's value a list of messages."""
  tokens, pos = re.findall(r'"[^"]*"|[\w.-]+|[{}\[\]:,]', text), 0

  def value():
    nonlocal pos
    token, pos = tokens[pos], pos + 1
    if token == "{":
      return [message("}")]
    if token == "[":
      items = []
      while tokens[pos] != "]":
        if tokens[pos] == ",":
          pos += 1
          continue
        items.append(value())
      pos += 1
      return [x for item in items for x in (item if isinstance(item, list) else [item])]
    return token[1:-1] if token.startswith('"') else int(token) if token.isdigit() else token

  def message(end):
    nonlocal pos
    fields = {}
    while pos < len(tokens) and tokens[pos] != end:
      key, pos = tokens[pos], pos + 1
      pos += tokens[pos] == ":"
      fields[key] = value()
    pos += 1
    return fields
  return message(None)


def _command(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "train.py", "--mode=serve", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=300)


def test_start_up_errors_are_one_line(small_run, tmp_path):
  import socket
  with socket.socket() as busy:
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    taken = _command(f"--workdir={small_run}", f"--port={port}")
  assert taken.returncode == 1
  assert taken.stderr.strip().startswith(f"error: Cannot listen on 127.0.0.1:{port}")
  assert "Traceback" not in taken.stderr
  member = _command(f"--workdir={small_run}", "--port=0", "--member=1")
  assert "error: --member=1:" in member.stderr and "not a population" in member.stderr
  nothing = _command(f"--workdir={tmp_path / 'none'}", "--port=0")
  assert nothing.returncode == 1 and nothing.stderr.startswith("error: ")


BAD_FLAGS = {  # a flag's value that cannot work: the start of its error line
    "--port=99999": "--port=99999: give a port from 1 to 65535, or 0 for any free one.",
    "--port=-1": "--port=-1: give a port from 1 to 65535",
    "--max_body_mb=-1": "--max_body_mb=-1: give a finite number of megabytes above 0",
    "--max_body_mb=0": "--max_body_mb=0: give a finite number of megabytes above 0",
    "--batch_window_ms=-1": "--batch_window_ms=-1: give a finite number of milliseconds",
    "--workers=0": "--workers=0: give 1 or more processes.",
}


@pytest.mark.parametrize("flag", BAD_FLAGS)
def test_a_bad_serve_flag_is_one_line_naming_it_and_its_value(small_run, flag):
  """Refused before the model loads or the port is taken (else --port=99999 listened on 34463
  and --max_body_mb=-1 answered every request with 413)."""
  got = _command(f"--workdir={small_run}", flag)
  assert got.returncode == 1 and got.stderr.startswith(f"error: {BAD_FLAGS[flag]}"), got.stderr
  assert got.stderr.count("\n") == 1 and not got.stdout, (got.stdout, got.stderr)


def test_triton_repository_structure():
  """config.pbtxt names the ONNX model's input and output with their shapes and types, batches
  dynamically, and lists the labels in labels.txt (Triton itself cannot run here)."""
  meta = {"model": "cnn", "class_names": [str(i) for i in range(10)],
          "input": {"name": "images", "shape": [None, 28, 28, 1], "dtype": "uint8"},
          "output": {"name": "probabilities", "shape": [None, 10], "dtype": "float32"}}
  files = triton.repository(b"onnx bytes", meta, max_batch=64)
  name = triton.model_name(meta)
  assert set(files) == {f"triton/{name}/config.pbtxt", f"triton/{name}/1/model.onnx",
                        f"triton/{name}/labels.txt"}
  assert files[f"triton/{name}/1/model.onnx"] == b"onnx bytes"
  assert files[f"triton/{name}/labels.txt"].decode().split() == meta["class_names"]
  config = _pbtxt(files[f"triton/{name}/config.pbtxt"].decode())
  assert config["name"] == name and config["platform"] == "onnxruntime_onnx"
  assert config["max_batch_size"] == 64
  assert config["input"] == [{"name": "images", "data_type": "TYPE_UINT8", "dims": [28, 28, 1]}]
  assert config["output"] == [{"name": "probabilities", "data_type": "TYPE_FP32", "dims": [10],
                               "label_filename": "labels.txt"}]
  batching = config["dynamic_batching"][0]
  assert all(0 < b <= 64 for b in batching["preferred_batch_size"])
  assert batching["max_queue_delay_microseconds"] > 0


async def _classify_all(url: str, pngs: list[bytes], per_request: int) -> list[str | None]:
  """Every PNG's class, `per_request` files a request, 16 requests in flight."""
  limit = asyncio.Semaphore(16)
  async with httpx.AsyncClient(base_url=url, timeout=300) as client:
    async def post(start: int) -> list[str | None]:
      files = [("file", (f"{i}.png", pngs[i], "image/png"))
               for i in range(start, min(start + per_request, len(pngs)))]
      async with limit:
        answer = await client.post("predict", files=files)
      assert answer.status_code == 200, answer.text
      return [p["class_name"] for p in answer.json()["predictions"]]
    parts = await asyncio.gather(*(post(s) for s in range(0, len(pngs), per_request)))
  return [c for part in parts for c in part]


@pytest.mark.slow
def test_the_test_digits_posted_as_pngs_give_evaluates_accuracy(mnist_served_run, mnist):
  """All 10,000 test digits as PNG files, 50 a request and one a request, are classified with
  --mode=evaluate's accuracy (to 0.01 point)."""
  expected = evaluate.evaluate(mnist_served_run, split="test")["accuracy"]
  pngs = [serving.png(x) for x in mnist.test.images]
  labels = [str(y) for y in mnist.test.labels]
  with serving.serving(mnist_served_run) as server:
    for per_request in (50, 1):
      classes = asyncio.run(_classify_all(server.url, pngs, per_request))
      accuracy = np.mean([c == y for c, y in zip(classes, labels, strict=True)])
      assert abs(accuracy - expected) <= 1e-4, (per_request, accuracy, expected)
