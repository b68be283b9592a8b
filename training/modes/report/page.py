"""The self-contained report page (report.html): tables and the figures embedded as data URIs."""

from __future__ import annotations

import base64
import datetime
import html
import json
import os
from typing import Any, Sequence

from training.modes.report.records import status


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       max-width: 1180px; margin: 1.5em auto; padding: 0 1em; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.6em; }
.meta { color: #555; margin: 0.2em 0; }
table { border-collapse: collapse; margin: 0.6em 0; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.7em; text-align: right; }
th { background: #f2f2f2; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; height: auto; display: block; margin: 0.5em 0; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 12px;
      line-height: 1.2; }
"""


def img(name: str, png: bytes) -> str:
  return (f'<img id="{name}" alt="{name.replace("_", " ")}" '
          f'src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">')


def html_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
  body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>"
                 for row in rows)
  return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def page(title: str, body: str) -> str:
  return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
          f'<meta name="viewport" content="width=device-width, initial-scale=1">'
          f"<title>{html.escape(title)}</title><style>{CSS}</style></head>\n"
          f"<body>\n{body}\n</body></html>\n")


def _metrics_tables(found: dict[str, Any], final: dict[str, Any] | None, names, ckpt: str) -> str:
  t = found["test"]
  end = (final or {}).get("test") or {}
  cols = [f"this report: {ckpt}"] + (["end of training (test_metrics.json)"] if end else [])
  rows = [["accuracy", f"{t['accuracy']:.2%}"] + ([f"{end['accuracy']:.2%}"] if end else []),
          ["loss", f"{t['loss']:.4f}"] + ([f"{end['loss']:.4f}"] if end else []),
          ["macro F1", f"{t['macro_f1']:.4f}"] + ([f"{end['macro_f1']:.4f}"] if end else []),
          ["examples", f"{t['count']:,}"] + ([f"{end['count']:,}"] if end else [])]
  rows.append(["parameters", f"{found['params']:,}"] + ([""] if end else []))
  if end and (seconds := final.get("time/epochs_s", final.get("time/total_s"))) is not None:
    rows.append(["training time (s), all epochs", "", f"{seconds:.1f}"])
  per_class = [[n, f"{s:,}", f"{p:.4f}", f"{r:.4f}", f"{f:.4f}"] for n, s, p, r, f in zip(
      names, t["support"], t["precision"], t["recall"], t["f1"])]
  return (html_table(["test split", *cols], rows) + "<h3>Per class (this report)</h3>"
          + html_table(["class", "examples", "precision", "recall (accuracy)", "F1"], per_class))


def _mistake_files(mistakes: Sequence[dict[str, Any]], names: Sequence[str]) -> list[str]:
  """The shown mistakes' files, as a table (an image folder's; other sources have no files)."""
  if not mistakes or "file" not in mistakes[0]:
    return []
  rows = [[m["file"], f"#{m['index']}", names[m["label"]], names[m["predicted"]],
           f"{m['probability']:.3f}"] for m in mistakes]
  return [html_table(["file", "#", "true", "predicted", "p"], rows)]


def report_html(workdir, restored, records, found, final, pngs, summary: str,
                members: Sequence[str] = ()) -> str:
  """The self-contained report page: the figures are embedded as data URIs; `members`: a
  population's section (its members' table and sweep figure)."""
  info, config = restored.dataset_info, restored.config
  names = [str(n) for n in info["class_names"]]
  ckpt = f"{restored.which} checkpoint (step {restored.step})"
  title = f"{config.model.name} on {info['name']}: report"
  now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
  progress = status(records, config, final is not None)
  body = [f"<h1>{html.escape(title)}</h1>",
          f'<p class="meta">workdir <code>{html.escape(os.path.abspath(workdir))}</code></p>',
          f'<p class="meta">{html.escape(progress)}; figures of the {html.escape(ckpt)} on the '
          f"test split ({found['test']['count']:,} examples); written {html.escape(now)}</p>",
          "<h2>Test metrics</h2>", _metrics_tables(found, final, names, ckpt),
          *members,
          "<h2>Learning curves</h2>", img("learning_curves", pngs["learning_curves"]),
          "<h2>Errors by class</h2>", img("confusion_matrix", pngs["confusion_matrix"]),
          img("per_class", pngs["per_class"]),
          "<h2>Most confident mistakes</h2>", img("mistakes", pngs["mistakes"]),
          *_mistake_files(found["mistakes"], names),
          "<h2>Model</h2>", f"<pre>{html.escape(summary)}</pre>",
          f"<h2>Config ({html.escape(ckpt)})</h2>",
          f"<pre>{html.escape(json.dumps(config.to_dict(), indent=2, sort_keys=True))}</pre>"]
  return page(title, "\n".join(body))


