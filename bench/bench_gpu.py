"""GPU benchmark: trainwright vs transformers.Trainer in alternating processes (run by ``bench/gpu.sh``).

    bench/gpu.sh             # on a GPU machine: estimated 4-6 minutes on one H200; writes a section of benchmarks.md
    bench/gpu.sh --smoke     # the same code paths on the CPU with tiny sizes (under a minute), for CI

Nothing is downloaded and ``datasets`` is not needed (every worker process makes ``import datasets`` fail, so a
run proves that trainwright imports and trains without it). Models are built from configs with random weights;
the data are random token ids whose lengths follow real distributions (quantiles measured with the MiniLM
tokenizer, embedded below), padded by a word-level tokenizer built in memory (``tokenizers``), so both
trainers run their default tokenizer path (``processing_class=tokenizer``: a padding collator).

Scenarios (each trainer runs them all in one process; the next process is the other trainer; HF first in even
repeats, ours first in odd ones):

* ``cls-sst2`` / ``cls-imdb``: BERT-base-sized sequence classification (110M parameters), bf16, batch 32, the
  trainers' defaults otherwise (transformers: random batches; trainwright: length-grouped batches). Lengths of
  SST-2 sentences (median 10 tokens, max 66) and of IMDB reviews truncated at 512 (median 248). One epoch of
  ``steps x 32`` rows. Target: >= 1.5x samples/s.
* ``clm``: a ~124M-parameter Llama, documents with log-normal lengths (median 300 tokens, 16 to 1024), bf16.
  transformers: DataCollatorForLanguageModeling(mlm=False), 16 documents per step (padded to the longest);
  trainwright: ``pack_dataset(max_length=1024)`` + DataCollatorForPackedRows, as many rows per step as carry the
  same tokens. The same documents, one epoch. Target: >= 2x non-padding tokens/s.
* ``checkpoint``: the same Llama with AdamW, ``save_steps`` every 10 steps: the time the training loop is
  blocked by each checkpoint (the gap between a save step's end and the next step's start, less the median
  gap of the other steps), the wait at the end of train(), and the checkpoint's size.

Reported for each: throughput (rows/s and non-padding tokens/s over the wall time of train()), padding of the
batches the model received, the median step time, peak GPU memory (max_memory_allocated), and MFU = 6 x
parameters x non-padding tokens/s / the chip's dense bf16 peak (989 TFLOP/s for H100/H200; attention FLOPs not
counted).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "benchmarks.md"
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10G": 125e12}
TARGETS = {"cls-sst2": 1.5, "cls-imdb": 1.5, "clm": 2.0}
ALL = ("cls-sst2", "cls-imdb", "clm", "checkpoint")

# token lengths (special tokens included) at the 0, 5, ..., 100th percentiles, MiniLM tokenizer
SST2_Q = [3, 4, 4, 5, 6, 6, 7, 8, 8, 9, 10, 11, 13, 14, 16, 18, 20, 23, 27, 33, 66]  # 67,349 train sentences
IMDB_Q = [46, 91, 130, 151, 164, 174, 183, 195, 211, 226, 248, 268, 294, 326, 369, 408, 471, 512, 512, 512,
          512]  # the 1,000 reviews of ../shared/data/imdb, truncated at 512

SIZES = {
    "gpu": {"bert": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
            "llama": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=12,
                          intermediate_size=2560),
            "vocab_bert": 30522, "vocab_llama": 32000, "cls_batch": 32, "cls-sst2_steps": 300,
            "cls-imdb_steps": 120, "clm_docs": 16, "clm_steps": 100, "clm_len": 1024, "ckpt_steps": 40,
            "ckpt_every": 10, "ckpt_docs": 8, "ckpt_len": 256},
    "smoke": {"bert": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
              "llama": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                            intermediate_size=64),
              "vocab_bert": 1000, "vocab_llama": 1000, "cls_batch": 8, "cls-sst2_steps": 6, "cls-imdb_steps": 3,
              "clm_docs": 4, "clm_steps": 4, "clm_len": 256, "ckpt_steps": 6, "ckpt_every": 2, "ckpt_docs": 4,
              "ckpt_len": 64},
}


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU, results not written to the docs")
    p.add_argument("--scenarios", default=",".join(ALL), help=f"comma list of: {', '.join(ALL)}")
    p.add_argument("--repeats", type=int, default=None,
                   help="alternating repeats (default 2, 1 with --smoke; fewer if the budget runs out)")
    p.add_argument("--budget-s", type=float, default=420.0, help="no new repeat once it would end after this")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--docs", default=None, help="markdown file to write the section into (default: "
                   "docs/benchmarks.md; with --smoke a file under --out)")
    p.add_argument("--out", default=os.environ.get("OUT") or None,
                   help="folder for gpu_bench.md and gpu_bench.jsonl (default: $OUT when set)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--jsonl", default=None, help=argparse.SUPPRESS)
    opts = p.parse_args(argv)
    if opts.repeats is None:
        opts.repeats = 1 if opts.smoke else 2
    return opts


# ------------------------------------------------------------------------------------------ worker side
def block_datasets():
    """Make ``import datasets`` fail in this process (the GPU machine has no datasets)."""
    sys.modules["datasets"] = None  # type: ignore[assignment]


def offline_tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {t: i for i, t in enumerate(special)}
    vocab.update({f"w{i}": i for i in range(len(special), vocab_size)})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")


def sample_lengths(quantiles, n, rng):
    import numpy as np
    u = rng.random(n)
    return np.clip(np.round(np.interp(u, np.linspace(0, 1, len(quantiles)), quantiles)), 3, None).astype(int)


def classification_rows(quantiles, n, vocab, rng):
    rows = []
    for length in sample_lengths(quantiles, n, rng):
        body = rng.integers(5, vocab, size=int(length) - 2).tolist()
        ids = [2] + body + [3]
        rows.append({"input_ids": ids, "attention_mask": [1] * len(ids), "label": int(body[0] % 2)})
    return rows


def document_rows(n, max_len, vocab, rng, median=300.0):
    import numpy as np
    lengths = np.clip(np.round(rng.lognormal(math.log(min(median, max_len / 3)), 0.9, size=n)), 16, max_len)
    return [{"input_ids": rng.integers(5, vocab, size=int(k)).tolist()} for k in lengths]


def trainer_api(kind):
    if kind == "hf":
        import transformers as lib
    else:
        import trainwright as lib
    return lib


class Gaps:
    """Wall time between each step's end and the next step's start (where logging/saving/evaluating run), and
    from the last step's end to the end of train()."""

    def __init__(self):
        self.end, self.step, self.gaps = None, 0, {}

    def on_step_begin(self, args, state, control, **kw):
        if self.end is not None:
            self.gaps[self.step] = time.perf_counter() - self.end

    def on_step_end(self, args, state, control, **kw):
        self.end, self.step = time.perf_counter(), state.global_step


def as_callback(base, gaps: Gaps):
    class _Cb(base):
        def on_step_begin(self, args, state, control, **kw):
            gaps.on_step_begin(args, state, control)

        def on_step_end(self, args, state, control, **kw):
            gaps.on_step_end(args, state, control)
    return _Cb()


def forward_spy(model):
    """Rows, real tokens (attention mask; every token without one) and padded tokens of the training forwards."""
    stats = {"rows": 0, "tokens": 0, "padded": 0}

    def hook(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None or not module.training:
            return
        mask = kwargs.get("attention_mask")
        stats["rows"] += ids.shape[0]
        stats["padded"] += ids.numel()
        stats["tokens"] += int(mask.sum()) if mask is not None and mask.dim() == 2 else ids.numel()
    return stats, model.register_forward_pre_hook(hook, with_kwargs=True)


def measure(kind, name, trainer, model, stats, gaps, real_tokens=None):
    import torch
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    result = trainer.train()
    if cuda:
        torch.cuda.synchronize()
    train_s = time.perf_counter() - t0
    end_wait = time.perf_counter() - gaps.end if gaps.end is not None else float("nan")
    steady = [g for s, g in sorted(gaps.gaps.items())]
    params = sum(p.numel() for p in model.parameters())
    tokens = real_tokens if real_tokens is not None else stats["tokens"]
    row = {"kind": kind, "scenario": name, "train_s": train_s, "steps": result.global_step,
           "samples_s": stats["rows"] / train_s, "tokens_s": tokens / train_s,
           "padding": 1 - tokens / max(1, stats["padded"]), "params": params,
           "peak_mib": (torch.cuda.max_memory_allocated() / 2**20) if cuda else float("nan"),
           "loss": result.training_loss, "end_wait_s": end_wait,
           "gap_ms": 1000 * statistics.median(steady) if steady else float("nan")}
    peak = next((v for k, v in PEAK_BF16.items() if cuda and k in torch.cuda.get_device_name(0)), None)
    row["mfu"] = 6.0 * params * row["tokens_s"] / peak if peak else float("nan")
    return row, gaps


def run_classification(kind, name, size, opts, rng):
    import torch
    lib = trainer_api(kind)
    from transformers import BertConfig, BertForSequenceClassification
    cuda = torch.cuda.is_available()
    tokenizer = offline_tokenizer(size["vocab_bert"])
    batch, steps = size["cls_batch"], size[f"{name}_steps"]
    rows = classification_rows(SST2_Q if name == "cls-sst2" else IMDB_Q, batch * steps, size["vocab_bert"], rng)
    torch.manual_seed(opts.seed)
    model = BertForSequenceClassification(BertConfig(vocab_size=size["vocab_bert"], max_position_embeddings=512,
                                                     num_labels=2, pad_token_id=0, **size["bert"]))
    gaps = Gaps()
    args = lib.TrainingArguments(output_dir=tempfile.mkdtemp(prefix=f"gpu_{kind}_"), per_device_train_batch_size=batch,
                                 num_train_epochs=1, bf16=cuda, save_strategy="no", report_to="none",
                                 disable_tqdm=True, seed=opts.seed)
    trainer = lib.Trainer(model=model, args=args, train_dataset=rows, processing_class=tokenizer,
                          callbacks=[as_callback(lib.TrainerCallback, gaps)])
    stats, handle = forward_spy(model)
    row, _ = measure(kind, name, trainer, model, stats, gaps)
    handle.remove()
    shutil.rmtree(args.output_dir, ignore_errors=True)
    return row


def llama(size, seed):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=size["vocab_llama"], max_position_embeddings=2048, pad_token_id=0,
                         bos_token_id=2, eos_token_id=3, tie_word_embeddings=True, use_cache=False, **size["llama"])
    config._attn_implementation = "sdpa"
    return LlamaForCausalLM(config)


def run_clm(kind, size, opts, rng):
    import torch
    lib = trainer_api(kind)
    cuda = torch.cuda.is_available()
    tokenizer = offline_tokenizer(size["vocab_llama"])
    docs = document_rows(size["clm_docs"] * size["clm_steps"], size["clm_len"], size["vocab_llama"], rng)
    real = sum(len(d["input_ids"]) for d in docs)
    model = llama(size, opts.seed)
    common = dict(output_dir=tempfile.mkdtemp(prefix=f"gpu_clm_{kind}_"), num_train_epochs=1, bf16=cuda,
                  save_strategy="no", report_to="none", disable_tqdm=True, seed=opts.seed, learning_rate=3e-4)
    if kind == "hf":
        collator = lib.DataCollatorForLanguageModeling(tokenizer, mlm=False)
        args, data = lib.TrainingArguments(per_device_train_batch_size=size["clm_docs"], **common), docs
    else:
        from trainwright.data.packing import DataCollatorForPackedRows, pack_dataset
        data = pack_dataset(docs, max_length=size["clm_len"])
        rows = max(1, round(size["clm_docs"] * (real / len(docs)) / size["clm_len"]))
        collator = DataCollatorForPackedRows(pad_token_id=tokenizer.pad_token_id)
        args = lib.TrainingArguments(per_device_train_batch_size=rows, **common)
    gaps = Gaps()
    trainer = lib.Trainer(model=model, args=args, train_dataset=data, data_collator=collator,
                          callbacks=[as_callback(lib.TrainerCallback, gaps)])
    stats, handle = forward_spy(model)
    row, _ = measure(kind, "clm", trainer, model, stats, gaps, real_tokens=real)
    row["samples_s"] = len(docs) / row["train_s"]  # documents/s
    handle.remove()
    shutil.rmtree(args.output_dir, ignore_errors=True)
    return row


def run_checkpoint(kind, size, opts, rng):
    import torch
    lib = trainer_api(kind)
    cuda = torch.cuda.is_available()
    tokenizer = offline_tokenizer(size["vocab_llama"])
    every, steps = size["ckpt_every"], size["ckpt_steps"]
    docs = document_rows(size["ckpt_docs"] * steps, size["ckpt_len"], size["vocab_llama"], rng, median=120.0)
    model = llama(size, opts.seed)
    out = tempfile.mkdtemp(prefix=f"gpu_ckpt_{kind}_")
    args = lib.TrainingArguments(output_dir=out, per_device_train_batch_size=size["ckpt_docs"], max_steps=steps,
                                 bf16=cuda, save_strategy="steps", save_steps=every, report_to="none",
                                 disable_tqdm=True, seed=opts.seed, learning_rate=3e-4)
    gaps = Gaps()
    trainer = lib.Trainer(model=model, args=args, train_dataset=docs,
                          data_collator=lib.DataCollatorForLanguageModeling(tokenizer, mlm=False),
                          callbacks=[as_callback(lib.TrainerCallback, gaps)])
    stats, handle = forward_spy(model)
    row, _ = measure(kind, "checkpoint", trainer, model, stats, gaps)
    handle.remove()
    saves = [s for s in gaps.gaps if s % every == 0]
    others = [g for s, g in gaps.gaps.items() if s % every]
    base = statistics.median(others) if others else 0.0
    stalls = [gaps.gaps[s] - base for s in saves]
    row["stall_ms"] = 1000 * statistics.median(stalls) if stalls else float("nan")
    row["stall_max_ms"] = 1000 * max(stalls) if stalls else float("nan")
    row["saves"] = len(saves) + 1  # the final save is at the end of train(): end_wait_s
    ckpt = sorted(Path(out).glob("checkpoint-*"))
    row["ckpt_mib"] = (sum(f.stat().st_size for f in ckpt[-1].rglob("*") if f.is_file()) / 2**20) if ckpt else 0.0
    shutil.rmtree(out, ignore_errors=True)
    return row


def worker(opts):
    block_datasets()
    import numpy as np
    import torch
    import transformers
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()
    size = SIZES["smoke" if opts.smoke else "gpu"]
    env = {"torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
           "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
           "datasets_importable": _importable("datasets")}
    for name in [s for s in opts.scenarios.split(",") if s]:
        rng = np.random.default_rng(opts.seed)  # the same data for both trainers
        t = time.perf_counter()
        if name.startswith("cls-"):
            row = run_classification(opts.worker, name, size, opts, rng)
        elif name == "clm":
            row = run_clm(opts.worker, size, opts, rng)
        elif name == "checkpoint":
            row = run_checkpoint(opts.worker, size, opts, rng)
        else:
            raise SystemExit(f"unknown scenario {name!r} (choose from {', '.join(ALL)})")
        row.update(env, wall_s=time.perf_counter() - t)
        with open(opts.jsonl, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"  {opts.worker:>4} {name:<10} {row['samples_s']:9.1f} rows/s {row['tokens_s']:11.0f} tokens/s  "
              f"padding {row['padding']:.1%}  peak {row['peak_mib']:,.0f} MiB  ({row['wall_s']:.1f}s)", flush=True)
        import gc
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _importable(name):
    try:
        __import__(name)
        return True
    except ImportError:
        return False


# ------------------------------------------------------------------------------------------ parent
def main(opts, argv):
    start = time.perf_counter()
    out = Path(opts.out) if opts.out else None
    if opts.smoke and out is None:
        out = Path(tempfile.mkdtemp(prefix="gpu_bench_smoke_"))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    jsonl = (out or Path(tempfile.mkdtemp(prefix="gpu_bench_"))) / "gpu_bench.jsonl"
    jsonl.unlink(missing_ok=True)
    load_start = _load()
    repeats_run = 0
    for r in range(max(1, opts.repeats)):
        elapsed = time.perf_counter() - start
        if r and elapsed / r * (r + 1) > opts.budget_s:
            print(f"stopping after {r} repeat(s): another would end after the {opts.budget_s:.0f} s budget")
            break
        for kind in (("hf", "ours") if r % 2 == 0 else ("ours", "hf")):
            cmd = [sys.executable, os.path.abspath(__file__), *argv, "--worker", kind, "--jsonl", str(jsonl)]
            done = subprocess.run(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"})
            if done.returncode:
                raise SystemExit(f"the {kind} worker failed (exit {done.returncode})")
        repeats_run += 1
    rows = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]
    text = report(rows, opts, repeats_run, load_start, _load(), time.perf_counter() - start, argv)
    print("\n" + text)
    docs = Path(opts.docs) if opts.docs else (out / "benchmarks.md" if opts.smoke else DOCS)
    write_section(docs, text)
    if out is not None:
        (out / "gpu_bench.md").write_text(text + "\n")
        if docs.resolve() != (out / "benchmarks.md").resolve() and docs.exists():
            shutil.copy(docs, out / "benchmarks.md")
    print(f"\nwrote {docs}" + (f" and {out}/gpu_bench.md, {jsonl}" if out else ""))


def _load():
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def best(rows):
    """Fastest run for throughputs and times (other jobs only slow a run down), median for the rest."""
    out = dict(rows[0])
    for key, value in rows[0].items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        vals = [r[key] for r in rows if isinstance(r.get(key), (int, float)) and not math.isnan(r[key])]
        if not vals:
            continue
        out[key] = max(vals) if key.endswith(("_s", "mfu")) and key not in ("train_s", "wall_s", "end_wait_s") \
            else min(vals) if key in ("train_s", "wall_s") else statistics.median(vals)
    return out


def fmt(x, digits=1):
    if isinstance(x, float):
        return "n/a" if math.isnan(x) else f"{x:,.{digits}f}"
    return str(x)


def report(rows, opts, repeats, load_start, load_end, wall, argv):
    env = rows[0] if rows else {}
    date = time.strftime("%Y-%m-%d %H:%M")
    lines = [f"- Date: {date}; {'SMOKE RUN (tiny sizes, CPU): not a measurement' if opts.smoke else 'measurement'}",
             f"- Machine: {env.get('gpu') or 'no GPU (CPU)'}, {os.cpu_count()} CPU cores; torch {env.get('torch')}, "
             f"transformers {env.get('transformers')}, Python {env.get('python')}; `datasets` importable in the "
             f"workers: {env.get('datasets_importable')}",
             f"- Load average at start: {load_start}; at end: {load_end}; {repeats} alternating repeat(s), "
             f"{wall:.0f} s in all",
             f"- Command: `{' '.join(['bench/gpu.sh', *argv])}`", ""]
    table = []
    summary = []
    for name in [s for s in opts.scenarios.split(",") if s]:
        per = {k: [r for r in rows if r["scenario"] == name and r["kind"] == k] for k in ("hf", "ours")}
        if not per["hf"] or not per["ours"]:
            continue
        per = {k: best(v) for k, v in per.items()}
        for kind in ("hf", "ours"):
            r = per[kind]
            table.append([name, "transformers" if kind == "hf" else "trainwright", fmt(r["samples_s"]),
                          fmt(r["tokens_s"], 0), f"{r['padding']:.1%}", str(int(r["steps"])), fmt(r["gap_ms"], 2),
                          fmt(r["peak_mib"], 0), fmt(r["mfu"] * 100 if not math.isnan(r["mfu"]) else r["mfu"], 1),
                          fmt(r.get("stall_ms", float("nan")), 0), fmt(r.get("end_wait_s", float("nan")), 2)])
        if name in TARGETS:
            key = "tokens_s" if name == "clm" else "samples_s"
            ratio = per["ours"][key] / per["hf"][key]
            what = "non-padding tokens/s" if name == "clm" else "samples/s"
            summary.append(f"- {name}: **{ratio:.2f}x** {what} (target {TARGETS[name]:g}x: "
                           f"{'met' if ratio >= TARGETS[name] else 'missed'}); peak memory "
                           f"{fmt(per['ours']['peak_mib'], 0)} vs {fmt(per['hf']['peak_mib'], 0)} MiB")
        else:
            summary.append(f"- checkpoint ({per['ours']['params'] / 1e6:.0f}M parameters + AdamW state, "
                           f"{fmt(per['ours'].get('ckpt_mib', float('nan')), 0)} MiB ours / "
                           f"{fmt(per['hf'].get('ckpt_mib', float('nan')), 0)} MiB HF on disk): training blocked "
                           f"**{fmt(per['ours']['stall_ms'], 0)} ms** per checkpoint vs "
                           f"{fmt(per['hf']['stall_ms'], 0)} ms (median of the mid-run saves); wait at the end of "
                           f"train() {fmt(per['ours']['end_wait_s'], 2)} s vs {fmt(per['hf']['end_wait_s'], 2)} s")
    head = ["scenario", "trainer", "rows/s", "real tokens/s", "padding", "steps", "step gap ms", "peak MiB",
            "MFU %", "save stall ms", "end wait s"]
    widths = [max(len(h), *(len(r[i]) for r in table)) if table else len(h) for i, h in enumerate(head)]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    body = "\n".join(lines + summary + ["", line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
                     + [line(r) for r in table])
    return body + ("\n\nrows/s: documents/s for clm. step gap: the median time between a step's end and the next "
                   "step's start (the loop's own work). MFU on non-padding tokens.")


def write_section(path: Path, body: str, key: str = "gpu"):
    title = "GPU: BERT-base classification, 124M causal LM with packing, checkpoint stall (bench/gpu.sh)"
    text = path.read_text() if path.exists() else "# Benchmarks: trainwright vs transformers.Trainer\n"
    start, end = f"<!-- bench:{key} -->", f"<!-- /bench:{key} -->"
    section = f"{start}\n## {title}\n\n{body.strip()}\n{end}"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        text = before + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


if __name__ == "__main__":
    argv = sys.argv[1:]
    opts = parse(argv)
    if opts.worker:
        worker(opts)
    else:
        main(opts, [a for a in argv])
