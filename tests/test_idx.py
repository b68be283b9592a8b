"""MNIST as its four IDX files: read from a folder, downloaded from a local HTTP server of
the real files (no test reaches outside the machine), each way a download can fail, the order
of the sources, and the same 70,000 examples as the tfds path."""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import http.server
import os
import pathlib
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest

from training import DataNotFoundError, data
from training.data import download, idx

from conftest import REPO, needs_tfds_mnist, real_idx_dir, unused_url



@functools.cache  # found once: a test that moves HOME away must still find them
def mnist_files() -> pathlib.Path:
  """The original IDX files of MNIST, where the tests find them (conftest.real_idx_dir)."""
  return pathlib.Path(real_idx_dir())


class _Handler(http.server.SimpleHTTPRequestHandler):
  """Serves a folder, counting requests; a file named in `cut` is sent short of its declared
  length, as a server that closes the connection mid-file does."""
  cut: dict[str, int] = {}
  requests: list[str] = []

  def do_GET(self):
    self.requests.append(self.path)
    name = self.path.lstrip("/")
    if name not in self.cut:
      return super().do_GET()
    body = (mnist_files() / name).read_bytes()
    self.send_response(200)
    self.send_header("Content-Length", str(len(body)))
    self.end_headers()
    self.wfile.write(body[:self.cut[name]])  # then the connection closes (HTTP/1.0)

  def log_message(self, *args):
    pass


@contextlib.contextmanager
def serving(directory, cut: dict[str, int] | None = None):
  """An HTTP server on 127.0.0.1 (a free port) of `directory`, in a thread: (its URL, the
  paths requested)."""
  handler = type("Handler", (_Handler,), {"cut": cut or {}, "requests": []})
  server = http.server.ThreadingHTTPServer(
      ("127.0.0.1", 0), functools.partial(handler, directory=str(directory)))
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  try:
    yield f"http://127.0.0.1:{server.server_address[1]}/", handler.requests
  finally:
    server.shutdown()
    server.server_close()


def _mirror(tmp_path, replace: dict[str, bytes] | None = None, drop: str | None = None):
  """A folder to serve: copies of the original files (a server does not follow links out of its
  folder), some replaced by other bytes, or missing."""
  served = tmp_path / "served"
  served.mkdir()
  for name in idx.gz_names():
    if name == drop:
      continue
    if replace and name in replace:
      (served / name).write_bytes(replace[name])
    else:
      shutil.copy(mnist_files() / name, served / name)
  return served


def _files_under(path) -> list[str]:
  return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())


def test_a_download_is_verified_and_then_read_offline(tmp_path, capsys):
  dest = tmp_path / "data"
  with serving(mnist_files()) as (url, requests):
    ds = data.load("mnist", data_dir=str(dest), data_url=url, cache_dir="none")
    assert sorted(requests) == sorted(f"/{n}" for n in idx.gz_names())
    # Once there, the files are read, not fetched again.
    again = data.load("mnist", data_dir=str(dest), data_url=url, cache_dir="none")
    assert len(requests) == 4
  assert _files_under(dest) == sorted(f"mnist/{n}" for n in idx.gz_names())
  umask = os.umask(0)
  os.umask(umask)
  assert {(p.stat().st_mode & 0o777) for p in (dest / "mnist").iterdir()} == {0o666 & ~umask}
  out = capsys.readouterr().out.splitlines()
  assert out.count(f"Downloading mnist's IDX files into {dest / 'mnist'}") == 1
  lines = [l for l in out if l.startswith("Downloaded")]  # one per file, with its size
  assert lines[:2] == [f"Downloaded {url}train-images-idx3-ubyte.gz (9.2 MiB, checksum verified)",
                       f"Downloaded {url}train-labels-idx1-ubyte.gz (28.2 KiB, checksum verified)"]
  assert len(lines) == 4
  assert (len(ds.train), len(ds.validation), len(ds.test)) == (54_000, 6_000, 10_000)
  np.testing.assert_array_equal(again.train.images, ds.train.images)
  # The files' order is kept: the test split is the t10k file, example for example.
  with gzip.open(mnist_files() / "t10k-labels-idx1-ubyte.gz") as f:
    np.testing.assert_array_equal(ds.test.labels, np.frombuffer(f.read()[8:], np.uint8))
  np.testing.assert_array_equal(ds.test.indices, np.arange(10_000))
  assert "original files' order" in ds.order and ds.class_names == [str(i) for i in range(10)]


def _cut(name: str) -> bytes:
  return (mnist_files() / name).read_bytes()[:3000]


@pytest.mark.parametrize("case, reason", [
    ("truncated", "t10k-labels-idx1-ubyte.gz failed the checksum: it is truncated or damaged"),
    ("wrong file", "failed the checksum: its SHA-256 is 3552534a"),
    ("404", "t10k-labels-idx1-ubyte.gz: HTTP 404 File not found"),
    ("closed mid-file", "t10k-labels-idx1-ubyte.gz: the connection closed after 2,000 of 4,542 "
                        "bytes"),
    ("no server", "t10k-labels-idx1-ubyte.gz: Connection refused"),
])
def test_a_failed_download_is_one_line_and_leaves_nothing_behind(case, reason, tmp_path):
  """The last file fails, after three were fetched and verified: none is kept."""
  last = "t10k-labels-idx1-ubyte.gz"
  replace = {"truncated": {last: _cut(last)},  # a valid start, cut short
              "wrong file": {last: (mnist_files() / "train-labels-idx1-ubyte.gz").read_bytes()}}
  served = _mirror(tmp_path, replace=replace.get(case), drop=last if case == "404" else None)
  dest = tmp_path / "data"
  with serving(served, cut={last: 2000} if case == "closed mid-file" else None) as (url, _):
    if case == "no server":
      # The first three files come from the server; the last one's mirror is down.
      download.fetch("mnist", str(dest / "mnist"), url)
      (dest / "mnist" / last).unlink()
      url = unused_url()
    with pytest.raises(DataNotFoundError) as e:
      data.load("mnist", data_dir=str(dest), data_url=url, cache_dir="none")
  msg = str(e.value)
  assert isinstance(e.value, download.DownloadError) and "\n" not in msg
  assert msg.startswith(f"Could not download mnist's {last}: ") and reason in msg, msg
  assert ("checksum" in msg) == (case in ("truncated", "wrong file"))
  assert f"by hand into {dest / 'mnist'}" in msg and "--config.data_dir" in msg
  if case == "no server":  # the verified files of an earlier download stay
    assert _files_under(dest) == sorted(f"mnist/{n}" for n in idx.gz_names() if n != last)
  else:
    assert not dest.exists()


def test_an_interrupted_download_leaves_nothing(tmp_path, monkeypatch):
  real_stream = download._stream

  def interrupted(url, out, dest):
    if url.endswith("t10k-images-idx3-ubyte.gz"):
      out.write(b"\x1f\x8b partial")
      raise KeyboardInterrupt  # Ctrl-C in the middle of the third file
    return real_stream(url, out, dest)

  monkeypatch.setattr(download, "_stream", interrupted)
  dest = tmp_path / "data" / "mnist"
  with serving(mnist_files()) as (url, _), pytest.raises(KeyboardInterrupt):
    download.fetch("mnist", str(dest), url)
  assert not (tmp_path / "data").exists()


def test_a_data_dir_that_cannot_be_written_is_one_clear_error(tmp_path):
  (tmp_path / "a_file").write_text("")  # a file, where a folder is needed (even root fails)
  with pytest.raises(download.DataDirError, match=r"Cannot write the download into .*a_file/"
                                                  r"mnist: Not a directory. Set --config.data_dir"):
    data.load("mnist", data_dir=str(tmp_path / "a_file"), data_url=unused_url(),
              cache_dir="none")


def test_files_in_the_folder_itself_gzipped_or_not_and_damaged_ones(tmp_path):
  # gzipped in the folder itself (../shared/mnist) and plain in a copy's <dataset>/ folder: the
  # same arrays, the second through the cache, keyed by the files' content.
  gz = data.load("mnist", data_dir=str(mnist_files()), cache_dir="none")
  plain = tmp_path / "plain" / "mnist"
  plain.mkdir(parents=True)
  for name in idx.FILES.values():
    with gzip.open(mnist_files() / f"{name}.gz") as f:
      (plain / name).write_bytes(f.read())
  cache = tmp_path / "cache"
  for _ in range(2):
    ds = data.load("mnist", data_dir=str(tmp_path / "plain"), cache_dir=str(cache))
    np.testing.assert_array_equal(ds.train.images, gz.train.images)
    np.testing.assert_array_equal(ds.test.labels, gz.test.labels)
  assert [p.name for p in cache.iterdir()] == ["idx-mnist.npz"]
  # A damaged file is named, with the checksum, and left where it is; the cache does not hide it.
  damaged = plain / "t10k-labels-idx1-ubyte"
  damaged.write_bytes(damaged.read_bytes()[:-1] + b"\x07")
  with pytest.raises(idx.ChecksumError, match=rf"{damaged} failed the checksum"):
    data.load("mnist", data_dir=str(tmp_path / "plain"), cache_dir=str(cache))
  assert damaged.exists()


def test_the_sources_in_their_order(tmp_path, monkeypatch, data_cache):
  tfds_dir = needs_tfds_mnist()
  # Prepared tfds data first: TFDS_DATA_DIR, or a data_dir that holds it.
  monkeypatch.setenv("TFDS_DATA_DIR", tfds_dir)
  assert data.load("mnist", cache_dir=data_cache).order.startswith("tfds's order of mnist/3.0.1")
  assert "tfds" in data.load("mnist", data_dir=tfds_dir, cache_dir=data_cache).order
  # Else the IDX files in the data directory.
  assert "original files" in data.load("mnist", data_dir=str(mnist_files()), cache_dir="none").order
  # Else a download into the default folder, ~/.cache/mnist_flax/data/mnist/.
  monkeypatch.delenv("TFDS_DATA_DIR")
  monkeypatch.setenv("HOME", str(tmp_path))
  with serving(mnist_files()) as (url, _):
    assert "original" in data.load("mnist", data_url=url, cache_dir="none").order
  assert _files_under(tmp_path) == sorted(f".cache/mnist_flax/data/mnist/{n}"
                                          for n in idx.gz_names())


def _by_content(images: np.ndarray, labels: np.ndarray) -> list[tuple[bytes, int]]:
  """The examples as a sorted list of (digest of the image's bytes, label): order-free."""
  return sorted((hashlib.sha1(image.tobytes()).digest(), int(label))
                for image, label in zip(images, labels))


def test_the_idx_and_tfds_paths_give_the_same_70000_examples(data_cache):
  from_idx = data.load("mnist", data_dir=str(mnist_files()), cache_dir="none",
                       validation_fraction=0.0)
  from_tfds = data.load("mnist", data_dir=needs_tfds_mnist(), cache_dir=data_cache,
                        validation_fraction=0.0)
  assert len(from_idx.train) + len(from_idx.test) == 70_000
  for split in ("train", "test"):
    a, b = getattr(from_idx, split), getattr(from_tfds, split)
    assert _by_content(a.images, a.labels) == _by_content(b.images, b.labels)
    assert not np.array_equal(a.labels, b.labels)  # the same examples, in another order
  for field in ("class_names", "num_classes", "image_shape"):
    assert getattr(from_idx, field) == getattr(from_tfds, field)


@pytest.mark.parametrize("name", ["fashion_mnist", "kmnist"])
def test_the_table_has_tfds_class_names(name):
  import tensorflow_datasets as tfds
  label = tfds.builder(name).info.features["label"]
  assert list(idx.DATASETS[name].class_names) == label.names


def _train(tmp_path, *args):
  env = {k: v for k, v in os.environ.items() if k != "TFDS_DATA_DIR"}
  return subprocess.run(
      [sys.executable, "train.py", "--config=configs/mlp.py", f"--workdir={tmp_path / 'w'}",
       f"--config.data_dir={tmp_path / 'data'}", "--config.num_epochs=1",
       f"--config.cache_dir={tmp_path / 'cache'}", "--config.progress_bar=False",
       "--config.report=False", *args],
      cwd=REPO, env={**env, "PYTHONUNBUFFERED": "1"}, capture_output=True, text=True,
      timeout=600)


@pytest.mark.slow
def test_a_run_from_a_download_and_a_refused_corrupt_file(tmp_path):
  """The issue's check, without tfds data: one epoch of the MLP from downloaded files reaches
  96%; a corrupted served file is one error line with the checksum, and leaves nothing."""
  served = _mirror(tmp_path, replace={"train-labels-idx1-ubyte.gz": _cut(
      "train-labels-idx1-ubyte.gz")[:-100] + bytes(100)})
  with serving(served) as (url, _):
    bad = _train(tmp_path, f"--config.data_url={url}")
  assert bad.returncode == 1 and bad.stderr.startswith("error: Could not download mnist's "
                                                       "train-labels-idx1-ubyte.gz")
  assert "checksum" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
  assert not (tmp_path / "data").exists() and not (tmp_path / "w").exists()
  with serving(mnist_files()) as (url, _):
    run = _train(tmp_path, f"--config.data_url={url}")
  assert run.returncode == 0, run.stderr[-3000:]
  assert run.stdout.count("checksum verified") == 4
  accuracy = float(run.stdout.split("done in ")[1].split("test accuracy ")[1].split("%")[0])
  assert accuracy >= 96.0, run.stdout
