"""Requests/s and latency of --mode=serve under load, with batching on and off.

    python bench/serve_load.py runs/cnn [--clients=1,8,64] [--seconds=30] [--markdown]
                               [--server_flag=--max_batch=16 ...]

Starts `train.py --mode=serve` on 127.0.0.1 (a free port), once with its batching (the default
window) and once with --nobatching. For each number of clients: that many asyncio clients (each a
keep-alive HTTP/1.1 connection of its own, written on asyncio streams) post one 28x28 PNG digit
per request, each the next as soon as the last is answered, for --seconds after a few seconds'
warm-up that does not count. Prints requests/s, the p50 and p99 latency, the errors (a status
other than 200, or no answer) and the mean number of images per device call (from /health;
with --server_flag=--workers=N, "nan": each process counts its own). The clients run on the
same machine as the server and take some of its CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import re
import signal
import subprocess
import sys
import time

import httpx
import numpy as np
from PIL import Image, ImageDraw

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
WARM_UP_S = 3


def digit_png() -> bytes:
  """A hand-drawn-like 7 on 28x28 pixels: what the draw-a-digit page sends, smaller."""
  img = Image.new("L", (28, 28))
  ImageDraw.Draw(img).line([(7, 6), (21, 6), (12, 23)], fill=255, width=3)
  buffer = io.BytesIO()
  img.save(buffer, "PNG")
  return buffer.getvalue()


def start_server(workdir: str, *flags: str) -> tuple[subprocess.Popen, str]:
  """The server process and its URL, read from its start-up note."""
  proc = subprocess.Popen([sys.executable, "train.py", "--mode=serve", f"--workdir={workdir}",
                           "--port=0", *flags], cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  for line in proc.stdout:
    found = re.search(r"at (http://\S+/) ", line)
    if found:
      return proc, found.group(1)
  sys.exit(f"error: the server did not start (status {proc.wait()}).")


def request_bytes(host: str, port: int, png: bytes) -> bytes:
  """One POST /predict of `png` as a multipart form, the same bytes each time."""
  boundary = "serveloadboundary"
  body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
          f"filename=\"digit.png\"\r\nContent-Type: image/png\r\n\r\n").encode() + png + (
              f"\r\n--{boundary}--\r\n").encode()
  return (f"POST /predict HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: multipart/form-data; "
          f"boundary={boundary}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   request: bytes) -> int:
  """Sends `request` on a keep-alive connection and reads the answer: its status."""
  writer.write(request)
  head = await reader.readuntil(b"\r\n\r\n")
  length = re.search(rb"(?i)content-length: (\d+)", head)
  await reader.readexactly(int(length.group(1)) if length else 0)
  return int(head.split(b" ", 2)[1])


async def load(url: str, clients: int, seconds: float, workers: int = 1) -> dict[str, float]:
  """`clients` clients posting for `seconds` after the warm-up: their rate, latency, errors.
  Each client is a bare HTTP/1.1 connection (asyncio streams), so that the clients' own work,
  on the server's cores, stays small."""
  host, port = re.match(r"http://(.+):(\d+)/", url).groups()
  request, latencies, errors = request_bytes(host, int(port), digit_png()), [], 0
  start = time.perf_counter() + WARM_UP_S
  end = start + seconds
  before = httpx.get(url + "health").json()

  async def one_client() -> None:
    nonlocal errors
    reader, writer = await asyncio.open_connection(host, int(port))
    while (now := time.perf_counter()) < end:
      try:
        ok = await exchange(reader, writer, request) == 200
      except (OSError, asyncio.IncompleteReadError):
        ok = False
        writer.close()
        reader, writer = await asyncio.open_connection(host, int(port))
      if now >= start:
        latencies.append(time.perf_counter() - now)
        errors += not ok
    writer.close()
  await asyncio.gather(*(one_client() for _ in range(clients)))
  after = httpx.get(url + "health").json()
  calls = after["device_calls"] - before["device_calls"]
  ms = np.array(latencies) * 1000
  # With --workers each process counts its own calls, and the two /health requests may reach
  # processes other than the clients': no mean then.
  same = workers == 1
  return {"clients": clients, "requests_per_s": len(latencies) / seconds,
          "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
          "errors": errors,
          "mean_batch": (after["images"] - before["images"]) / max(calls, 1) if same else np.nan}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("workdir", help="a trained run (or an export folder)")
  parser.add_argument("--clients", default="1,8,64")
  parser.add_argument("--seconds", type=float, default=30)
  parser.add_argument("--server_flag", action="append", default=[],
                      help="a flag for the server, e.g. --server_flag=--max_batch=16 (repeat it)")
  parser.add_argument("--markdown", action="store_true", help="a table for docs/performance.md")
  args = parser.parse_args()
  rows = []
  workers = max([int(f.split("=")[1]) for f in args.server_flag if f.startswith("--workers=")]
                or [1])
  for batching in (True, False):
    proc, url = start_server(args.workdir, "--batching" if batching else "--nobatching",
                             *args.server_flag)
    try:
      for clients in map(int, args.clients.split(",")):
        row = {"batching": "on" if batching else "off",
               **asyncio.run(load(url, clients, args.seconds, workers))}
        rows.append(row)
        print(f"batching {row['batching']:>3}  {clients:>3} clients: "
              f"{row['requests_per_s']:7.1f} requests/s  p50 {row['p50_ms']:6.1f} ms  "
              f"p99 {row['p99_ms']:6.1f} ms  errors {row['errors']}  "
              f"{row['mean_batch']:.1f} images per device call", flush=True)
    finally:
      proc.send_signal(signal.SIGINT)
      proc.wait()
  if args.markdown:
    print("\n| batching | clients | requests/s | p50 (ms) | p99 (ms) | errors | images per "
          "device call |\n|---|---|---|---|---|---|---|")
    for r in rows:
      print(f"| {r['batching']} | {r['clients']} | {r['requests_per_s']:.0f} | "
            f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']} | {r['mean_batch']:.1f} |")


if __name__ == "__main__":
  main()
