"""What the report draws, independent of how: a list of :class:`Chart`, each a list of :class:`Series`.
``png.py`` renders them with matplotlib, ``page.py`` hands them to the interactive charts of the HTML page.

Charts (one colour per run): loss (raw training loss, its EMA, evaluation loss, × at a non-finite loss) vs
step; learning rate; gradient norm (log scale when it spans more than 100×); every evaluation metric;
throughput (samples/s, tokens/s, MFU when logged). Only evaluations run during training are drawn
(``RunData.eval_logs``); evaluations outside training are a table of their own.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from .numbers import ema, ema_weight, format_number, interp, is_number, series
from .runs import RunData
from .summary import EVAL_NON_METRICS

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf"]


def colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


@dataclass
class Series:
    label: str
    run: int                     # index of the run: its colour, and the run toggle that hides it
    xs: list[float]
    ys: list[float]              # NaN: a gap
    style: str = "line"          # line (markers when few points) | raw (faint) | smooth (thick)
    #                              dashed (dashed, markers) | marks (× only)


@dataclass
class Chart:
    key: str                     # file-name safe: report_<key>.png, chart-<key> in the page
    title: str
    ylabel: str
    caption: str
    series: list[Series] = field(default_factory=list)
    log_y: bool = False
    y_from_zero: bool = False
    group: str | None = None     # charts of one group share a PNG (side by side) and a row in the page


def _loss_chart(runs: list[RunData], label) -> Chart | None:
    chart = Chart("loss", "Loss", "loss", "")
    weights = []
    for i, run in enumerate(runs):
        xs, ys = series(run.train_logs, "loss")
        if xs:
            chart.series.append(Series(label(run, "train loss (raw)"), i, xs, ys, "raw"))
            weights.append(ema_weight(sum(1 for y in ys if math.isfinite(y))))
            sm = ema(ys)  # drawn through non-finite points (the raw line shows them as gaps)
            fx = [x for x, y in zip(xs, sm) if math.isfinite(y)]
            fy = [y for y in sm if math.isfinite(y)]
            chart.series.append(Series(label(run, "train loss (EMA)"), i, fx, fy, "smooth"))
            bad = [x for x, y in zip(xs, ys) if not math.isfinite(y)]
            if bad:
                chart.series.append(Series(label(run, "non-finite loss"), i, bad,
                                           [float(interp(x, fx, fy)) for x in bad], "marks"))
        xs, ys = series(run.eval_logs, "eval_loss")
        if xs:
            chart.series.append(Series(label(run, "eval loss"), i, xs, ys, "dashed"))
    if not chart.series:
        return None
    wtxt = ", ".join(format_number(w) for w in weights)
    chart.caption = ("Training loss as logged (faint), its debiased exponential moving average "
                     f"(EMA weight {wtxt}) and evaluation loss (dashed, markers) against the optimizer step; "
                     "a black marker (× in the PNG) shows a NaN/inf training loss.")
    return chart


def _simple_chart(runs, key, title, ylabel, caption, logs_attr="train_logs", multi=False,
                  chart_key=None, log_scale=False) -> Chart | None:
    chart = Chart(chart_key or key, title, ylabel, caption)
    for i, run in enumerate(runs):
        xs, ys = series(getattr(run, logs_attr), key)
        if xs:
            chart.series.append(Series(run.name if multi else key, i, xs, ys))
    if not chart.series:
        return None
    if log_scale:
        values = [y for s in chart.series for y in s.ys if math.isfinite(y)]
        chart.log_y = bool(values) and min(values) > 0 and max(values) / min(values) > 100
    return chart


def _eval_metric_names(runs: list[RunData]) -> list[str]:
    names: list[str] = []
    for run in runs:
        for r in run.eval_logs:
            for k, v in r.items():
                if k.startswith("eval_") and k not in EVAL_NON_METRICS and k not in names and is_number(v):
                    names.append(k)
    return names


_THROUGHPUT = {"samples_per_second": ("Samples / s", "samples per second"),
               "tokens_per_second": ("Tokens / s", "tokens per second"),
               "mfu": ("Model FLOPs utilisation", "MFU")}


def _throughput_charts(runs: list[RunData], multi: bool) -> list[Chart]:
    out = []
    for k, (title, ylabel) in _THROUGHPUT.items():
        if not any(any(is_number(r.get(k)) and r.get(k) for r in run.train_logs) for run in runs):
            continue
        chart = _simple_chart(runs, k, title, ylabel, "Training throughput over the logging interval ending "
                              "at each step.", multi=multi)
        if chart:
            chart.y_from_zero, chart.group = True, "throughput"
            out.append(chart)
    return out


def build_charts(runs: list[RunData]) -> list[Chart]:
    multi = len(runs) > 1

    def label(run, what):
        return f"{run.name}: {what}" if multi else what

    charts = [
        _loss_chart(runs, label),
        _simple_chart(runs, "learning_rate", "Learning rate", "learning rate",
                      "Learning rate at each logging step (schedule and warmup).", multi=multi),
        _simple_chart(runs, "grad_norm", "Gradient norm", "grad norm (before clipping)",
                      "Global gradient norm at each logging step (log scale when it spans more than 100×).",
                      multi=multi, log_scale=True),
    ]
    for k in _eval_metric_names(runs):
        short = k[len("eval_"):]
        safe = re.sub(r"[^0-9A-Za-z_.-]", "_", short)
        charts.append(_simple_chart(runs, k, f"Eval {short}", short, f"{k} at each evaluation during training.",
                                    logs_attr="eval_logs", multi=multi, chart_key=f"eval_{safe}"))
    charts += _throughput_charts(runs, multi)
    return [c for c in charts if c is not None]
