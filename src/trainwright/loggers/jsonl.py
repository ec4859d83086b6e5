"""``<output_dir>/metrics.jsonl``: every ``on_log`` event as one JSON line, always on.

Line layout
-----------
* first line of a (re)started training::

    {"event": "train_begin", "time": ..., "step": ..., "epoch": ..., "run_name": ..., "args": {...},
     "model": "BertForSequenceClassification", "num_parameters": ..., "trainable_parameters": ...,
     "hardware": {"device": "cuda:0", "torch": "2.x", "cuda": "NVIDIA H100 ...", "cpu_count": 16, ...},
     "resumed_from_step": 0, "samples_seen": 0}

  A resumed run's line also has ``"previous_last_time"``: the time of the last line the interrupted run wrote
  (before the trim described below), so the report can count that run's time.
* one line per ``on_log``: ``{"step": state.global_step, "epoch": state.epoch, "time": unix_time, **logs}``;
  a line logged outside ``train()`` (a standalone ``evaluate()``, e.g. ``trainwright evaluate`` or an
  evaluation after training) also has ``"standalone": true``
* last line: ``{"event": "train_end", "time": ..., "step": ..., "epoch": ..., "samples_seen": ...,
  "best_metric": ..., ...}``

Each line is written (one ``write`` call) as soon as it is logged, so a crashed run keeps its history up to the
crash. A full disk or an I/O error drops the line with one warning (earlier lines stay intact, no partial line
is left) and training goes on; see ``safe_fs.AppendLog``.
Non-finite floats are written as the JSON *strings* ``"nan"``, ``"inf"`` and ``"-inf"`` (the file
stays valid JSON for every parser and a NaN loss stays distinguishable from a missing one);
``read_jsonl`` in this module turns them back into floats.

Resuming: on ``on_train_begin`` with ``state.global_step > 0`` the existing file is kept up to and
including ``state.global_step``; later lines (the part of the interrupted run that will be redone)
are dropped, so no step appears twice. A fresh run (``global_step == 0``) starts a new file; the
previous one, if any, is renamed ``metrics.prev.jsonl``.
"""
from __future__ import annotations

import json
import math
import os
import time
from typing import TYPE_CHECKING, Any

from ..callbacks import TrainerCallback
from ..checkpoint.safe_fs import AppendLog, disk_error, warn_once

if TYPE_CHECKING:
    import torch

    from ..args import TrainingArguments
    from ..callbacks import TrainerControl
    from ..state import TrainerState

METRICS_FILE = "metrics.jsonl"
_NONFINITE = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf"),
              "NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


def to_jsonable(value: Any) -> Any:
    """A JSON-safe copy of ``value``: tensors/numpy scalars -> Python numbers, NaN/inf -> strings,
    containers recursively, anything else unknown -> ``str(value)``."""
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in value]
    item = getattr(value, "item", None)  # torch / numpy scalars
    if callable(item):
        try:
            size = getattr(value, "size", 1)
            numel = value.numel() if hasattr(value, "numel") else (size if isinstance(size, int) else 1)
            if numel == 1:
                return to_jsonable(item())
        except Exception:
            pass
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        try:
            return to_jsonable(tolist())
        except Exception:
            pass
    if hasattr(value, "value") and isinstance(value.value, (str, int, float)):  # enums
        return to_jsonable(value.value)
    return str(value)


def from_jsonable(value: Any) -> Any:
    """Inverse of the NaN/inf encoding of ``to_jsonable`` for one value."""
    if isinstance(value, str) and value in _NONFINITE:
        return _NONFINITE[value]
    return value


def read_jsonl(path: str) -> list[dict]:
    """Records of a metrics.jsonl file. Lines that are not valid JSON objects (a line cut short by a
    crash) are skipped; ``"nan"``/``"inf"`` strings are decoded back to floats."""
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict):
                records.append({k: from_jsonable(v) for k, v in rec.items()})
    return records


def _args_dict(args) -> dict:
    to_dict = getattr(args, "to_dict", None)
    if callable(to_dict):
        try:
            return to_jsonable(to_dict())
        except Exception as e:  # never let reporting break training
            return {"error": f"args.to_dict() failed: {e!r}"}
    return to_jsonable(dict(getattr(args, "__dict__", {})))


def _model_info(model) -> dict:
    info: dict[str, Any] = {"model": None, "num_parameters": None, "trainable_parameters": None}
    if model is None:
        return info
    info["model"] = type(model).__name__
    params = getattr(model, "parameters", None)
    if callable(params):
        try:
            total = trainable = 0
            for p in params():
                n = p.numel()
                total += n
                if p.requires_grad:
                    trainable += n
            info["num_parameters"] = total
            info["trainable_parameters"] = trainable
        except Exception:
            pass
    return info


def hardware_info(model: torch.nn.Module | None = None, args: Any = None) -> dict:
    """Device, torch/CUDA versions and CPU count (cheap; no GPU work)."""
    import torch

    hw: dict[str, Any] = {"device": "cpu", "torch": torch.__version__, "cuda": None,
                          "cpu_count": os.cpu_count()}
    device = None
    if model is not None and hasattr(model, "parameters"):
        try:
            device = next(iter(model.parameters())).device
        except Exception:
            device = None
    if device is None and args is not None:
        try:  # HF's args.device is a property that may set up devices or raise ImportError
            device = getattr(args, "device", None)
        except Exception:
            device = None
    if device is not None:
        hw["device"] = str(device)
    try:
        if torch.cuda.is_available():
            index = device.index if getattr(device, "type", None) == "cuda" and device.index is not None \
                else torch.cuda.current_device()
            hw["cuda"] = torch.cuda.get_device_name(index)
            hw["cuda_version"] = torch.version.cuda
            hw["gpu_count"] = torch.cuda.device_count()
    except Exception:
        pass
    try:
        world_size = getattr(args, "world_size", None) if args is not None else None
    except Exception:
        world_size = None
    if isinstance(world_size, int):
        hw["world_size"] = world_size
    return hw


class MetricsJsonlCallback(TrainerCallback):
    """Writes ``<output_dir>/metrics.jsonl`` (see the module docstring). Main process only."""

    def __init__(self, filename: str = METRICS_FILE):
        self.filename = filename
        self._file = None
        self._path = None
        self._in_train = False  # between on_train_begin and on_train_end: lines outside are "standalone"

    # -- file handling -------------------------------------------------------------------------
    def _target(self, args) -> str:
        return os.path.join(args.output_dir, self.filename)

    def _open(self, args):
        path = self._target(args)
        if self._file is not None and self._path == path:
            return self._file
        self._close()
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        self._file = AppendLog(path, what=self.filename)
        self._path = path
        return self._file

    def _close(self):
        if self._file is not None:
            try:
                self._file.close()
            finally:
                self._file = None

    def _write(self, args, record: dict):
        self._open(args).write_line(json.dumps(to_jsonable(record), allow_nan=False))

    def _prepare_file(self, path: str, global_step: int) -> float | None:
        """Start a fresh file for a new run, or trim lines after ``global_step`` for a resumed one; returns the
        time of the last line of the interrupted run (None: nothing to resume)."""
        if not os.path.exists(path):
            return None
        if not global_step:
            os.replace(path, path[: -len(".jsonl")] + ".prev.jsonl" if path.endswith(".jsonl") else path + ".prev")
            return None
        kept, last_time = [], None
        with open(path, encoding="utf-8") as f:
            for line in f:
                stripped = line.strip()
                if not stripped:
                    continue
                try:
                    rec = json.loads(stripped)
                except json.JSONDecodeError:
                    continue  # a line cut short by the crash
                if not isinstance(rec, dict):
                    continue
                t = rec.get("time")
                if isinstance(t, (int, float)) and not rec.get("standalone"):
                    last_time = t if last_time is None else max(last_time, t)
                step = rec.get("step")
                if isinstance(step, (int, float)) and step > global_step:
                    continue
                kept.append(stripped + "\n")
        tmp = path + ".tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                f.writelines(kept)
            os.replace(tmp, path)
        except OSError as e:  # a full disk: keep the file as it is (the redone steps' old lines stay in it)
            if os.path.exists(tmp):
                os.remove(tmp)
            if disk_error(e) is None:
                raise
            warn_once(self.filename, f"Could not trim {path} to step {global_step} for the resumed run: {e}. "
                                     "It keeps the lines of the interrupted run after that step; training goes on.")
        return last_time

    # -- events --------------------------------------------------------------------------------
    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       model: torch.nn.Module | None = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        self._close()
        path = self._target(args)
        os.makedirs(args.output_dir, exist_ok=True)
        previous_last_time = self._prepare_file(path, state.global_step)
        self._in_train = True
        record = {
            "event": "train_begin",
            "time": time.time(),
            "step": state.global_step,
            "epoch": state.epoch,
            "run_name": getattr(args, "run_name", None),
            "args": _args_dict(args),
            **_model_info(model),
            "hardware": hardware_info(model, args),
            "resumed_from_step": state.global_step,
            "samples_seen": getattr(state, "samples_seen", None),
        }
        if previous_last_time is not None:
            record["previous_last_time"] = previous_last_time
        self._write(args, record)

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, logs: dict | None = None,
               **kwargs: Any) -> None:
        if not state.is_world_process_zero or not logs:
            return
        record = {"step": state.global_step, "epoch": state.epoch, "time": time.time(), **logs}
        if not self._in_train:
            record["standalone"] = True
        self._write(args, record)

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        self._write(args, {
            "event": "train_end",
            "time": time.time(),
            "step": state.global_step,
            "epoch": state.epoch,
            "max_steps": state.max_steps,
            "num_input_tokens_seen": state.num_input_tokens_seen,
            "samples_seen": getattr(state, "samples_seen", None),
            "total_flos": state.total_flos,
            "best_metric": state.best_metric,
            "best_global_step": state.best_global_step,
            "best_model_checkpoint": state.best_model_checkpoint,
            "skipped_nonfinite_steps": getattr(state, "skipped_nonfinite_steps", None),
        })
        # keep the handle closable: evaluate() after train() reopens the file in append mode
        self._in_train = False
        self._close()

    def __del__(self):
        try:
            self._close()
        except Exception:
            pass
