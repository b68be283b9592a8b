"""MNIST, Fashion-MNIST and KMNIST as their publishers distribute them: four IDX files each
(gzipped or plain), read with numpy alone. `DATASETS` holds each one's file digests, mirrors and
class names; `locate` finds the files in a data directory, `load` verifies them (a SHA-256 of the
decompressed content, or the publisher's digest of the .gz) and returns the Dataset, keeping the
files' order: an example's index is its position in the original file. The decoded arrays go
through the cache like the other sources', keyed by the files' content. download.py fetches
missing files."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import struct
import zlib

import numpy as np

from training.console import note
from training.data import cache
from training.data.dataset import Dataset, from_arrays
from training.errors import DataCorruptError

# The four files of every dataset, by role; each may be stored as NAME.gz or NAME.
FILES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
         "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}
DEFAULT_DATA_DIR = os.path.join("~", ".cache", "mnist_flax", "data")  # + /<dataset>/
CACHE_VERSION = 1  # part of the cache key: bump when the decoding changes


class ChecksumError(DataCorruptError):
  """A file whose content is not the dataset's published content (damaged, truncated, another
  dataset's file)."""


@dataclasses.dataclass(frozen=True)
class Digest:
  gz: str  # SHA-256 of the publisher's .gz file
  raw: str | None = None  # SHA-256 of the decompressed file, where known


@dataclasses.dataclass(frozen=True)
class IdxDataset:
  name: str
  mirrors: tuple[str, ...]  # base URLs, tried in order
  digests: dict[str, Digest]  # by role (FILES)
  class_names: tuple[str, ...]
  image_shape: tuple[int, int, int] = (28, 28, 1)


# The .gz digests are the publishers' (as tensorflow-datasets lists them). The decompressed
# digests of MNIST let a re-compressed copy of the same bytes pass; the other two are not known.
DATASETS = {d.name: d for d in (
    IdxDataset("mnist", ("https://storage.googleapis.com/cvdf-datasets/mnist/",
                         "https://ossci-datasets.s3.amazonaws.com/mnist/",
                         "http://yann.lecun.com/exdb/mnist/"), {
        "train_images": Digest(
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
        "train_labels": Digest(
            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
        "test_images": Digest(
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
        "test_labels": Digest(
            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2")},
        tuple(str(i) for i in range(10))),
    IdxDataset("fashion_mnist", ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",), {
        "train_images": Digest("3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
        "train_labels": Digest("a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
        "test_images": Digest("346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
        "test_labels": Digest("67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5")},
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
         "Bag", "Ankle boot")),
    IdxDataset("kmnist", ("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",), {
        "train_images": Digest("51467d22d8cc72929e2a028a0428f2086b092bb31cfb79c69cc0a90ce135fde4"),
        "train_labels": Digest("e38f9ebcd0f3ebcdec7fc8eabdcdaef93bb0df8ea12bee65224341c8183d8e17"),
        "test_images": Digest("edd7a857845ad6bb1d0ba43fe7e794d164fe2dce499a1694695a792adfac43c5"),
        "test_labels": Digest("20bb9a0ef54c7db3efc55a92eef5582c109615df22683c380526788f98e42a1c")},
        # tfds's names and order: the romanized hiragana of each row's chosen character.
        ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")),
)}


def gz_names() -> list[str]:
  return [f"{n}.gz" for n in FILES.values()]


def candidate_dirs(name: str, data_dir: str | None) -> list[str]:
  """Where `name`'s files are looked for, in order; the first is where downloads go."""
  if data_dir:
    root = os.path.expanduser(data_dir)
    return [os.path.join(root, name), root]
  return [os.path.join(os.path.expanduser(DEFAULT_DATA_DIR), name)]


def file_path(directory: str, role: str) -> str | None:
  """The role's file in `directory`, gzipped or plain, if there is one."""
  for candidate in (f"{FILES[role]}.gz", FILES[role]):
    path = os.path.join(directory, candidate)
    if os.path.isfile(path):
      return path
  return None


def locate(dirs: list[str]) -> dict[str, str] | None:
  """{role: path} from the first of `dirs` that holds all four files, else None."""
  for directory in dirs:
    paths = {role: file_path(directory, role) for role in FILES}
    if all(paths.values()):
      return paths
  return None


def _sha256(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


def verified(spec: IdxDataset, role: str, data: bytes, where: str, strict: bool = True) -> bytes:
  """The decompressed content of a file's bytes `data` (read from `where`), checked against the
  dataset's digests. Without a known decompressed digest a re-compressed or plain file cannot be
  checked: refused when `strict`, else used with a warning. Raises ChecksumError."""
  digest, name = spec.digests[role], f"{FILES[role]}.gz"
  compressed = data[:2] == b"\x1f\x8b"
  if compressed and _sha256(data) == digest.gz:
    return gzip.decompress(data)
  try:
    raw = gzip.decompress(data) if compressed else data
  except (EOFError, OSError, zlib.error) as e:  # cut short, or not gzip past its first bytes
    raise ChecksumError(f"{where} failed the checksum: it is truncated or damaged ({e})") from e
  if digest.raw is not None and _sha256(raw) == digest.raw:
    return raw
  if digest.raw is None and not strict:
    note(f"{where} is not the published {name} file of {spec.name}, so its checksum cannot be "
         "checked (only that of the .gz is known); it is used as it is.")
    return raw
  raise ChecksumError(f"{where} failed the checksum: its SHA-256 is {_sha256(data)}, while "
                      f"{spec.name}'s {name} has {digest.gz}"
                      + (f" (decompressed: {digest.raw})" if digest.raw else "")
                      + "; it is damaged, truncated or another dataset's file")


def parse(raw: bytes, where: str) -> np.ndarray:
  """An IDX file's array of unsigned bytes (the only type these datasets use)."""
  if len(raw) < 4 or raw[:3] != b"\x00\x00\x08":
    raise DataCorruptError(f"{where} is not an IDX file of unsigned bytes (its header is "
                           f"{raw[:4].hex() or 'empty'}).")
  ndim = raw[3]
  offset = 4 + 4 * ndim
  dims = struct.unpack(f">{ndim}I", raw[4:offset]) if len(raw) >= offset else ()
  if len(dims) != ndim or len(raw) != offset + int(np.prod(dims, dtype=np.int64)):
    raise DataCorruptError(f"{where} holds {len(raw)} bytes, which its IDX header does not "
                           f"describe ({ndim} dimensions {dims}): it is damaged.")
  return np.frombuffer(raw, np.uint8, offset=offset).reshape(dims)


def _split(spec: IdxDataset, split: str, contents: dict[str, bytes], paths: dict[str, str]
           ) -> tuple[np.ndarray, np.ndarray]:
  """One split's (images (N, H, W, C) uint8, labels (N,) int32), checked for shapes."""
  images = parse(contents[f"{split}_images"], paths[f"{split}_images"])
  labels = parse(contents[f"{split}_labels"], paths[f"{split}_labels"])
  h, w, c = spec.image_shape
  if images.ndim != 3 or images.shape[1:] != (h, w) or labels.ndim != 1 or (
      len(labels) != len(images)) or labels.max(initial=0) >= len(spec.class_names):
    raise DataCorruptError(
        f"{paths[f'{split}_images']} and {paths[f'{split}_labels']} do not hold {spec.name}'s "
        f"{h}x{w} images with one label each (found images {images.shape}, labels "
        f"{labels.shape}).")
  return images.reshape(-1, h, w, c).copy(), labels.astype(np.int32)


def arrays(spec: IdxDataset, paths: dict[str, str], cache_dir: str) -> dict[str, np.ndarray]:
  """"train_images", "train_labels", "test_images", "test_labels" of the verified files, through
  the cache when enabled (keyed by the files' bytes: a check on a hit costs a hash of them)."""
  contents = {}
  for role, path in paths.items():
    with open(path, "rb") as f:
      contents[role] = f.read()
  key = hashlib.sha256(f"v{CACHE_VERSION}|{spec.name}".encode())
  for role in FILES:
    key.update(f"|{role}|{_sha256(contents[role])}".encode())
  fingerprint = key.hexdigest()[:16]
  path = os.path.join(cache_dir, f"idx-{spec.name}.npz") if cache_dir else None
  if path and (cached := cache.read(path, fingerprint)) is not None:
    return cached
  raw = {role: verified(spec, role, data, paths[role], strict=False)
         for role, data in contents.items()}
  out = {}
  for split in ("train", "test"):
    out[f"{split}_images"], out[f"{split}_labels"] = _split(spec, split, raw, paths)
  if path:
    cache.write(path, fingerprint, **out)
  return out


def load(name: str, paths: dict[str, str], cache_dir: str, validation_fraction: float,
         split_seed: int) -> Dataset:
  """`name` from its four IDX files `paths` ({role: path}, from `locate`), in the files' order,
  with `validation_fraction` of train carved out (seeded by `split_seed`)."""
  spec = DATASETS[name]
  a = arrays(spec, paths, cache_dir)
  return from_arrays(name, (a["train_images"], a["train_labels"]),
                     (a["test_images"], a["test_labels"]), class_names=spec.class_names,
                     image_shape=spec.image_shape, validation_fraction=validation_fraction,
                     split_seed=split_seed,
                     order=f"the original files' order ({FILES['test_images']} for test)")
