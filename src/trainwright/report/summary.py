"""The report's tables: per run key arguments, model, hardware, status, whole-run runtime and samples, best
metric/checkpoint, final metrics, and the evaluations run outside training.

A resumed run (several ``train()`` calls, see ``runs.Segment``) is summed over its calls: the runtime is each
call's ``train_runtime`` (an interrupted call: the wall time from its ``train_begin`` line to the last line it
wrote), samples are the whole run's (the ``train_end`` line's ``samples_seen``, which the Trainer carries over a
resume), and the ``train_*_per_second`` rates are recomputed from those. ``train_loss`` is the Trainer's own
whole-run mean: it restores the running loss sums from the checkpoint on resume.
"""
from __future__ import annotations

import math
import os
import time
from typing import Any

from ..loggers.jsonl import METRICS_FILE
from .numbers import fmt_duration, format_number, is_number
from .runs import RunData, checkpoint_step

EVAL_NON_METRICS = {"eval_runtime", "eval_samples_per_second", "eval_steps_per_second", "eval_loss"}
FINAL_KEYS = ("train_runtime", "train_samples_per_second", "train_steps_per_second", "train_loss", "total_flos")
_NOT_METRICS = {"step", "epoch", "time", "standalone"}


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
            step = checkpoint_step(ckpt) if checkpoint_step(ckpt) >= 0 else None
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


# ------------------------------------------------------------------------------------------------
# whole-run figures (summed over the train() calls of a resumed run)
# ------------------------------------------------------------------------------------------------
def runtime(run: RunData) -> tuple[float | None, bool]:
    """(seconds over all train() calls, exact). Exact: every call's ``train_runtime`` is known; an
    interrupted call counts the wall time from its train_begin line to the last line it wrote."""
    total, exact, known = 0.0, True, False
    for seg in run.segments:
        final = seg.final_log or {}
        if is_number(final.get("train_runtime")):
            total, known = total + float(final["train_runtime"]), True
            continue
        start = (seg.begin or {}).get("time")
        if is_number(start) and seg.last_time is not None:
            total, known = total + max(seg.last_time - float(start), 0.0), True
        exact = exact and seg.end is not None
    return (total, exact) if known else (None, False)


def samples_seen(run: RunData) -> tuple[int | None, bool]:
    """(training samples of the whole run, exact)."""
    v = (run.end or {}).get("samples_seen")
    if is_number(v) and v > 0:
        return int(v), True
    st = run.state or {}
    if run.finished and is_number(st.get("samples_seen")) and st["samples_seen"] > 0 \
            and st.get("global_step") == run.last_step:
        return int(st["samples_seen"]), True
    total = 0.0
    for seg in run.segments:  # rate x time of each call: rounding makes it approximate
        final = seg.final_log or {}
        if not (is_number(final.get("train_samples_per_second")) and is_number(final.get("train_runtime"))):
            return _samples_from_steps(run), False
        total += final["train_samples_per_second"] * final["train_runtime"]
    return (int(round(total)), False) if run.segments and total > 0 else (None, False)


def _samples_from_steps(run: RunData) -> int | None:
    """Steps x the global batch (a crashed run: no summary, no train_end line); full batches assumed."""
    a = run.args
    world = ((run.begin or {}).get("hardware") or {}).get("world_size") or 1
    batch, accum = a.get("per_device_train_batch_size"), a.get("gradient_accumulation_steps") or 1
    if not (run.last_step and is_number(batch) and is_number(accum) and is_number(world)) \
            or a.get("max_tokens_per_batch"):
        return None
    return int(run.last_step * batch * accum * world)


def tokens_seen(run: RunData) -> int | None:
    for source in ([run.end] if run.end else []) + list(reversed(run.records)):
        v = source.get("num_input_tokens_seen")
        if is_number(v) and v > 0:
            return int(v)
    v = (run.state or {}).get("num_input_tokens_seen")
    return int(v) if is_number(v) and v > 0 else None


def _whole_run_rates(run: RunData) -> dict[str, Any]:
    """train_runtime and the rates of a finished resumed run, over all of its train() calls."""
    seconds, _ = runtime(run)
    if not (run.resumed and run.final_log and seconds):
        return {}
    out: dict[str, Any] = {"train_runtime": round(seconds, 4)}
    samples, _ = samples_seen(run)
    if samples:
        out["train_samples_per_second"] = round(samples / seconds, 3)
    first = (run.first_begin or {}).get("step") or 0
    if run.last_step is not None:
        out["train_steps_per_second"] = round((run.last_step - first) / seconds, 3)
    return out


def final_metrics(run: RunData) -> dict[str, Any]:
    out: dict[str, Any] = {}
    losses = [r for r in run.train_logs if "loss" in r]
    if losses:
        out["last training loss"] = losses[-1]["loss"]
    if run.eval_logs:
        for k, v in run.eval_logs[-1].items():
            if k.startswith("eval_"):
                out[k] = v
    if run.final_log:
        for k in FINAL_KEYS:
            if k in run.final_log:
                out[k] = run.final_log[k]
        out.update(_whole_run_rates(run))
    return out


# ------------------------------------------------------------------------------------------------
# summary table
# ------------------------------------------------------------------------------------------------
def status(run: RunData) -> str:
    step = run.last_step
    where = f" at step {format_number(step)}" if step is not None else ""
    if run.source and os.path.basename(run.source) == "trainer_state.json":
        return f"history from {os.path.relpath(run.source, run.run_dir)} ({METRICS_FILE} missing){where}"
    resumed = ""
    if run.resumed:
        steps = [format_number(s.begin.get("step")) for s in run.segments[1:] if s.begin]
        resumed = f" (resumed at step {', '.join(steps)})"
    if run.finished:
        return f"finished{where}{resumed}"
    return f"incomplete: no train_end (crashed, interrupted or still running); last log{where}{resumed}"


def _model_row(begin: dict) -> str | None:
    if not begin.get("model"):
        return None
    model = begin["model"]
    if begin.get("num_parameters") is not None:
        model += f" ({format_number(begin['num_parameters'])} params"
        if begin.get("trainable_parameters") is not None and begin["trainable_parameters"] != begin["num_parameters"]:
            model += f", {format_number(begin['trainable_parameters'])} trainable"
        model += ")"
    return model


def _argument_rows(a: dict) -> list[tuple[str, str]]:
    rows = [(k, format_number(a.get(k))) for k in ("learning_rate", "per_device_train_batch_size",
                                                   "gradient_accumulation_steps")]
    max_steps = a.get("max_steps")
    if isinstance(max_steps, int) and max_steps > 0:
        rows.append(("max_steps", format_number(max_steps)))
    else:
        rows.append(("num_train_epochs", format_number(a.get("num_train_epochs"))))
    rows += [(k, format_number(a.get(k))) for k in ("weight_decay", "lr_scheduler_type")]
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
    rows.append(("precision", precision + (" (tf32)" if a.get("tf32") else "")))
    rows.append(("seed", format_number(a.get("seed"))))
    if a.get("optim"):
        rows.append(("optim", format_number(a.get("optim"))))
    return rows


def _best_rows(run: RunData) -> list[tuple[str, str]]:
    best = best_of(run)
    if best["value"] is None:
        return [("best metric", "—"), ("best checkpoint", best["checkpoint"] or "—")]
    txt = (f"{best['metric']} = " if best["metric"] else "") + format_number(best["value"])
    if best["step"] is not None:
        txt += f" at step {format_number(best['step'])}"
    return [("best metric", txt + f" (from {best['source']})"), ("best checkpoint", best["checkpoint"] or "—")]


def _progress_rows(run: RunData) -> list[tuple[str, str]]:
    seconds, exact = runtime(run)
    text = fmt_duration(seconds) + ("" if exact or seconds is None else " (wall clock, approximate)")
    if run.resumed and seconds is not None:
        text += f", over {len(run.segments)} train() calls"
    samples, samples_exact = samples_seen(run)
    return [("runtime", text), ("tokens seen", format_number(tokens_seen(run))),
            ("samples seen", format_number(samples) + ("" if samples_exact or samples is None else " (approximate)"))]


def _hardware_row(begin: dict) -> str:
    hw = begin.get("hardware") or {}
    if not hw:
        return "—"
    parts = [str(hw.get("device"))]
    if hw.get("cuda"):
        parts.append(f"{hw['cuda']}" + (f" ×{hw['gpu_count']}" if hw.get("gpu_count", 1) > 1 else ""))
    parts.append(f"torch {hw.get('torch')}")
    if hw.get("cpu_count"):
        parts.append(f"{hw['cpu_count']} CPUs")
    return ", ".join(parts)


def summary_rows(run: RunData) -> list[tuple[str, str]]:
    begin = run.begin or {}
    rows: list[tuple[str, str]] = [("status", status(run))]
    model = _model_row(begin)
    if model:
        rows.append(("model", model))
    rows += _argument_rows(run.args)
    rows += _best_rows(run)
    rows += _progress_rows(run)
    rows.append(("hardware", _hardware_row(begin)))
    nonfinite = sum(1 for r in run.train_logs if isinstance(r.get("loss"), float) and not math.isfinite(r["loss"]))
    if nonfinite:
        rows.append(("non-finite training losses", format_number(nonfinite)))
    rows.append(("history source", os.path.relpath(run.source, run.run_dir)))
    return rows


# ------------------------------------------------------------------------------------------------
# evaluations outside training
# ------------------------------------------------------------------------------------------------
def standalone_columns(runs: list[RunData]) -> list[tuple[str, dict[str, Any]]]:
    """[(column header, {metric: value})] for every evaluate() record outside training."""
    multi = len(runs) > 1
    cols = []
    for run in runs:
        for rec in run.standalone:
            head = f"step {format_number(rec.get('step'))}"
            if is_number(rec.get("time")):
                head += ", " + time.strftime("%Y-%m-%d %H:%M", time.localtime(rec["time"]))
            metrics = {k: v for k, v in rec.items() if k not in _NOT_METRICS}
            cols.append((f"{run.name}: {head}" if multi else head, metrics))
    return cols
