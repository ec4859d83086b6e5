"""Run report: ``report.html`` + PNG charts from one or several runs' ``metrics.jsonl``.

``write_report(run_dirs, output=None) -> str`` (path of the HTML file)

* Input per run directory (the Trainer's ``output_dir``): ``metrics.jsonl`` (written by
  ``MetricsJsonlCallback``; a crashed run without its ``train_end`` line works, a last line cut in
  half is skipped). Without it, the ``log_history`` of the newest ``trainer_state.json`` (``output_dir``
  itself or its newest ``checkpoint-*``) is used.
* Output: ``report.html`` (default ``<run_dir>/report.html``; with several runs, ``output`` or
  ``<first run dir>/report.html``). ``output`` may be an ``.html`` path or a directory. The charts are
  written next to the HTML as ``<stem>_<chart>.png`` and referenced by *relative path* (move the HTML
  together with its PNGs); ``embed_images=True`` inlines them as base64 instead (single-file report).
  No JavaScript.
* Charts (one line per run, coloured per run, labelled by run name): loss (raw training loss, its
  EMA, eval loss) vs step; learning rate; grad norm; every eval metric; throughput (samples/s,
  tokens/s, MFU when logged) vs step.
* ``RunReportCallback`` writes ``<output_dir>/report.html`` at train end (after ``MetricsJsonlCallback``).
* Tables: per run key arguments, model, hardware, status (finished / incomplete), runtime, tokens
  seen, best metric/checkpoint (``trainer_state.json`` when present, else ``train_end`` line, else
  computed from the eval logs), final metrics.

Matplotlib is used through its object API (``matplotlib.figure.Figure`` + the Agg canvas), never
``pyplot``: it works on headless machines and does not switch the backend of a notebook that calls it.
"""
from __future__ import annotations

import base64
import glob
import html
import json
import logging
import math
import os
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from .callbacks import TrainerCallback
from .loggers.jsonl import METRICS_FILE, from_jsonable, read_jsonl

logger = logging.getLogger(__name__)

__all__ = ["RunData", "RunReportCallback", "load_run", "write_report", "report_command", "format_number", "ema"]

_EVAL_NON_METRICS = {"eval_runtime", "eval_samples_per_second", "eval_steps_per_second", "eval_loss"}
_FINAL_KEYS = ("train_runtime", "train_samples_per_second", "train_steps_per_second", "train_loss", "total_flos")


# ------------------------------------------------------------------------------------------------
# loading
# ------------------------------------------------------------------------------------------------
@dataclass
class RunData:
    run_dir: str
    name: str
    source: str                                   # file the history came from
    records: list[dict] = field(default_factory=list)
    begin: dict | None = None                     # last train_begin line (args, hardware, model)
    first_begin: dict | None = None
    end: dict | None = None                       # train_end line, None for a crashed run
    train_logs: list[dict] = field(default_factory=list)
    eval_logs: list[dict] = field(default_factory=list)
    final_log: dict | None = None                 # {"train_runtime": ..., "train_loss": ...}
    state: dict | None = None                     # newest trainer_state.json, if any
    state_path: str | None = None
    args: dict = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.end is not None or self.final_log is not None

    @property
    def last_step(self) -> int | None:
        steps = [r.get("step") for r in self.records if isinstance(r.get("step"), (int, float))]
        if self.state and isinstance(self.state.get("global_step"), int):
            steps.append(self.state["global_step"])
        return int(max(steps)) if steps else None


def _checkpoint_step(path: str) -> int:
    m = re.search(r"checkpoint-(\d+)", path)
    return int(m.group(1)) if m else -1


def _newest_trainer_state(run_dir: str) -> tuple[dict | None, str | None]:
    candidates = glob.glob(os.path.join(run_dir, "checkpoint-*", "trainer_state.json"))
    top = os.path.join(run_dir, "trainer_state.json")
    if os.path.isfile(top):
        candidates.append(top)
    best, best_path, best_key = None, None, None
    for path in candidates:
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, json.JSONDecodeError):
            continue
        key = (data.get("global_step") or 0, path == top, _checkpoint_step(path))
        if best_key is None or key > best_key:
            best, best_path, best_key = data, path, key
    return best, best_path


def _load_args_file(run_dir: str, state_path: str | None) -> dict:
    dirs = [run_dir] + ([os.path.dirname(state_path)] if state_path else [])
    for d in dirs:
        path = os.path.join(d, "training_args.json")
        if os.path.isfile(path):
            try:
                with open(path, encoding="utf-8") as f:
                    data = json.load(f)
                if isinstance(data, dict):
                    return data
            except (OSError, json.JSONDecodeError):
                pass
    return {}


def _classify(run: RunData) -> None:
    for rec in run.records:
        if "event" in rec:
            continue
        if "train_runtime" in rec:
            run.final_log = rec
        elif any(k.startswith("eval_") for k in rec):
            run.eval_logs.append(rec)
        elif any(k in rec for k in ("loss", "learning_rate", "grad_norm", "samples_per_second", "tokens_per_second")):
            run.train_logs.append(rec)


def load_run(run_dir: str) -> RunData:
    """Read one run directory (see the module docstring). Raises FileNotFoundError when it has
    neither metrics.jsonl nor any trainer_state.json."""
    run_dir = os.path.abspath(run_dir)
    state, state_path = _newest_trainer_state(run_dir)
    metrics_path = os.path.join(run_dir, METRICS_FILE)
    if os.path.isfile(metrics_path):
        all_records = read_jsonl(metrics_path)
        source = metrics_path
    elif state is not None:
        all_records = [{k: from_jsonable(v) for k, v in r.items()} for r in state.get("log_history", [])]
        source = state_path
    else:
        raise FileNotFoundError(
            f"{run_dir}: no {METRICS_FILE} and no trainer_state.json (in the directory or a checkpoint-* "
            f"subdirectory): is this a trainwright output_dir?"
        )
    run = RunData(run_dir=run_dir, name="", source=source, state=state, state_path=state_path)
    for rec in all_records:
        ev = rec.get("event")
        if ev == "train_begin":
            run.first_begin = run.first_begin or rec
            run.begin = rec
            run.end = None  # a later begin (resume) reopens the run
        elif ev == "train_end":
            run.end = rec
        elif ev is None:
            run.records.append(rec)
    _classify(run)
    run.args = (run.begin or {}).get("args") or _load_args_file(run_dir, state_path)
    name = run.args.get("run_name") or (run.begin or {}).get("run_name")
    if not name or os.path.abspath(str(name)) == run_dir or str(name) == run.args.get("output_dir"):
        name = os.path.basename(run_dir.rstrip(os.sep)) or run_dir
    run.name = str(name)
    return run


# ------------------------------------------------------------------------------------------------
# numbers
# ------------------------------------------------------------------------------------------------
def format_number(v: Any) -> str:
    """How numbers appear in the report: ints with thousands separators, floats with 5 significant
    digits (``0.8125``, ``5e-05``, ``123.46``), NaN/inf spelled out, None as an em dash."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if math.isnan(v):
            return "NaN"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return f"{v:.5g}"
    return str(v)


def _num(v) -> float:
    """Float for plotting; non-numbers and inf become NaN (a gap in the line)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return float("nan")
    v = float(v)
    return v if math.isfinite(v) else float("nan")


def ema_weight(n: int) -> float:
    """Smoothing weight used for ``n`` points: 0 up to 5 points, then 1 - 5/n, capped at 0.95."""
    return min(0.95, max(0.0, 1.0 - 5.0 / n)) if n > 0 else 0.0


def ema(values: list[float], weight: float | None = None) -> list[float]:
    """TensorBoard-style debiased exponential moving average; NaN points are skipped (stay NaN)."""
    finite = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    w = ema_weight(len(finite)) if weight is None else weight
    out, last, n = [], 0.0, 0
    for v in values:
        if not (isinstance(v, (int, float)) and math.isfinite(v)):
            out.append(float("nan"))
            continue
        last = last * w + (1 - w) * v
        n += 1
        out.append(last / (1 - w ** n) if w > 0 else v)
    return out


def _interp(x: float, xs: list[float], ys: list[float]) -> float:
    """Linear interpolation of (xs, ys) at x, clamped at the ends (NaN when empty)."""
    if not xs:
        return float("nan")
    if x <= xs[0]:
        return ys[0]
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return ys[-1]


def _fmt_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "—"
    s = int(round(seconds))
    return f"{format_number(float(seconds))} s ({s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d})"


def _series(logs: list[dict], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for r in logs:
        if key in r and isinstance(r.get("step"), (int, float)):
            xs.append(float(r["step"]))
            ys.append(_num(r[key]))
    return xs, ys


# ------------------------------------------------------------------------------------------------
# summary values
# ------------------------------------------------------------------------------------------------
def _metric_for_best(args: dict) -> tuple[str, bool]:
    metric = args.get("metric_for_best_model") or "loss"
    if not metric.startswith("eval_"):
        metric = "eval_" + metric
    gib = args.get("greater_is_better")
    if gib is None:
        gib = not metric.endswith("loss")
    return metric, bool(gib)


def best_of(run: RunData) -> dict:
    """{"metric", "value", "step", "checkpoint", "source"} for the run's best evaluation."""
    metric, greater = _metric_for_best(run.args)
    # the name of the metric trainer_state's best_metric refers to is only known from the arguments
    named = metric if run.args.get("metric_for_best_model") or run.args.get("load_best_model_at_end") else None
    st = run.state or {}
    if st.get("best_metric") is not None:
        ckpt = st.get("best_model_checkpoint")
        step = st.get("best_global_step")
        if step is None and ckpt:
            step = _checkpoint_step(ckpt) if _checkpoint_step(ckpt) >= 0 else None
        return {"metric": named, "value": st["best_metric"], "step": step, "checkpoint": ckpt,
                "source": os.path.relpath(run.state_path, run.run_dir) if run.state_path else "trainer_state.json"}
    end = run.end or {}
    if end.get("best_metric") is not None:
        return {"metric": named, "value": end["best_metric"], "step": end.get("best_global_step"),
                "checkpoint": end.get("best_model_checkpoint"), "source": "train_end line"}
    cands = [(r[metric], r.get("step")) for r in run.eval_logs
             if isinstance(r.get(metric), (int, float)) and math.isfinite(r[metric])]
    if not cands:
        return {"metric": metric, "value": None, "step": None, "checkpoint": None, "source": None}
    value, step = (max if greater else min)(cands, key=lambda c: c[0])
    ckpt = os.path.join(run.run_dir, f"checkpoint-{step}") if step is not None else None
    return {"metric": metric, "value": value, "step": step,
            "checkpoint": ckpt if ckpt and os.path.isdir(ckpt) else None, "source": "eval logs"}


def final_metrics(run: RunData) -> dict[str, Any]:
    out: dict[str, Any] = {}
    losses = [r for r in run.train_logs if "loss" in r]
    if losses:
        out["last training loss"] = losses[-1]["loss"]
    if run.eval_logs:
        last = run.eval_logs[-1]
        for k, v in last.items():
            if k.startswith("eval_"):
                out[k] = v
    if run.final_log:
        for k in _FINAL_KEYS:
            if k in run.final_log:
                out[k] = run.final_log[k]
    return out


def _runtime(run: RunData) -> tuple[float | None, bool]:
    """(seconds, exact). Exact from train_runtime; else wall time between the first train_begin
    and the train_end line or, for a crashed run, the last logged line."""
    if run.final_log and isinstance(run.final_log.get("train_runtime"), (int, float)):
        return float(run.final_log["train_runtime"]), True
    start = (run.first_begin or {}).get("time")
    end_t = (run.end or {}).get("time")
    if end_t is None:
        times = [r["time"] for r in run.records if isinstance(r.get("time"), (int, float))]
        end_t = max(times) if times else None
    if isinstance(start, (int, float)) and isinstance(end_t, (int, float)):
        return float(end_t - start), run.end is not None
    return None, False


def _tokens_seen(run: RunData):
    for source in ([run.end] if run.end else []) + list(reversed(run.records)):
        v = source.get("num_input_tokens_seen")
        if isinstance(v, (int, float)) and v > 0:
            return int(v)
    v = (run.state or {}).get("num_input_tokens_seen")
    return int(v) if isinstance(v, (int, float)) and v > 0 else None


def _status(run: RunData) -> str:
    step = run.last_step
    where = f" at step {format_number(step)}" if step is not None else ""
    if run.source and os.path.basename(run.source) == "trainer_state.json":
        return f"history from {os.path.relpath(run.source, run.run_dir)} ({METRICS_FILE} missing){where}"
    if run.finished:
        resumed = run.first_begin is not None and run.first_begin is not run.begin
        return f"finished{where}" + (" (resumed)" if resumed else "")
    return f"incomplete: no train_end (crashed, interrupted or still running); last log{where}"


def _summary_rows(run: RunData) -> list[tuple[str, str]]:
    a = run.args
    rows: list[tuple[str, str]] = []
    rows.append(("status", _status(run)))
    begin = run.begin or {}
    if begin.get("model"):
        model = begin["model"]
        if begin.get("num_parameters") is not None:
            model += f" ({format_number(begin['num_parameters'])} params"
            if begin.get("trainable_parameters") is not None and \
                    begin["trainable_parameters"] != begin["num_parameters"]:
                model += f", {format_number(begin['trainable_parameters'])} trainable"
            model += ")"
        rows.append(("model", model))
    rows.append(("learning_rate", format_number(a.get("learning_rate"))))
    rows.append(("per_device_train_batch_size", format_number(a.get("per_device_train_batch_size"))))
    rows.append(("gradient_accumulation_steps", format_number(a.get("gradient_accumulation_steps"))))
    max_steps = a.get("max_steps")
    if isinstance(max_steps, int) and max_steps > 0:
        rows.append(("max_steps", format_number(max_steps)))
    else:
        rows.append(("num_train_epochs", format_number(a.get("num_train_epochs"))))
    rows.append(("weight_decay", format_number(a.get("weight_decay"))))
    rows.append(("lr_scheduler_type", format_number(a.get("lr_scheduler_type"))))
    warm_steps, warm_ratio = a.get("warmup_steps"), a.get("warmup_ratio")
    if isinstance(warm_steps, (int, float)) and warm_steps and warm_steps >= 1:
        warm = f"{format_number(warm_steps)} steps"
    elif isinstance(warm_ratio, (int, float)) and warm_ratio:
        warm = f"ratio {format_number(warm_ratio)}"
    elif isinstance(warm_steps, float) and warm_steps:  # HF 5: warmup_steps < 1 is a ratio
        warm = f"ratio {format_number(warm_steps)}"
    else:
        warm = "none" if a else "—"
    rows.append(("warmup", warm))
    precision = "bf16" if a.get("bf16") else "fp16" if a.get("fp16") else ("fp32" if a else "—")
    if a.get("tf32"):
        precision += " (tf32)"
    rows.append(("precision", precision))
    rows.append(("seed", format_number(a.get("seed"))))
    if a.get("optim"):
        rows.append(("optim", format_number(a.get("optim"))))
    best = best_of(run)
    if best["value"] is not None:
        txt = (f"{best['metric']} = " if best["metric"] else "") + format_number(best["value"])
        if best["step"] is not None:
            txt += f" at step {format_number(best['step'])}"
        rows.append(("best metric", txt + f" (from {best['source']})"))
    else:
        rows.append(("best metric", "—"))
    rows.append(("best checkpoint", best["checkpoint"] or "—"))
    seconds, exact = _runtime(run)
    approximate = "" if exact or seconds is None else " (wall clock, approximate)"
    rows.append(("runtime", _fmt_duration(seconds) + approximate))
    rows.append(("tokens seen", format_number(_tokens_seen(run))))
    hw = begin.get("hardware") or {}
    if hw:
        parts = [str(hw.get("device"))]
        if hw.get("cuda"):
            parts.append(f"{hw['cuda']}" + (f" ×{hw['gpu_count']}" if hw.get("gpu_count", 1) > 1 else ""))
        parts.append(f"torch {hw.get('torch')}")
        if hw.get("cpu_count"):
            parts.append(f"{hw['cpu_count']} CPUs")
        rows.append(("hardware", ", ".join(parts)))
    else:
        rows.append(("hardware", "—"))
    nonfinite = sum(1 for r in run.train_logs if isinstance(r.get("loss"), float) and not math.isfinite(r["loss"]))
    if nonfinite:
        rows.append(("non-finite training losses", format_number(nonfinite)))
    rows.append(("history source", os.path.relpath(run.source, run.run_dir)))
    return rows


# ------------------------------------------------------------------------------------------------
# charts
# ------------------------------------------------------------------------------------------------
def _figure(ncols: int = 1):
    from matplotlib.figure import Figure

    # fixed margins instead of constrained/tight layout: the latter measures every text twice
    # (half the rendering time) and the labels here have predictable sizes
    fig = Figure(figsize=(8.0 if ncols == 1 else 4.6 * ncols, 4.5), dpi=100)
    fig.subplots_adjust(left=0.1 if ncols == 1 else 0.08, right=0.97, bottom=0.12,
                        top=0.9 if ncols == 1 else 0.84, wspace=0.32)
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


def _colour(i: int):
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
               "#bcbd22", "#17becf"]
    return palette[i % len(palette)]


def _style(ax, title: str, ylabel: str, xlabel: str = "step"):
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small", loc="best")


def _maybe_log_scale(ax, values: list[float]):
    pos = [v for v in values if math.isfinite(v)]
    if pos and min(pos) > 0 and max(pos) / min(pos) > 100:
        ax.set_yscale("log")


def _save(fig, path: str):
    """Write the PNG to a temp file renamed into place: a full disk never leaves a cut-off chart."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    tmp = path + ".tmp"
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _charts(runs: list[RunData], out_dir: str, prefix: str) -> list[tuple[str, str, str]]:
    """Writes the PNGs; returns [(file name, title, caption)]."""
    written: list[tuple[str, str, str]] = []
    multi = len(runs) > 1

    def label(run, what):
        return f"{run.name}: {what}" if multi else what

    # (a) loss
    if any(_series(r.train_logs, "loss")[0] or _series(r.eval_logs, "eval_loss")[0] for r in runs):
        fig, (ax,) = _figure()
        weights = []
        for i, run in enumerate(runs):
            c = _colour(i)
            xs, ys = _series(run.train_logs, "loss")
            if xs:
                ax.plot(xs, ys, color=c, alpha=0.3, linewidth=1, label=label(run, "train loss (raw)"))
                n = sum(1 for y in ys if math.isfinite(y))
                weights.append(ema_weight(n))
                sm = ema(ys)  # drawn through non-finite points (the raw line shows them as gaps)
                fx = [x for x, y in zip(xs, sm) if math.isfinite(y)]
                ax.plot(fx, [y for y in sm if math.isfinite(y)], color=c, linewidth=2,
                        label=label(run, "train loss (EMA)"))
                bad = [x for x, y in zip(xs, ys) if not math.isfinite(y)]
                if bad:
                    ax.plot(bad, [float(_interp(x, fx, [y for y in sm if math.isfinite(y)])) for x in bad],
                            linestyle="none", marker="x", markersize=8, color="black",
                            label=label(run, "non-finite loss"))
            xs, ys = _series(run.eval_logs, "eval_loss")
            if xs:
                ax.plot(xs, ys, color=c, linestyle="--", marker="o", markersize=4, linewidth=1.5,
                        label=label(run, "eval loss"))
        _style(ax, "Loss", "loss")
        name = f"{prefix}loss.png"
        _save(fig, os.path.join(out_dir, name))
        wtxt = ", ".join(format_number(w) for w in weights)
        written.append((name, "Loss", "Training loss as logged (faint), its debiased exponential moving "
                        f"average (EMA weight {wtxt}) and evaluation loss (dashed, markers) against the "
                        "optimizer step; × marks a NaN/inf training loss."))

    def simple(key: str, title: str, ylabel: str, file: str, caption: str, logs_attr="train_logs",
               log_scale=False):
        if not any(_series(getattr(r, logs_attr), key)[0] for r in runs):
            return
        fig, (ax,) = _figure()
        allv = []
        for i, run in enumerate(runs):
            xs, ys = _series(getattr(run, logs_attr), key)
            if xs:
                many = len(xs) > 30
                ax.plot(xs, ys, color=_colour(i), linewidth=1.5, marker=None if many else "o", markersize=3,
                        label=run.name if multi else key)
                allv += ys
        if log_scale:
            _maybe_log_scale(ax, allv)
        _style(ax, title, ylabel)
        name = f"{prefix}{file}.png"
        _save(fig, os.path.join(out_dir, name))
        written.append((name, title, caption))

    # (b) learning rate, (c) grad norm
    simple("learning_rate", "Learning rate", "learning rate", "learning_rate",
           "Learning rate at each logging step (schedule and warmup).")
    simple("grad_norm", "Gradient norm", "grad norm (before clipping)", "grad_norm",
           "Global gradient norm at each logging step (log scale when it spans more than 100×).",
           log_scale=True)

    # (d) every eval metric
    metrics: list[str] = []
    for run in runs:
        for r in run.eval_logs:
            for k, v in r.items():
                if k.startswith("eval_") and k not in _EVAL_NON_METRICS and k not in metrics \
                        and isinstance(v, (int, float)) and not isinstance(v, bool):
                    metrics.append(k)
    for k in metrics:
        short = k[len("eval_"):]
        safe = re.sub(r"[^0-9A-Za-z_.-]", "_", short)
        simple(k, f"Eval {short}", short, f"eval_{safe}", f"{k} at each evaluation.", logs_attr="eval_logs")

    # (e) throughput
    keys = [k for k in ("samples_per_second", "tokens_per_second", "mfu")
            if any(any(isinstance(r.get(k), (int, float)) and r.get(k) for r in run.train_logs) for run in runs)]
    if keys:
        fig, axes = _figure(len(keys))
        titles = {"samples_per_second": ("Samples / s", "samples per second"),
                  "tokens_per_second": ("Tokens / s", "tokens per second"),
                  "mfu": ("Model FLOPs utilisation", "MFU")}
        for ax, k in zip(axes, keys):
            for i, run in enumerate(runs):
                xs, ys = _series(run.train_logs, k)
                if xs:
                    ax.plot(xs, ys, color=_colour(i), linewidth=1.5, label=run.name if multi else k)
            top = max((y for run in runs for y in _series(run.train_logs, k)[1] if math.isfinite(y)), default=1.0)
            ax.set_ylim(0, top * 1.12 if top > 0 else 1.0)
            _style(ax, titles[k][0], titles[k][1])
            if ax.get_legend() is not None:
                ax.legend(fontsize="small", loc="lower right")
        fig.suptitle("Training throughput")
        name = f"{prefix}throughput.png"
        _save(fig, os.path.join(out_dir, name))
        written.append((name, "Throughput", "Training throughput over the logging interval ending at each step."))
    return written


# ------------------------------------------------------------------------------------------------
# HTML
# ------------------------------------------------------------------------------------------------
_CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1100px; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { font-size: 1.25em; margin-top: 1.8em;
       border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
.meta { color: #666; font-size: 0.9em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 0.35em 0.7em; text-align: left; vertical-align: top; }
th { background: #f4f6f8; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr:nth-child(even) td { background: #fafbfc; }
.warn { color: #a15c00; }
figure { margin: 1.2em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.88em; }
code { background: #f4f6f8; padding: 0 0.25em; }
"""


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


def _unique_names(runs: list[RunData]) -> None:
    seen: dict[str, int] = {}
    for run in runs:
        n = seen.get(run.name, 0)
        seen[run.name] = n + 1
        if n:
            run.name = f"{run.name} ({n + 1})"


def _output_path(run_dirs: list[str], output: str | None) -> str:
    if output is None:
        return os.path.join(run_dirs[0], "report.html")
    output = os.fspath(output)
    if output.lower().endswith((".html", ".htm")):
        return output
    return os.path.join(output, "report.html")


def write_report(run_dirs, output: str | None = None, *, embed_images: bool = False,
                 title: str | None = None) -> str:
    """Write the HTML report (and its PNGs) for one run directory or a list of them; return its path."""
    if isinstance(run_dirs, (str, os.PathLike)):
        run_dirs = [os.fspath(run_dirs)]
    run_dirs = [os.fspath(d) for d in run_dirs]
    if not run_dirs:
        raise ValueError("write_report: no run directory given")
    runs = [load_run(d) for d in run_dirs]
    _unique_names(runs)
    html_path = os.path.abspath(_output_path(run_dirs, output))
    out_dir = os.path.dirname(html_path)
    os.makedirs(out_dir, exist_ok=True)
    stem = os.path.splitext(os.path.basename(html_path))[0]
    charts = _charts(runs, out_dir, prefix=f"{stem}_")

    names = [r.name for r in runs]
    title = title or ("Training report: " + ", ".join(names))
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(title)}</title>", f"<style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="meta">Generated {_e(time.strftime("%Y-%m-%d %H:%M:%S"))} by trainwright from '
        + ", ".join(f"<code>{_e(r.run_dir)}</code>" for r in runs) + ".</p>",
    ]
    # summary
    summaries = [dict(_summary_rows(r)) for r in runs]
    keys: list[str] = []
    for s in summaries:
        for k in s:
            if k not in keys:
                keys.append(k)
    parts.append("<h2>Summary</h2>")
    parts.append(_table(["", *names], [[k, *[s.get(k, "—") for s in summaries]] for k in keys],
                        warn_row="status"))
    # final metrics
    finals = [final_metrics(r) for r in runs]
    mkeys: list[str] = []
    for f in finals:
        for k in f:
            if k not in mkeys:
                mkeys.append(k)
    if mkeys:
        parts.append("<h2>Final metrics</h2>")
        parts.append('<p class="meta">Last evaluation, last logged training loss and the end-of-training '
                     "summary (<code>train_loss</code> is the mean over the whole run).</p>")
        parts.append(_table(["metric", *names], [[k, *[format_number(f.get(k)) for f in finals]] for k in mkeys],
                            numeric_cols=True))
    # charts
    if charts:
        parts.append("<h2>Charts</h2>")
    for file, chart_title, caption in charts:
        if embed_images:
            with open(os.path.join(out_dir, file), "rb") as f:
                src = "data:image/png;base64," + base64.b64encode(f.read()).decode("ascii")
        else:
            src = file
        parts.append(f'<figure><img src="{_e(src)}" alt="{_e(chart_title)}">'
                     f"<figcaption>{_e(caption)}</figcaption></figure>")
    if not charts:
        parts.append('<p class="warn">No training or evaluation logs to plot yet.</p>')
    parts.append("</body></html>")
    tmp = html_path + ".tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("\n".join(parts) + "\n")
        os.replace(tmp, html_path)
    finally:  # a full disk: the previous report stays as it was, no half-written file is left
        if os.path.exists(tmp):
            os.remove(tmp)
    return html_path


class RunReportCallback(TrainerCallback):
    """Writes ``<output_dir>/report.html`` at train end (main process only). Must come *after*
    ``MetricsJsonlCallback`` in the callback list so the ``train_end`` line is already written.
    A failure is logged as a warning, never raised: the report must not break a finished training."""

    def __init__(self, embed_images: bool = False):
        self.embed_images = embed_images
        self.last_report: str | None = None

    def on_train_end(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        try:
            self.last_report = write_report(args.output_dir, embed_images=self.embed_images)
            logger.info("Run report written to %s", self.last_report)
        except Exception as e:  # noqa: BLE001
            logger.warning("Could not write the run report for %s: %r", args.output_dir, e)


def report_command(paths, output: str | None = None, embed_images: bool = False) -> int:
    """Entry point for ``trainwright report PATH... [--output FILE]``: returns a process exit code."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    try:
        path = write_report(list(paths), output, embed_images=embed_images)
    except (FileNotFoundError, ValueError, OSError) as e:
        print(f"trainwright report: error: {e}", file=sys.stderr)
        return 1
    print(f"Report written to {path}")
    return 0
