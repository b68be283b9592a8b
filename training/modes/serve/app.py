"""The HTTP API (FastAPI): POST /predict, the draw-a-digit page at /, /health, /model, and the
OpenAPI docs FastAPI makes (/docs, /openapi.json). Every error is a JSON {"error": ...} with a
4xx status, and the next request is served as if it had not happened."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import json
import os
import pathlib
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException

from training.modes.serve import inputs
from training.modes.serve.batcher import Batcher
from training.modes.serve.model import Served

DECODE_THREADS = 2
# Uploads up to this size (a few small digits, the page's drawing) are decoded on the event loop:
# faster than the hand-over to a thread, and too short to hold up other requests.
SMALL_BYTES = 64 * 1024
PAGE = pathlib.Path(__file__).with_name("page.html")


@dataclasses.dataclass(frozen=True)
class Limits:
  max_body_bytes: int  # a larger request is refused before it is read
  max_pixels: int  # an image of more pixels is refused before it is decoded
  max_images: int  # per request


def build(served: Served, batcher: Batcher, limits: Limits) -> Front:
  # A few threads decode images, off the event loop: more would only queue for the GIL, and
  # hold up the device thread's dispatch behind them.
  decoding = concurrent.futures.ThreadPoolExecutor(DECODE_THREADS, "serve-decode")

  @contextlib.asynccontextmanager
  async def lifespan(_: FastAPI):
    batcher.start()
    yield
    await batcher.stop()  # uvicorn has drained the requests by now
    decoding.shutdown()

  api = FastAPI(title="mnist-flax: a trained model", lifespan=lifespan,
                description="Classify images with a trained run's model (--mode=serve).")
  api.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
  _error_handlers(api)
  page = PAGE.read_text(encoding="utf-8")

  @api.get("/", response_class=HTMLResponse, summary="Draw a digit and see the answer")
  async def index() -> str:
    return page

  @api.get("/health", summary="Whether the server is up, and its batching so far")
  async def health() -> dict[str, Any]:
    # The counts are the answering process's own (--workers: each has its own batcher).
    return {"status": "ok", "device_calls": batcher.calls, "images": batcher.images,
            "process": os.getpid()}

  @api.get("/model", summary="The model: architecture, classes, accuracy, config")
  async def model() -> dict[str, Any]:
    return {**served.description, "class_names": served.class_names,
            "image_shape": list(served.shape), "fit": served.fit, "buckets": served.buckets,
            "batching": batcher.batching, "batch_window_ms": batcher.window_s * 1000}

  async def predict(request: Request) -> JSONResponse:
    """Each image's class, its probability, every class's probability and the notes (blank,
    too small, light background: `invert=true` for dark ink on light paper)."""
    try:
      invert = _flag(request.query_params.get("invert", "false"), "invert")
      with batcher.arriving():
        names, loaded = await _read(request, served, limits, invert, decoding)
    except inputs.BadInput as e:
      raise HTTPException(e.status, e.message) from None
    probabilities = await batcher.probabilities(np.stack([item.array for item in loaded]))
    # A JSONResponse of plain values: FastAPI's encoding of a returned dict costs as much as
    # the rest of a small request.
    return JSONResponse({"predictions": [
        inputs.answer(name, item, p, served.class_names, invert, served.light_matters)
        for name, item, p in zip(names, loaded, probabilities)]})
  # /predict answers outside FastAPI: going around its endpoint handling and the seven ASGI
  # layers it wraps around every route gave 11-19% more requests/s under load
  # (docs/performance.md). The FastAPI route describes it in the OpenAPI docs, and is never
  # reached.
  api.post("/predict", summary="Classify images: multipart files, or JSON pixel arrays",
           openapi_extra={"requestBody": _request_body(served), "parameters": [INVERT]})(predict)
  return Front(api, BodyLimit(_answering(predict), max_bytes=limits.max_body_bytes))


class Front:
  """The served ASGI app: POST /predict to its own handler, everything else (the page, /health,
  /model, /docs, lifespan) to FastAPI."""

  def __init__(self, api: FastAPI, predict: Any):
    self.api, self.predict = api, predict

  async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
    if (scope["type"] == "http" and scope["path"] == "/predict"
        and scope["method"] == "POST"):
      return await self.predict(scope, receive, send)
    return await self.api(scope, receive, send)


def _answering(endpoint: Any) -> Any:
  """`endpoint(request) -> response` as an ASGI app whose every error is a JSON answer, as
  `_error_handlers` gives FastAPI's routes."""
  async def app(scope: dict, receive: Any, send: Any) -> None:
    request = Request(scope, receive)
    try:
      response = await endpoint(request)
    except HTTPException as e:
      response = _http_error(e)
    except MultiPartException as e:  # a broken form (FastAPI's app makes it the same 400)
      response = JSONResponse({"error": e.message}, 400)
    except _TooLarge:
      raise  # BodyLimit answers it
    except Exception as e:  # a bug: the server goes on
      response = _internal_error(e)
    finally:
      await request.close()  # an uploaded file spooled to disk goes now
    await response(scope, receive, send)
  return app


INVERT = {"name": "invert", "in": "query", "required": False, "schema": {"type": "boolean"},
          "description": "true: dark ink on a light background (a scan, a drawing)"}
TRUE, FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def _flag(value: str, name: str) -> bool:
  """A boolean query parameter, read as FastAPI reads one."""
  if value.lower() not in TRUE + FALSE:
    raise inputs.BadInput(400, f"bad request parameter: query.{name}: {value!r} is not a "
                               "boolean (true or false)")
  return value.lower() in TRUE


async def _read(request: Request, served: Served, limits: Limits, invert: bool,
                decoding: concurrent.futures.Executor) -> tuple:
  """(the images' names, their `Loaded`) from a multipart form or a JSON body."""
  kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
  if kind == "application/json":
    try:
      body = json.loads(await request.body())
    except ValueError as e:
      raise inputs.BadInput(400, f"the body is not valid JSON ({e}): "
                                 + inputs.JSON_FORMAT.format(h=served.shape[0],
                                                             w=served.shape[1]) + ".") from None
    loaded = await asyncio.get_running_loop().run_in_executor(
        decoding, inputs.read_arrays, body, served.shape, invert, limits.max_images)
    return [f"images[{i}]" for i in range(len(loaded))], loaded
  if kind not in ("multipart/form-data", "application/x-www-form-urlencoded"):
    raise inputs.BadInput(415, f"content type {kind or '(none)'}: send image files as "
                               "multipart/form-data (curl -F file=@digit.png) or pixel arrays "
                               "as application/json.")
  form = await request.form(max_files=limits.max_images, max_fields=limits.max_images)
  files = [(f.filename or key, await f.read()) for key, f in form.multi_items()
           if isinstance(f, UploadFile)]
  if not files:
    raise inputs.BadInput(400, "the form holds no files: send each image as a file field, "
                               "e.g. curl -F file=@digit.png.")
  def read() -> list:
    return [inputs.read_upload(name, data, served.shape, served.fit, invert, limits.max_pixels)
            for name, data in files]
  if sum(len(data) for _, data in files) <= SMALL_BYTES:
    return [name for name, _ in files], read()
  loaded = await asyncio.get_running_loop().run_in_executor(decoding, read)
  return [name for name, _ in files], loaded


def _request_body(served: Served) -> dict[str, Any]:
  """/predict's two kinds of body, for the OpenAPI docs (the endpoint reads them itself)."""
  h, w = served.shape[:2]
  pixels = {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}
  return {"required": True, "content": {
      "multipart/form-data": {"schema": {"type": "object", "properties": {"file": {
          "type": "array", "items": {"type": "string", "format": "binary"}}}}},
      "application/json": {"schema": {"type": "object", "required": ["images"], "properties": {
          "images": {"type": "array", "items": pixels,
                     "description": f"{h}x{w} pixel arrays, 0-255, light ink on dark"}}}}}}


def _error_handlers(api: FastAPI) -> None:
  """Every error as {"error": what was wrong}: FastAPI's own (404, 405, a bad query parameter)
  included."""
  @api.exception_handler(HTTPException)
  async def http_error(_: Request, e: HTTPException) -> JSONResponse:
    return _http_error(e)

  @api.exception_handler(RequestValidationError)
  async def bad_parameter(_: Request, e: RequestValidationError) -> JSONResponse:
    where = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
    return JSONResponse({"error": f"bad request parameter: {where}"}, 400)

  @api.exception_handler(Exception)
  async def failure(_: Request, e: Exception) -> JSONResponse:  # a bug: the server goes on
    return _internal_error(e)


def _http_error(e: HTTPException) -> JSONResponse:
  return JSONResponse({"error": str(e.detail)}, e.status_code, headers=e.headers)


def _internal_error(e: Exception) -> JSONResponse:
  return JSONResponse({"error": f"internal error ({type(e).__name__}: {e})"}, 500)


class BodyLimit:
  """Refuses a request whose body is over `max_bytes` with 413, by its Content-Length before
  reading it, or as soon as a body without one (chunked) passes the limit."""

  def __init__(self, app: Any, max_bytes: int):
    self.app, self.max_bytes = app, max_bytes

  async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
      return await self.app(scope, receive, send)
    length = dict(scope["headers"]).get(b"content-length", b"0")
    if not length.isdigit() or int(length) > self.max_bytes:
      return await self._refuse(scope, send, length.decode("latin-1"))
    received, started = 0, False

    async def counted() -> dict:
      nonlocal received
      message = await receive()
      received += len(message.get("body", b""))
      if received > self.max_bytes:
        raise _TooLarge()
      return message

    async def sending(message: dict) -> None:
      nonlocal started
      started = True
      await send(message)
    try:
      await self.app(scope, counted, sending)
    except _TooLarge:
      if not started:
        await self._refuse(scope, send, f"over {self.max_bytes}")

  async def _refuse(self, scope: dict, send: Any, length: str) -> None:
    limit = f"{self.max_bytes / 2**20:g} MB"
    await JSONResponse({"error": f"the request body ({length} bytes) is over the limit of "
                                 f"{limit} (--max_body_mb); send fewer or smaller images per "
                                 "request."}, 413)(scope, None, send)


class _TooLarge(Exception):
  pass
