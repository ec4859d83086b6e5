"""Memory-lean causal-LM loss: transformers.Trainer vs trainwright (plain loss) vs trainwright (chunked_cross_entropy).

    python bench/bench_chunked_loss.py                    # Llama, vocab 32,000, hidden 256, 4 layers, 8 x 512 tokens
    python bench/bench_chunked_loss.py --steps 10 --repeats 3

A small Llama built from a config (random init, the same seed for all), trained ``--steps`` optimizer steps on
tiny Shakespeare (MiniLM token ids, cut into rows of ``--seq`` tokens, labels = inputs, the same rows in the same
order for all three: a sequential sampler), fp32, AdamW. Each run is its own subprocess, the three kinds
alternating order over the repeats, so every peak is that run's alone:

* peak memory: the child's peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) and, above it, the peak
  minus the RSS just before ``train()`` (model, data and libraries loaded): what training itself added.
  On CUDA: ``torch.cuda.max_memory_allocated()``;
* tokens/s: the rows' tokens / wall time of ``train()``;
* the loss: the last logged step's loss and ``train_loss`` (the mean over the steps).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import _common as C

KINDS = ("hf", "plain", "chunked")
NAMES = {"hf": "transformers.Trainer", "plain": "trainwright (plain loss)",
         "chunked": "trainwright (chunked_cross_entropy=True)"}


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vocab", type=int, default=32_000)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--no-docs", action="store_true")
    p.add_argument("--child", choices=KINDS, help=argparse.SUPPRESS)
    p.add_argument("--rows", help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ------------------------------------------------------------------------------------------ child
def rss_kib() -> int:
    with open("/proc/self/status") as f:
        return int(re.search(r"^VmRSS:\s+(\d+)", f.read(), re.M).group(1))


def child(opts) -> dict:
    import resource

    import numpy as np
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()
    torch.manual_seed(opts.seed)
    config = LlamaConfig(vocab_size=opts.vocab, hidden_size=opts.hidden, intermediate_size=opts.hidden * 8 // 3,
                         num_hidden_layers=opts.layers, num_attention_heads=max(1, opts.hidden // 64),
                         max_position_embeddings=opts.seq, tie_word_embeddings=False, use_cache=False)
    config._attn_implementation = "sdpa"
    model = LlamaForCausalLM(config)
    rows = np.load(opts.rows, allow_pickle=False)
    data = [{"input_ids": torch.from_numpy(r), "labels": torch.from_numpy(r)} for r in rows]
    out = tempfile.mkdtemp(prefix=f"chunked_{opts.child}_")
    common = dict(output_dir=out, max_steps=opts.steps, per_device_train_batch_size=opts.batch, learning_rate=opts.lr,
                  save_strategy="no", report_to="none", disable_tqdm=True, logging_steps=1, seed=opts.seed,
                  optim="adamw_torch")
    if opts.child == "hf":
        import torch.utils.data as tud
        from transformers import Trainer, TrainingArguments

        class SequentialTrainer(Trainer):  # the same rows in the same order as trainwright's "sequential"
            def _get_train_sampler(self, *args, **kwargs):
                return tud.SequentialSampler(self.train_dataset)
        trainer = SequentialTrainer(model=model, args=TrainingArguments(**common), train_dataset=data)
    else:
        from trainwright import Trainer, TrainingArguments
        args = TrainingArguments(train_sampling_strategy="sequential", chunked_cross_entropy=opts.child == "chunked",
                                 **common)
        trainer = Trainer(model=model, args=args, train_dataset=data)
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    before = rss_kib()
    t = time.perf_counter()
    result = trainer.train()
    train_s = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"kind": opts.child, "train_s": train_s, "tokens_s": opts.batch * opts.seq * opts.steps / train_s,
            "peak_mib": peak / 1024, "train_peak_mib": (peak - before) / 1024, "before_mib": before / 1024,
            "cuda_peak_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
            "last_loss": losses[-1] if losses else float("nan"), "train_loss": result.training_loss,
            "steps": result.global_step}


# ------------------------------------------------------------------------------------------ parent
def make_rows(opts, tokenizer, path):
    import numpy as np
    text = (C.DATA / "tinyshakespeare" / "input.txt").read_text()
    need = opts.batch * opts.steps * opts.seq
    ids = []
    for start in range(0, len(text), 20_000):
        ids += tokenizer(text[start:start + 20_000], add_special_tokens=False)["input_ids"]
        if len(ids) >= need:
            break
    arr = np.asarray(ids[:need], dtype=np.int64).reshape(opts.batch * opts.steps, opts.seq)
    assert arr.max() < opts.vocab, "the tokenizer's ids must fit the model's vocabulary"
    np.save(path, arr, allow_pickle=False)


def run_child(kind, opts, rows_path) -> dict:
    argv = [sys.executable, os.path.abspath(__file__), "--child", kind, "--rows", rows_path]
    for name in ("vocab", "hidden", "layers", "seq", "batch", "steps", "lr", "seed"):
        argv += [f"--{name}", str(getattr(opts, name))]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(os.cpu_count() or 1))}
    proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"the {kind} run failed (exit {proc.returncode})")
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"  {kind:>7}: peak {row['peak_mib']:,.0f} MiB (training added {row['train_peak_mib']:,.0f})  "
          f"{row['tokens_s']:,.0f} tokens/s  last loss {row['last_loss']:.4f}", flush=True)
    return row


def main(opts):
    info, load0, tokenizer = C.start()
    rows_path = os.path.join(tempfile.mkdtemp(prefix="chunked_rows_"), "rows.npy")
    make_rows(opts, tokenizer, rows_path)
    print(f"{info['cpu']}, {info['cores']} cores, load {load0}; Llama vocab {opts.vocab:,}, hidden {opts.hidden}, "
          f"{opts.layers} layers, {opts.batch} x {opts.seq} tokens, {opts.steps} steps")
    runs = {k: [] for k in KINDS}
    for r in range(opts.repeats):
        order = KINDS[r % 3:] + KINDS[:r % 3]
        for kind in order:
            runs[kind].append(run_child(kind, opts, rows_path))
    load1 = C.load_average()
    best = {k: C.best_of(v) for k, v in runs.items()}  # memory, losses: medians; tokens/s: the fastest run
    cuda = best["hf"]["cuda_peak_mib"] is not None
    rows = []
    for kind in KINDS:
        m = best[kind]
        rows.append([NAMES[kind], m["peak_mib"], m["train_peak_mib"]] + ([m["cuda_peak_mib"]] if cuda else []) +
                    [m["tokens_s"], C.spread(runs[kind], "tokens_s", 0), f"{m['last_loss']:.4f}",
                     f"{m['train_loss']:.4f}"])
    headers = ["trainer", "peak RSS MiB", "RSS added by train() MiB"] + (["CUDA peak MiB"] if cuda else []) + \
        ["tokens/s (best)", "tokens/s (every run)", "last step loss", "train_loss"]
    tab = C.table(headers, rows)
    key = "cuda_peak_mib" if cuda else "train_peak_mib"
    saving = {ref: 1 - best["chunked"][key] / best[ref][key] for ref in ("hf", "plain")}
    speed = best["chunked"]["tokens_s"] / best["hf"]["tokens_s"]
    what = "CUDA peak" if cuda else "memory added by train()"
    summary = (f"Chunked loss vs transformers.Trainer: **{saving['hf']:.0%} less {what}** "
               f"({saving['plain']:.0%} less than trainwright's plain loss); peak RSS of the whole process "
               f"{1 - best['chunked']['peak_mib'] / best['hf']['peak_mib']:.0%} lower; tokens/s {speed:.2f}x; "
               f"last-step loss {best['chunked']['last_loss']:.4f} vs {best['hf']['last_loss']:.4f}.")
    print("\n" + tab + "\n\n" + summary)
    body = C.header_lines(info, load0, load1) + [
        f"- Model: Llama from a config (random init, seed {opts.seed}), vocab {opts.vocab:,}, hidden {opts.hidden}, "
        f"{opts.layers} layers, untied head, fp32, AdamW (lr {opts.lr}). Data: tiny Shakespeare as MiniLM token ids, "
        f"rows of {opts.seq} tokens, labels = inputs, batch {opts.batch} ({opts.batch * opts.seq:,} tokens per "
        f"step), {opts.steps} steps, the same rows in the same order for all three.",
        f"- Each run in its own process, {opts.repeats} repeats, the order rotating. Peak RSS: "
        "`resource.getrusage(RUSAGE_SELF).ru_maxrss` of the child at the end; \"added by train()\": that peak minus "
        "the RSS just before `train()` (libraries, model and data loaded). Memory and losses: the median over the "
        "repeats; tokens/s: the fastest run (other jobs only slow a run down).",
        f"- The plain loss keeps a {opts.batch * opts.seq:,} x {opts.vocab:,} fp32 logits tensor "
        f"({opts.batch * opts.seq * opts.vocab * 4 / 2**20:,.0f} MiB) and its log-softmax and gradient; the chunked "
        f"loss computes {min(opts.batch * opts.seq, max(64, (2**24 // opts.vocab) // 64 * 64))} tokens' logits at a "
        "time and recomputes them in the backward.", "", tab, "", summary]
    if not opts.no_docs:
        C.write_section("chunked-loss", "Memory-lean causal-LM loss (chunked cross-entropy), Llama with a 32k "
                        "vocabulary", "\n".join(body))


if __name__ == "__main__":
    options = parse()
    if options.child:
        print(json.dumps(child(options)))
    else:
        sys.exit(main(options))
