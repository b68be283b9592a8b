"""Fetches an IDX dataset's missing files from its mirrors (or --config.data_url) into a data
directory: urllib with a timeout, each file streamed to a hidden temporary file beside its
destination and verified (idx.verified), and all of them renamed into place only once every one
passed. Any failure, Ctrl-C included, removes what it wrote and raises one error that names the
URLs tried and the ways on; nothing half-written is ever left under a file's real name."""

from __future__ import annotations

import http.client
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request

from training.data import idx
from training.errors import ConfigError, DataNotFoundError, mib, os_reason

TIMEOUT_S = 30  # seconds a connection or a read may stall before the mirror counts as failed
CHUNK = 1 << 20
USER_AGENT = "mnist-flax (Python urllib)"


class DownloadError(DataNotFoundError):
  """The dataset's files could not be fetched (no network, an HTTP error, a cut connection, a
  checksum mismatch); the message names the URLs and what to do."""


class DataDirError(ConfigError):
  """The data directory cannot hold a download (read-only, full, not a directory)."""


def check_url(url: str) -> None:
  """--config.data_url: a base URL urllib can fetch from."""
  if urllib.parse.urlsplit(url).scheme not in ("http", "https", "file"):
    raise ConfigError(f"data_url={url!r} is not an http://, https:// or file:// URL; give the "
                      "base URL of a folder that holds the dataset's .gz files, e.g. "
                      "--config.data_url=http://127.0.0.1:8000/.")


def _base(url: str) -> str:
  return url if url.endswith("/") else url + "/"


def _reason(e: BaseException) -> str:
  """A failed fetch in a few words."""
  if isinstance(e, urllib.error.HTTPError):
    return f"HTTP {e.code} {e.reason}"
  if isinstance(e, urllib.error.URLError):
    return str(e.reason.strerror if isinstance(e.reason, OSError) and e.reason.strerror
               else e.reason)
  if isinstance(e, TimeoutError):
    return f"no answer within {TIMEOUT_S} s"
  if isinstance(e, http.client.IncompleteRead):
    return f"the connection closed {e.expected:,} bytes short of the file (a truncated download)"
  return str(e) or type(e).__name__


def _log(line: str) -> None:
  from training.console import log  # here: it imports JAX, which examples/ run without
  log(line)


def _write_error(dest: str, e: OSError) -> DataDirError:
  return DataDirError(f"Cannot write the download into {dest}: {os_reason(e)}. Set "
                      "--config.data_dir to a writable folder (the files go into its "
                      "<dataset>/ subfolder).")


def _stream(url: str, out, dest: str) -> int:
  """Copies `url` into the open file `out`; the bytes written. A body shorter than its declared
  length is a truncated download (a ConnectionError)."""
  request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
  with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
    expected = response.headers.get("Content-Length")
    size = 0
    while chunk := response.read(CHUNK):
      try:
        out.write(chunk)
      except OSError as e:
        raise _write_error(dest, e) from e
      size += len(chunk)
  if expected is not None and size != int(expected):
    raise ConnectionError(f"the connection closed after {size:,} of {int(expected):,} bytes (a "
                          "truncated download)")
  return size


def _fetch(spec: idx.IdxDataset, role: str, url: str, dest: str) -> str:
  """`url` downloaded and verified into a temporary file in `dest`; its path."""
  try:
    fd, tmp = tempfile.mkstemp(dir=dest, prefix=f".{idx.FILES[role]}.", suffix=".part")
  except OSError as e:
    raise _write_error(dest, e) from e
  try:
    with os.fdopen(fd, "wb") as out:
      size = _stream(url, out, dest)
    with open(tmp, "rb") as f:
      idx.verified(spec, role, f.read(), url, strict=True)
  except BaseException:
    os.remove(tmp)
    raise
  shown = f"{size / 2**10:.1f} KiB" if size < 2**20 else mib(size)
  _log(f"Downloaded {url} ({shown}, checksum verified)")
  return tmp


def _failure(spec: idx.IdxDataset, role: str, dest: str, tried: list[str], own_url: bool
             ) -> DownloadError:
  name = f"{idx.FILES[role]}.gz"
  way = ("point --config.data_url at another mirror" if own_url else
         "point --config.data_url=URL at a mirror that has them")
  return DownloadError(
      f"Could not download {spec.name}'s {name}: {'; '.join(tried)}. None of this download was "
      f"kept in {dest} (its files are kept once all pass). To fix it, download the four files "
      f"({', '.join(idx.gz_names())}) by hand into {dest}, or {way}, or point "
      "--config.data_dir at a folder that holds them (it works offline).")


def _fetch_any(spec: idx.IdxDataset, role: str, bases: list[str], dest: str, own_url: bool
               ) -> str:
  """The role's file from the first base URL that serves it whole and verified."""
  tried = []
  for base in bases:
    url = urllib.parse.urljoin(base, f"{idx.FILES[role]}.gz")
    try:
      return _fetch(spec, role, url, dest)
    except DataDirError:  # a ValueError: not the mirror's fault, and no other will do better
      raise
    except idx.ChecksumError as e:
      tried.append(str(e))
    except (OSError, http.client.HTTPException, ValueError) as e:  # URLError is an OSError
      tried.append(f"{url}: {_reason(e)}")
  raise _failure(spec, role, dest, tried, own_url)


def _missing_dirs(path: str) -> list[str]:
  """`path` and its parents that do not exist yet, innermost first."""
  missing, path = [], os.path.abspath(path)
  while not os.path.exists(path) and os.path.dirname(path) != path:
    missing.append(path)
    path = os.path.dirname(path)
  return missing


def fetch(name: str, dest: str, base_url: str | None = None) -> dict[str, str]:
  """Downloads the files of dataset `name` that `dest` lacks from `base_url` (else its mirrors,
  in order); {role: path} of all four. On any failure nothing new is left in `dest`."""
  spec = idx.DATASETS[name]
  bases = [_base(base_url)] if base_url else list(spec.mirrors)
  created = _missing_dirs(dest)
  try:
    os.makedirs(dest, exist_ok=True)
  except OSError as e:
    raise _write_error(dest, e) from e
  temps = {}
  try:
    if any(idx.file_path(dest, role) is None for role in idx.FILES):
      _log(f"Downloading {name}'s IDX files into {dest}")
    for role in idx.FILES:
      if idx.file_path(dest, role) is None:
        temps[role] = _fetch_any(spec, role, bases, dest, own_url=bool(base_url))
    umask = os.umask(0)
    os.umask(umask)
    for role, tmp in temps.items():
      os.chmod(tmp, 0o666 & ~umask)  # as a plain download would be, not mkstemp's owner-only
      os.replace(tmp, os.path.join(dest, f"{idx.FILES[role]}.gz"))
  except BaseException:
    for tmp in temps.values():
      if os.path.exists(tmp):
        os.remove(tmp)
    for directory in created:  # innermost first; only those this call made, and only if empty
      if os.path.isdir(directory) and not os.listdir(directory):
        os.rmdir(directory)
    raise
  return {role: idx.file_path(dest, role) for role in idx.FILES}
