"""Concurrent requests' images classified together: one device call for many requests.

Requests put their images in a queue and wait. One worker takes what is queued, waits up to the
batching window for more when the batch has room and other requests are still being read
(`arriving`), and runs the model on all of it in a thread of its own, so that the event loop
goes on accepting and decoding requests meanwhile; the requests that arrive during a device call
form the next batch. Under load the batches grow with the number of clients and each device
call's fixed cost is shared; a request alone never waits: no other is on its way. With batching off, each request's images are a device call of their own (the same
single thread: the device runs one call at a time either way).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import concurrent.futures
from typing import Callable, Iterator

import numpy as np

Model = Callable[[np.ndarray], np.ndarray]  # uint8 (N, H, W, C) -> probabilities (N, classes)


class Batcher:
  """`await batcher.probabilities(images)`: the images' class probabilities, computed in a batch
  with those of the other requests waiting. `start()` and `stop()` run inside the event loop."""

  def __init__(self, model: Model, max_batch: int, window_s: float, batching: bool = True):
    self.model, self.max_batch, self.window_s, self.batching = model, max_batch, window_s, batching
    # One thread: device calls run one after another, never competing for the cores.
    self.device = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="serve-device")
    self.pending: collections.deque = collections.deque()  # (images, future) in arrival order
    self.arrived: asyncio.Event | None = None
    self.worker: asyncio.Task | None = None
    self.reading = 0  # requests being read, whose images will come: worth waiting for
    self.calls = 0  # device calls made, and the images they held: the mean batch size
    self.images = 0

  def start(self) -> None:
    self.arrived = asyncio.Event()
    if self.batching:
      self.worker = asyncio.get_running_loop().create_task(self._run())

  async def stop(self) -> None:
    """After the server has drained its requests: nothing is waiting any more."""
    if self.worker:
      self.worker.cancel()
      await asyncio.gather(self.worker, return_exceptions=True)
    self.device.shutdown(wait=True)

  @contextlib.contextmanager
  def arriving(self) -> Iterator[None]:
    """Around the reading of a request whose images will be classified: while any is read, a
    batch waits (up to the window) for their images."""
    self.reading += 1
    try:
      yield
    finally:
      self.reading -= 1

  async def probabilities(self, images: np.ndarray) -> np.ndarray:
    """(N, classes) for `images` (N, H, W, C), N of any size: more than a batch are split."""
    parts = [images[i:i + self.max_batch] for i in range(0, len(images), self.max_batch)]
    if not self.batching:
      return np.concatenate([await self._call(part) for part in parts])
    futures = []
    for part in parts:
      futures.append(asyncio.get_running_loop().create_future())
      self.pending.append((part, futures[-1]))
    self.arrived.set()
    if len(futures) == 1:
      return await futures[0]
    return np.concatenate(await asyncio.gather(*futures))

  async def _call(self, batch: np.ndarray) -> np.ndarray:
    self.calls += 1
    self.images += len(batch)
    return await asyncio.get_running_loop().run_in_executor(self.device, self.model, batch)

  async def _run(self) -> None:
    while True:
      while not self.pending:
        self.arrived.clear()
        await self.arrived.wait()
      waiting = [self.pending.popleft()]
      await self._gather(waiting)
      batch = np.concatenate([images for images, _ in waiting])
      try:
        probabilities = await self._call(batch)
      except Exception as e:  # every request of the batch gets the error, the server goes on
        for _, future in waiting:
          if not future.done():
            future.set_exception(e)
        continue
      start = 0
      for images, future in waiting:
        if not future.done():  # a request whose client went away is cancelled
          future.set_result(probabilities[start:start + len(images)])
        start += len(images)

  async def _gather(self, waiting: list) -> None:
    """Adds to `waiting` what is queued while it fits in a batch; if the batch has room and
    other requests are being read, once more after the window (one timer a batch, not a wake-up
    per arrival: under load, the event loop's time is what limits). What does not fit stays
    first in the queue, for the next batch."""
    size = self._take(waiting, len(waiting[0][0]))
    if size < self.max_batch and not self.pending and self.reading and self.window_s > 0:
      await asyncio.sleep(self.window_s)
      self._take(waiting, size)

  def _take(self, waiting: list, size: int) -> int:
    while self.pending and size + len(self.pending[0][0]) <= self.max_batch:
      size += len(self.pending[0][0])
      waiting.append(self.pending.popleft())
    return size
