"""Architectures by name.

Every module in this package is imported on first use, and each registers its variants with
`register`, so adding an architecture is one new file here (plus a config): nothing else changes.
A model is a `flax.linen` module or a `flax.nnx` one (nets/nnx_bridge.py makes it a Linen module).

    from nets import register
    register("my_net", MyNet)                          # a class
    register("my_net_wide", functools.partial(MyNet, width=512))  # a variant
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import os
import pkgutil
import traceback
from typing import Any, Callable

import flax.linen as nn
from nets import nnx_bridge

class ModelConfigError(ValueError):
  """An unknown model name or model field."""


class ModelContractError(ModelConfigError):
  """A model that breaks the contract of docs/extending.md: a field without a default, a
  `__call__` without `train`, a name another model has, logits of another width than
  `num_classes`. Said with the model's file, for whoever is writing it."""


ModelFactory = Callable[..., Any]  # a Linen or an NNX module class, or a partial of one
_REGISTRY: dict[str, ModelFactory] = {}
_KINDS: dict[str, str] = {}  # name -> "classifier", "gan", ...
_discovered = False


def register(name: str, factory: ModelFactory, kind: str = "classifier") -> ModelFactory:
  """Registers `factory` (a module class or a `functools.partial` of one) under `name`, as a
  model of `kind` ("classifier": images -> logits; "gan": see nets/gan.py)."""
  existing = _REGISTRY.get(name)
  if existing is not None and _qualname(existing) != _qualname(factory):
    first, second = (f"{source_of(f)} ({getattr(f, 'func', f).__name__})"
                     for f in (existing, factory))
    raise ModelContractError(f"The model name {name!r} is registered twice: by {first} and by "
                             f"{second}. Give one of them another name.")
  _check_contract(factory, kind)
  _REGISTRY[name] = factory
  _KINDS[name] = kind
  return factory


def source_of(factory: ModelFactory) -> str:
  """The file that defines the class of `factory` (or of a built model), as `nets/x.py` for
  the models here."""
  cls = getattr(factory, "func", factory)
  if isinstance(cls, nn.Module):  # a built model; an NNX one is inside the bridge's module
    cls = getattr(cls, "nnx_class", type(cls))
    cls = getattr(cls, "func", cls)
  try:
    path = inspect.getsourcefile(cls) or ""
  except TypeError:
    path = ""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  inside = path.startswith(root + os.sep)
  return os.path.relpath(path, root) if inside else (path or cls.__module__)


def _check_contract(factory: ModelFactory, kind: str) -> None:
  """What every model must be to be built from a config (docs/extending.md), checked as it
  registers: a mistake is named with its file, not found later as a bare TypeError."""
  cls = getattr(factory, "func", factory)
  where = f"{source_of(factory)}: {cls.__name__}"
  declared, fixed = _declared(cls), set(getattr(factory, "keywords", {}))
  if missing := [k for k, v in declared.items() if v is dataclasses.MISSING and k not in fixed]:
    raise ModelContractError(
        f"{where}'s field(s) {', '.join(missing)} have no default. Give each a default and a "
        "comment (`width: int = 64  # units of the hidden layer`): a config sets only the "
        "fields it changes (docs/extending.md).")
  if kind == "classifier" and "num_classes" not in declared:
    raise ModelContractError(f"{where} has no `num_classes` field: the data sets it, and the "
                             "last layer has that many units (docs/extending.md).")
  nnx = nnx_bridge.is_nnx(cls)
  for method, wanted in (("__call__", ("train", "rngs") if nnx else ("train",)),
                         ("__init__", ("rngs",) if nnx else ())):
    params = inspect.signature(getattr(cls, method)).parameters
    takes_any = any(p.kind == p.VAR_KEYWORD for p in params.values())
    if lacking := [n for n in wanted if n not in params and not takes_any]:
      how = ("see nets/mixer.py, an NNX model" if nnx else
             "write it `def __call__(self, x, *, train)`")
      raise ModelContractError(
          f"{where}.{method} takes no {' or '.join(f'`{n}`' for n in lacking)} keyword: {how} "
          "(docs/extending.md).")


def _qualname(factory: ModelFactory) -> str:
  func = getattr(factory, "func", factory)
  kwargs = getattr(factory, "keywords", {})
  return f"{func.__module__}.{func.__qualname__}{kwargs or ''}"


def _discover() -> None:
  global _discovered
  if not _discovered:
    for info in pkgutil.iter_modules(__path__):
      if not info.name.startswith("_"):
        _import(info.name)
    _discovered = True


def _import(module: str) -> None:
  """Imports nets/`module`.py; an error there is said in one line that names the file and line
  (a command then says it as `error:`; the traceback stays on the exception for a debugger)."""
  try:
    importlib.import_module(f"{__name__}.{module}")
  except ModelContractError:
    raise
  except Exception as e:  # a contributor's file: a syntax error, a field order Python refuses...
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{module}.py")
    lines = [f.lineno for f in traceback.extract_tb(e.__traceback__) if f.filename == path]
    line = getattr(e, "lineno", None) if isinstance(e, SyntaxError) else (lines or [None])[-1]
    raise ModelContractError(
        f"nets/{module}.py cannot be imported{f' (line {line})' if line else ''}: "
        f"{type(e).__name__}: {e}. Every file in nets/ is imported to find the models: fix it, "
        "or move it out of nets/.") from e


def names(kind: str | None = "classifier") -> list[str]:
  """The registered names of models of `kind` (None: of every kind), sorted."""
  _discover()
  return sorted(n for n in _REGISTRY if kind is None or _KINDS[n] == kind)


def kind_of(name: str) -> str:
  """The kind that model `name` was registered as ("classifier", "gan", ...)."""
  get_factory(name)
  return _KINDS[name]


def _declared(cls: type) -> dict[str, Any]:
  """{field: default} that class `cls` declares (dataclasses.MISSING where none): a Linen
  module's dataclass fields, an NNX module's keyword arguments (not `rngs`, nor the
  `input_shape` that nets/nnx_bridge.py fills from the data)."""
  if nnx_bridge.is_nnx(cls):
    params = inspect.signature(cls.__init__).parameters.values()
    return {p.name: dataclasses.MISSING if p.default is p.empty else p.default for p in params
            if p.name not in ("self", "rngs", nnx_bridge.INPUT_SHAPE)
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
  return {f.name: (f.default if f.default is not dataclasses.MISSING else
                   f.default_factory() if f.default_factory is not dataclasses.MISSING else
                   dataclasses.MISSING)
          for f in dataclasses.fields(cls) if f.init and f.name not in ("parent", "name")}


def field_names(name: str) -> list[str]:
  """The fields that a config may set on model `name` (those not fixed by its variant)."""
  return list(field_defaults(name))


def field_defaults(name: str) -> dict[str, Any]:
  """{field: default} of the fields a config may set on model `name` (dataclasses.MISSING for a
  field without a default)."""
  factory = get_factory(name)
  fixed = set(getattr(factory, "keywords", {}))
  return {k: v for k, v in _declared(getattr(factory, "func", factory)).items()
          if k not in fixed}


# Model fields a config never sets: the classes come from the data, the dtype from config.dtype.
NOT_CONFIG_FIELDS = ("num_classes", "dtype")


def config_fields(name: str) -> dict[str, Any]:
  """{field: default} of the fields a config sets on model `name`: its fields with a default of
  a plain value (what a ConfigDict holds and `--config.model.FIELD=V` parses)."""
  plain = (bool, int, float, str, tuple, list)
  return {k: v for k, v in field_defaults(name).items()
          if k not in NOT_CONFIG_FIELDS and isinstance(v, plain)}


def check_values(name: str, fields: dict[str, Any]) -> None:
  """Raises ModelConfigError for a value of model `name`'s field whose type is not its
  default's: `--config.model.hidden=abc` parses to ('abc',), which no layer can be built from."""
  defaults = field_defaults(name)
  for field, value in fields.items():
    default = defaults.get(field)
    if default is None or default is dataclasses.MISSING or _same_type(value, default):
      continue
    raise ModelConfigError(
        f"--config.model.{field}={value!r}: model {name!r} wants {_type_name(default)} there "
        f"(its default is {default!r}).")


def _same_type(value: Any, default: Any) -> bool:
  """Whether `value` is of `default`'s type: an int where a float is due, any list or tuple
  where one is, and each item of the item type that all of the default's share."""
  if isinstance(default, bool) or not isinstance(default, (int, float, str, tuple, list)):
    return isinstance(value, type(default))
  if isinstance(default, (tuple, list)):
    kinds = {type(item) for item in default}
    return isinstance(value, (tuple, list)) and (
        len(kinds) != 1 or all(_same_type(item, default[0]) for item in value))
  wanted = (int, float) if isinstance(default, float) else type(default)
  return isinstance(value, wanted) and not isinstance(value, bool)


def _type_name(default: Any) -> str:
  if isinstance(default, (tuple, list)) and len({type(x) for x in default}) == 1:
    return "a tuple of " + {bool: "True/False values", int: "ints", float: "numbers",
                            str: "strings"}.get(type(default[0]), type(default[0]).__name__)
  return {bool: "True or False", int: "an int", float: "a number", str: "a string",
          tuple: "a tuple", list: "a tuple"}.get(type(default), type(default).__name__)


def get_factory(name: str) -> ModelFactory:
  _discover()
  if name not in _REGISTRY:
    raise ModelConfigError(f"Unknown model {name!r}. Known models: {', '.join(sorted(_REGISTRY))}. "
                     "Set --config.model.name to one of them, or add a file to nets/ that "
                     "calls nets.register().")
  return _REGISTRY[name]


def create(name: str, **fields: Any) -> nn.Module:
  """Builds model `name` with the given module fields (e.g. num_classes=10, dropout=0.1)."""
  factory = get_factory(name)
  allowed = field_names(name)
  unknown = sorted(set(fields) - set(allowed))
  if unknown:
    raise ModelConfigError(f"Model {name!r} has no field(s) {unknown}. Its fields are: "
                     f"{', '.join(allowed)}.")
  cls = getattr(factory, "func", factory)
  if nnx_bridge.is_nnx(cls):
    return nnx_bridge.wrap(factory, fields)
  return factory(**fields)
