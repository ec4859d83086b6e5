"""Pre-padded data (transformers' run_glue.py defaults): trainwright vs transformers.Trainer, alternating processes.

    python bench/bench_prepadded.py                        # MRPC (1 epoch) and 2,000 SST-2 sentences (1 epoch)
    python bench/bench_prepadded.py --tasks mrpc --epochs 3 --repeats 2

run_glue.py's settings: every row tokenized with ``padding="max_length", max_length=128, truncation=True``
(``pad_to_max_length=True``, its default), ``data_collator=default_data_collator``, ``processing_class=tokenizer``,
batch 32, learning rate 2e-5, seed 42; MiniLM (all-MiniLM-L6-v2) with a new 2-class head (seeded: the same
weights for both). The same arguments for both trainers; each trainer's own defaults do the rest
(transformers: random batches of 128 columns each; trainwright: batches cut to their longest real row and
rows grouped by real length, ``trim_padding`` and ``train_sampling_strategy="auto"``).

Every run is its own process (``--worker``), HF first in even repeats and ours first in odd ones; the
parent collects one JSON line per run and writes a section of docs/benchmarks.md (``--no-docs`` to skip).
With ``--profile auto`` a missed 2x target adds a torch.profiler table of a few steps of each trainer.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import subprocess
import sys
import tempfile
import time

import _common as C

TARGET = 2.0


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default="mrpc,sst2", help="comma list of: mrpc, sst2")
    p.add_argument("--epochs", type=float, default=1.0, help="run_glue.py's README uses 3 (slow on a CPU)")
    p.add_argument("--sst2-rows", type=int, default=2000, help="SST-2 training sentences (the first N)")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--learning-rate", type=float, default=2e-5)
    p.add_argument("--max-steps", type=int, default=-1, help="stop after N optimizer steps (both trainers)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--profile", choices=("auto", "always", "never"), default="auto")
    p.add_argument("--no-docs", action="store_true")
    p.add_argument("--section", default="prepadded", help="the docs/benchmarks.md section to write (another name "
                   "keeps the main one, e.g. --tasks mrpc --max-steps 40 --repeats 2 --section prepadded-mrpc)")
    p.add_argument("--paired-steps", type=int, default=0,
                   help="also N steps of each trainer's batches alternating in ONE process on one model (fwd + bwd "
                        "+ AdamW step timed): the ratio without the machine's load drifting between processes")
    p.add_argument("--worker", nargs=2, metavar=("KIND", "TASK"), help=argparse.SUPPRESS)
    p.add_argument("--paired-worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--profile-worker", nargs=2, metavar=("KIND", "TASK"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ------------------------------------------------------------------------------------------ data
def read_task(task: str, split: str, limit: int | None = None):
    """(first sentences, second sentences or None, labels) of MRPC or SST-2 from ../shared/data."""
    if task == "mrpc":
        with open(C.DATA / "mrpc" / f"{split}.tsv", encoding="utf-8-sig", newline="") as f:
            rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
        rows = rows[:limit] if limit else rows
        return [r[3] for r in rows], [r[4] for r in rows], [int(r[0]) for r in rows]
    texts, labels = C.read_sst2(split, limit)
    return texts, None, labels


def prepadded(tokenizer, task, split, opts, limit=None):
    """run_glue.py's preprocessing: padding="max_length" at tokenisation, a datasets.Dataset as from .map()."""
    from datasets import Dataset
    first, second, labels = read_task(task, split, limit)
    args = (first,) if second is None else (first, second)
    enc = tokenizer(*args, padding="max_length", max_length=opts.max_length, truncation=True)
    return Dataset.from_dict({**{k: enc[k] for k in enc.keys()}, "label": labels})


def metrics(eval_pred):
    import numpy as np
    logits, labels = eval_pred
    logits = logits[0] if isinstance(logits, tuple) else logits
    preds = np.argmax(logits, axis=-1)
    tp = float(((preds == 1) & (labels == 1)).sum())
    f1 = 2 * tp / max(1.0, float((preds == 1).sum() + (labels == 1).sum()))
    return {"accuracy": float((preds == labels).mean()), "f1": f1}


def build(kind: str, task: str, opts, out_dir: str):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    if kind == "hf":
        from transformers import Trainer, TrainingArguments, default_data_collator
    else:
        from trainwright import Trainer, TrainingArguments, default_data_collator
    tokenizer = AutoTokenizer.from_pretrained(C.minilm_path())
    train = prepadded(tokenizer, task, "train", opts, opts.sst2_rows if task == "sst2" else None)
    dev = prepadded(tokenizer, task, "dev", opts)
    torch.manual_seed(opts.seed)  # the new classifier head: the same weights for both trainers
    model = AutoModelForSequenceClassification.from_pretrained(C.minilm_path(), num_labels=2)
    args = TrainingArguments(output_dir=out_dir, per_device_train_batch_size=opts.batch_size,
                             learning_rate=opts.learning_rate, num_train_epochs=opts.epochs, max_steps=opts.max_steps,
                             seed=opts.seed, save_strategy="no", report_to="none", disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=dev, processing_class=tokenizer,
                      data_collator=default_data_collator, compute_metrics=metrics)
    return trainer, model, train, dev


# ------------------------------------------------------------------------------------------ one run
def worker(kind: str, task: str, opts) -> dict:
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()
    out = tempfile.mkdtemp(prefix=f"bench_prepad_{kind}_")
    trainer, model, train, dev = build(kind, task, opts, out)
    stats, handle = C.batch_stats_spy(model)
    with C.PeakMemory() as mem:
        t = time.perf_counter()
        result = trainer.train()
        train_s = time.perf_counter() - t
        t = time.perf_counter()
        m = trainer.evaluate()
        eval_s = time.perf_counter() - t
    handle.remove()
    return {"kind": kind, "task": task, "train_s": train_s, "samples_s": stats["rows"] / train_s,
            "tokens_s": stats["tokens"] / train_s, "padding": 1 - stats["tokens"] / max(1, stats["padded"]),
            "steps": result.global_step, "train_loss": result.training_loss, "eval_s": eval_s,
            "eval_samples_s": len(dev) / eval_s, "accuracy": m["eval_accuracy"], "f1": m["eval_f1"],
            "peak_mib": mem.mib, "rows": len(train), "dev_rows": len(dev)}


def profile_worker(kind: str, task: str, opts, steps: int = 6) -> str:
    import torch
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()
    opts.max_steps = steps
    trainer, *_ = build(kind, task, opts, tempfile.mkdtemp(prefix=f"bench_prepad_prof_{kind}_"))
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof, \
            contextlib.redirect_stdout(io.StringIO()):  # the trainers' own printed metrics stay out of the table
        trainer.train()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12)


def paired_worker(task: str, opts) -> dict:
    """The two trainers' training batches (their own dataloaders over the same data) alternating on one model:
    the median time of a training step (forward, backward, AdamW) for each, and the samples/s ratio."""
    import statistics

    import torch
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()
    loaders = {}
    for kind in ("hf", "ours"):
        trainer, model, *_ = build(kind, task, opts, tempfile.mkdtemp(prefix=f"bench_prepad_pair_{kind}_"))
        loaders[kind] = iter(trainer.get_train_dataloader())
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=opts.learning_rate)
    times, rows, widths = {"hf": [], "ours": []}, {"hf": 0, "ours": 0}, {"hf": [], "ours": []}
    for i in range(opts.paired_steps + 2):
        for kind in (("hf", "ours") if i % 2 == 0 else ("ours", "hf")):
            batch = next(loaders[kind])
            t = time.perf_counter()
            model(**batch).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if i >= 2:  # two warm-up steps each
                times[kind].append(time.perf_counter() - t)
                rows[kind] += int(batch["input_ids"].shape[0])
                widths[kind].append(int(batch["input_ids"].shape[1]))
    rate = {k: rows[k] / sum(times[k]) for k in times}
    return {"task": task, "steps": opts.paired_steps, "hf_step_s": statistics.median(times["hf"]),
            "ours_step_s": statistics.median(times["ours"]), "hf_samples_s": rate["hf"], "ours_samples_s": rate["ours"],
            "ratio": rate["ours"] / rate["hf"], "hf_width": statistics.mean(widths["hf"]),
            "ours_width": statistics.mean(widths["ours"])}


def spawn(flag: str, kind: str, task: str, argv: list[str]) -> str:
    cmd = [sys.executable, os.path.abspath(__file__), *argv, flag, kind, task]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if done.returncode:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
        raise SystemExit(f"{kind} {task} run failed (exit {done.returncode})")
    return done.stdout


# ------------------------------------------------------------------------------------------ parent
def main(opts, argv):
    info, load_start = C.machine(), C.load_average()
    tasks = [t.strip() for t in opts.tasks.split(",") if t.strip()]
    rows: list[dict] = []
    for task in tasks:
        for r in range(opts.repeats):
            for kind in (("hf", "ours") if r % 2 == 0 else ("ours", "hf")):
                out = spawn("--worker", kind, task, argv)
                row = json.loads(out.strip().splitlines()[-1])
                row["repeat"] = r
                rows.append(row)
                print(f"  {task:<5} {kind:>4} train {row['train_s']:7.1f}s {row['samples_s']:6.1f} samples/s  "
                      f"padding {row['padding']:.1%}  eval {row['eval_s']:5.1f}s  acc {row['accuracy']:.4f}  "
                      f"f1 {row['f1']:.4f}  peak {row['peak_mib']:,.0f} MiB", flush=True)
    paired = []
    for task in tasks if opts.paired_steps > 0 else []:
        cmd = [sys.executable, os.path.abspath(__file__), *argv, "--paired-worker", task]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
            raise SystemExit(f"paired run of {task} failed")
        paired.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"  {task:<5} paired: HF {paired[-1]['hf_step_s']:.2f} s/step, ours {paired[-1]['ours_step_s']:.2f} "
              f"s/step: {paired[-1]['ratio']:.2f}x samples/s", flush=True)
    load_end = C.load_average()
    body, missed = report(rows, tasks, opts)
    if paired:
        body += "\n\nThe same comparison with the load held equal: each trainer's own training batches " \
                "(its dataloader over the same data) alternating step by step in one process on one MiniLM " \
                "(forward, backward, AdamW " \
                "step timed; trainer overheads excluded, which are equal per step, " \
                "see the identical-batches section):\n\n"
        body += C.table(["task", "steps each", "HF median step s", "ours median step s", "HF mean width",
                         "ours mean width", "samples/s ratio"],
                        [[p["task"].upper(), str(p["steps"]), f"{p['hf_step_s']:.3f}", f"{p['ours_step_s']:.3f}",
                          f"{p['hf_width']:.1f}", f"{p['ours_width']:.1f}", f"**{p['ratio']:.2f}x**"] for p in paired])
    if (missed and opts.profile == "auto") or opts.profile == "always":
        body += "\n\nWhere the time goes (torch.profiler over the first 6 steps of " \
                f"{tasks[0].upper()}, top operators by self CPU time; trainwright's first batch is its longest, " \
                "so these 6 steps are not its average):\n"
        for kind in ("ours", "hf"):
            body += f"\n{kind}:\n\n```\n{spawn('--profile-worker', kind, tasks[0], argv).strip()}\n```\n"
    text = "\n".join(C.header_lines(info, load_start, load_end)) + "\n\n" + body
    print("\n" + text)
    if not opts.no_docs:
        title = "Pre-padded data (run_glue.py settings): MiniLM on " + " and ".join(t.upper() for t in tasks)
        C.write_section(opts.section, title + ("" if opts.section == "prepadded" else f" ({opts.section})"), text)


def report(rows, tasks, opts):
    lines, missed = [], False
    setting = (f"max_length {opts.max_length} pre-padded, batch {opts.batch_size}, lr {opts.learning_rate:g}, "
               f"{opts.epochs:g} epoch(s){f', max_steps {opts.max_steps}' if opts.max_steps > 0 else ''}, "
               f"seed {opts.seed}, {opts.repeats} alternating repeat(s) in separate processes (the fastest run "
               f"reported; accuracy the median)")
    lines.append(f"Settings: {setting}.\n")
    table_rows = []
    for task in tasks:
        per = {k: C.best_of([r for r in rows if r["task"] == task and r["kind"] == k]) for k in ("hf", "ours")}
        ratio = per["ours"]["samples_s"] / per["hf"]["samples_s"]
        missed = missed or ratio < TARGET
        n = per["ours"]["rows"]
        for kind in ("hf", "ours"):
            r = per[kind]
            table_rows.append([f"{task.upper()} ({n:,} rows)", "transformers" if kind == "hf" else "trainwright",
                               r["samples_s"], f"{r['padding']:.1%}", r["steps"], f"{r['train_loss']:.4f}",
                               r["eval_samples_s"], f"{r['accuracy']:.4f}", f"{r['f1']:.4f}", r["peak_mib"]])
        lines.append(f"- {task.upper()}: **{ratio:.2f}x** training samples/s (target {TARGET:g}x: "
                     f"{'met' if ratio >= TARGET else 'missed'}); evaluation "
                     f"{per['ours']['eval_samples_s'] / per['hf']['eval_samples_s']:.2f}x; dev accuracy "
                     f"{per['ours']['accuracy']:.4f} vs {per['hf']['accuracy']:.4f}")
    lines.append("")
    lines.append(C.table(["task", "trainer", "train samples/s", "padding", "steps", "train loss", "eval samples/s",
                          "dev accuracy", "dev F1", "peak MiB"], table_rows))
    if opts.repeats > 1:
        runs = []
        for task in tasks:
            for r in range(opts.repeats):
                pair = {x["kind"]: x for x in rows if x["task"] == task and x["repeat"] == r}
                if "hf" in pair and "ours" in pair:
                    runs.append([task.upper(), str(r), "HF first" if r % 2 == 0 else "ours first",
                                 pair["hf"]["samples_s"], pair["ours"]["samples_s"],
                                 f"{pair['ours']['samples_s'] / pair['hf']['samples_s']:.2f}x"])
        lines += ["", "Every pair of runs (the load of the shared machine moves both):", "",
                  C.table(["task", "repeat", "order", "HF samples/s", "ours samples/s", "ratio"], runs)]
    return "\n".join(lines), missed


if __name__ == "__main__":
    argv = sys.argv[1:]
    opts = parse(argv)
    if opts.worker:
        print(json.dumps(worker(*opts.worker, opts)))
    elif opts.profile_worker:
        print(profile_worker(*opts.profile_worker, opts))
    elif opts.paired_worker:
        print(json.dumps(paired_worker(opts.paired_worker, opts)))
    else:
        main(opts, argv)
