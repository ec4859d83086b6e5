"""The report's HTML page: one self-contained file, usable offline.

Tables are plain HTML; the charts are drawn in the browser by uPlot (vendored in ``assets/``, MIT licence in
``assets/uPlot.LICENSE``) and ``assets/report.js`` from the chart data embedded in the page as JSON. The scripts,
styles and data are all inline: the page loads nothing, from the network or from disk. Each chart links its
PNG (written next to the page) and shows it inside ``<noscript>`` when JavaScript is off.
"""
from __future__ import annotations

import base64
import html
import json
import math
import os
import time
from functools import cache
from importlib import resources

from .charts import Chart, colour
from .numbers import format_number
from .runs import RunData
from .summary import final_metrics, standalone_columns, summary_rows

_HINT = ("Hover a chart for the values at a step. Drag across a chart to zoom into those steps, Ctrl+wheel "
         "(or a pinch) zooms in and out at the cursor, double-click zooms back out. Click a legend entry to hide "
         "or show that line.")


@cache
def asset(name: str) -> str:
    """Text of a file in ``trainwright/report/assets`` (package data)."""
    text = resources.files(__package__).joinpath("assets", name).read_text(encoding="utf-8")
    if "</script" in text.lower():  # would end the inline <script> early
        raise ValueError(f"report asset {name} contains '</script'")
    return text


def _e(s) -> str:
    return html.escape(str(s), quote=True)


def _table(header: list[str], rows: list[list[str]], numeric_cols: bool = False, warn_row: str | None = None) -> str:
    out = ["<table>", "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>"]
    for row in rows:
        cells = [f"<th>{_e(row[0])}</th>"]
        for c in row[1:]:
            cls = ' class="num"' if numeric_cols else ""
            if warn_row and row[0] == warn_row and str(c).startswith("incomplete"):
                cls = ' class="warn"'
            cells.append(f"<td{cls}>{_e(c)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _merged_keys(dicts: list[dict]) -> list[str]:
    """Keys of all dicts in order; a key only some have goes after the key that precedes it there."""
    keys: list[str] = []
    for d in dicts:
        previous = None
        for k in d:
            if k not in keys:
                keys.insert(keys.index(previous) + 1 if previous is not None else 0, k)
            previous = k
    return keys


def _summary_section(runs: list[RunData], names: list[str]) -> list[str]:
    summaries = [dict(summary_rows(r)) for r in runs]
    keys = _merged_keys(summaries)
    parts = ["<h2>Summary</h2>",
             _table(["", *names], [[k, *[s.get(k, "—") for s in summaries]] for k in keys], warn_row="status")]
    finals = [final_metrics(r) for r in runs]
    mkeys = _merged_keys(finals)
    if mkeys:
        note = ("Last evaluation during training, last logged training loss and the end-of-training summary "
                "(<code>train_loss</code> is the mean over the whole run")
        if any(r.resumed and r.final_log for r in runs):
            note += "; for a resumed run <code>train_runtime</code> and the rates cover all of its train() calls"
        parts += ["<h2>Final metrics</h2>", f'<p class="meta">{note}).</p>',
                  _table(["metric", *names], [[k, *[format_number(f.get(k)) for f in finals]] for k in mkeys],
                         numeric_cols=True)]
    cols = standalone_columns(runs)
    if cols:
        mkeys = _merged_keys([m for _, m in cols])
        parts += ["<h2>Evaluations outside training</h2>",
                  '<p class="meta"><code>evaluate()</code> calls that were not part of <code>train()</code> (e.g. '
                  "<code>trainwright evaluate</code>, or an evaluation of the final model after training). They "
                  "are not drawn on the charts.</p>",
                  _table(["metric", *[h for h, _ in cols]],
                         [[k, *[format_number(m.get(k)) for _, m in cols]] for k in mkeys], numeric_cols=True)]
    return parts


def _png_fallback(file: str, out_dir: str, embed: bool, title: str) -> str:
    src = file
    if embed:
        with open(os.path.join(out_dir, file), "rb") as f:
            src = "data:image/png;base64," + base64.b64encode(f.read()).decode("ascii")
    return f'<noscript><img src="{_e(src)}" alt="{_e(title)}"></noscript>'


def _chart_figure(chart: Chart, png: str | None, out_dir: str, embed: bool) -> str:
    parts = [f'<figure class="chart-box" id="fig-{_e(chart.key)}">',
             f'<div class="chart" id="chart-{_e(chart.key)}" data-key="{_e(chart.key)}"></div>']
    caption = _e(chart.caption)
    if png:
        parts.append(_png_fallback(png, out_dir, embed, chart.title))
        caption += f' <a class="png" href="{_e(png)}">PNG</a>'
    parts.append(f"<figcaption>{caption}</figcaption></figure>")
    return "".join(parts)


def _charts_section(runs: list[RunData], charts: list[Chart], pngs: dict[str, str], out_dir: str,
                    embed: bool) -> list[str]:
    if not charts:
        return ['<p class="warn">No training or evaluation logs to plot yet.</p>']
    parts = ["<h2>Charts</h2>", f'<p class="meta hint">{_e(_HINT)}</p>']
    if len(runs) > 1:
        boxes = "".join(f'<label class="run-toggle" style="border-color:{colour(i)}">'
                        f'<input type="checkbox" checked data-run="{i}"> '
                        f'<span class="swatch" style="background:{colour(i)}"></span>{_e(r.name)}</label>'
                        for i, r in enumerate(runs))
        parts.append(f'<div id="run-toggles"><span class="meta">Runs shown:</span> {boxes}</div>')
    row: list[str] = []
    for i, chart in enumerate(charts):
        fig = _chart_figure(chart, pngs.get(chart.key), out_dir, embed)
        if chart.group:
            row.append(fig)
            if i + 1 == len(charts) or charts[i + 1].group != chart.group:
                parts.append(f'<div class="chart-row">{"".join(row)}</div>')
                row = []
        else:
            parts.append(fig)
    return parts


def _jsonable(v: float):
    """7 significant digits (the page shows 5; keeps a long run's page small); NaN/inf: null, a gap."""
    return float(f"{v:.7g}") if math.isfinite(v) else None


def _step(x: float):
    return int(x) if float(x).is_integer() else x


def chart_data(runs: list[RunData], charts: list[Chart]) -> dict:
    """What report.js draws (NaN as null: a gap)."""
    return {
        "runs": [{"name": r.name, "colour": colour(i)} for i, r in enumerate(runs)],
        "charts": [{"key": c.key, "title": c.title, "ylabel": c.ylabel, "log": c.log_y, "zero": c.y_from_zero,
                    "group": c.group,
                    "series": [{"label": s.label, "run": s.run, "style": s.style, "colour": colour(s.run),
                                "x": [_step(x) for x in s.xs], "y": [_jsonable(y) for y in s.ys]} for s in c.series]}
                   for c in charts],
    }


def _inline_json(data) -> str:
    text = json.dumps(data, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_page(runs: list[RunData], charts: list[Chart], pngs: dict[str, str], out_dir: str,
                embed_images: bool = False, title: str | None = None) -> str:
    names = [r.name for r in runs]
    title = title or ("Training report: " + ", ".join(names))
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title>", f"<style>{asset('uPlot.min.css')}\n{asset('report.css')}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="meta">Generated {_e(time.strftime("%Y-%m-%d %H:%M:%S"))} by trainwright from '
        + ", ".join(f"<code>{_e(r.run_dir)}</code>" for r in runs) + ".</p>",
    ]
    parts += _summary_section(runs, names)
    parts += _charts_section(runs, charts, pngs, out_dir, embed_images)
    parts += [f'<script type="application/json" id="tw-report-data">{_inline_json(chart_data(runs, charts))}</script>',
              f"<script>/*! uPlot.LICENSE\n{asset('uPlot.LICENSE')}*/\n{asset('uPlot.iife.min.js')}</script>",
              f"<script>{asset('report.js')}</script>",
              "</body></html>"]
    return "\n".join(parts) + "\n"
