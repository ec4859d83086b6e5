"""Reading one run directory into :class:`RunData`.

* ``metrics.jsonl`` (written by ``MetricsJsonlCallback``; a crashed run without its ``train_end`` line works, a
  last line cut in half is skipped). Without it, the ``log_history`` of the newest ``trainer_state.json``
  (``output_dir`` itself or its newest ``checkpoint-*``) is used.
* Segments: every ``train()`` call (a fresh run, or one resumed after an interruption) starts with a
  ``train_begin`` line; the lines up to the next one are that call's :class:`Segment`.
* Evaluations outside training: ``evaluate()`` calls that are not part of ``train()`` (``trainwright evaluate``,
  a ``trainer.evaluate()`` after training) are kept apart in ``RunData.standalone``: lines marked
  ``"standalone": true`` by the writer, and (files written before that marker existed) lines after a
  ``train_end`` and before the next ``train_begin``. In a ``log_history`` they are the records after the
  end-of-training summary (the one with ``train_runtime``).
"""
from __future__ import annotations

import glob
import json
import os
import re
from dataclasses import dataclass, field

from ..loggers.jsonl import METRICS_FILE, from_jsonable, read_jsonl
from .numbers import is_number

_TRAIN_KEYS = ("loss", "learning_rate", "grad_norm", "samples_per_second", "tokens_per_second")


@dataclass
class Segment:
    """One ``train()`` call of a run."""
    begin: dict | None                            # its train_begin line (None: history without one)
    end: dict | None = None                       # its train_end line (None: interrupted, or still running)
    final_log: dict | None = None                 # its end-of-training summary {"train_runtime": ...}
    last_time: float | None = None                # time of the last line it wrote (dropped lines included)

    def saw(self, rec: dict) -> None:
        t = rec.get("time")
        if is_number(t) and (self.last_time is None or t > self.last_time):
            self.last_time = float(t)


@dataclass
class RunData:
    run_dir: str
    name: str
    source: str                                   # file the history came from
    records: list[dict] = field(default_factory=list)      # training records (no event lines)
    begin: dict | None = None                     # last train_begin line (args, hardware, model)
    first_begin: dict | None = None
    end: dict | None = None                       # train_end line of the last segment, None for a crashed run
    train_logs: list[dict] = field(default_factory=list)
    eval_logs: list[dict] = field(default_factory=list)     # evaluations during training only
    standalone: list[dict] = field(default_factory=list)    # evaluate() records outside training
    final_log: dict | None = None                 # the last segment's {"train_runtime": ..., "train_loss": ...}
    segments: list[Segment] = field(default_factory=list)
    state: dict | None = None                     # newest trainer_state.json, if any
    state_path: str | None = None
    args: dict = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.end is not None or self.final_log is not None

    @property
    def resumed(self) -> bool:
        return len(self.segments) > 1

    @property
    def last_step(self) -> int | None:
        steps = [r.get("step") for r in self.records if is_number(r.get("step"))]
        if self.state and isinstance(self.state.get("global_step"), int):
            steps.append(self.state["global_step"])
        return int(max(steps)) if steps else None


def checkpoint_step(path: str) -> int:
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
        key = (data.get("global_step") or 0, path == top, checkpoint_step(path))
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


def _split_jsonl(run: RunData, lines: list[dict]) -> None:
    """Segments, training records and standalone evaluations of metrics.jsonl's lines."""
    seg: Segment | None = None
    after_end = False                              # between a train_end and the next train_begin
    for rec in lines:
        ev = rec.get("event")
        if ev == "train_begin":
            previous = rec.get("previous_last_time")  # the interrupted call's last line, trimmed on resume
            if seg is not None and is_number(previous):
                seg.saw({"time": previous})
            seg = Segment(begin=rec)
            seg.saw(rec)
            run.segments.append(seg)
            run.first_begin = run.first_begin or rec
            run.begin, after_end = rec, False
        elif ev == "train_end":
            if seg is not None:
                seg.end = rec
                seg.saw(rec)
            after_end = True
        elif ev is None:
            if rec.get("standalone") or after_end:
                run.standalone.append(rec)
                continue
            if seg is None:
                seg = Segment(begin=None)
                run.segments.append(seg)
            seg.saw(rec)
            if _is_final(rec):
                seg.final_log = rec
            run.records.append(rec)
    last = run.segments[-1] if run.segments else None
    run.end = last.end if last else None
    run.final_log = last.final_log if last else None


def _split_history(run: RunData, history: list[dict]) -> None:
    """The same from a trainer_state.json log_history (no event lines, one segment)."""
    finals = [i for i, r in enumerate(history) if _is_final(r)]
    cut = finals[-1] + 1 if finals else len(history)
    seg = Segment(begin=None, final_log=history[finals[-1]] if finals else None)
    run.segments.append(seg)
    run.records = list(history[:cut])
    run.standalone = [r for r in history[cut:] if any(k.startswith("eval_") for k in r)]
    run.final_log = seg.final_log


def _is_final(rec: dict) -> bool:
    """The end-of-training summary (step logs carry train_runtime too when input tokens are counted)."""
    return "train_runtime" in rec and "loss" not in rec


def _classify(run: RunData) -> None:
    for rec in run.records:
        if _is_final(rec):
            continue
        if any(k.startswith("eval_") for k in rec):
            run.eval_logs.append(rec)
        elif any(k in rec for k in _TRAIN_KEYS):
            run.train_logs.append(rec)


def _run_name(run: RunData) -> str:
    name = run.args.get("run_name") or (run.begin or {}).get("run_name")
    if not name or os.path.abspath(str(name)) == run.run_dir or str(name) == run.args.get("output_dir"):
        name = os.path.basename(run.run_dir.rstrip(os.sep)) or run.run_dir
    return str(name)


def load_run(run_dir: str) -> RunData:
    """Read one run directory (see the module docstring). Raises FileNotFoundError when it has
    neither metrics.jsonl nor any trainer_state.json."""
    run_dir = os.path.abspath(run_dir)
    state, state_path = _newest_trainer_state(run_dir)
    metrics_path = os.path.join(run_dir, METRICS_FILE)
    run = RunData(run_dir=run_dir, name="", source=metrics_path, state=state, state_path=state_path)
    if os.path.isfile(metrics_path):
        _split_jsonl(run, read_jsonl(metrics_path))
    elif state is not None:
        run.source = state_path
        _split_history(run, [{k: from_jsonable(v) for k, v in r.items()} for r in state.get("log_history", [])])
    else:
        raise FileNotFoundError(
            f"{run_dir}: no {METRICS_FILE} and no trainer_state.json (in the directory or a checkpoint-* "
            f"subdirectory): is this a trainwright output_dir?"
        )
    _classify(run)
    run.args = (run.begin or {}).get("args") or _load_args_file(run_dir, state_path)
    run.name = _run_name(run)
    return run
