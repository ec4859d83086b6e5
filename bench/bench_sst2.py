"""MiniLM fine-tuned on SST-2: trainwright vs transformers.Trainer, side by side in one process.

    python bench/bench_sst2.py                      # defaults, then best settings (about 10 min on 2 CPU cores)
    python bench/bench_sst2.py --identical-batches  # same model, batches, hyperparameters: step time + import time
    python bench/bench_sst2.py --compile            # ours at best settings also with torch_compile=True

The first 4,000 training sentences (the real SST-2 length distribution), batch 32, one epoch; dev accuracy
on all 872 dev sentences. The two trainers alternate (HF first in even repeats, ours first in odd ones),
start from the same weights (the classifier head is seeded) and read the same tokenized datasets.

* defaults: only output_dir, per_device_train_batch_size=32, num_train_epochs=1 and save_strategy="no"
  (and report_to="none", disable_tqdm) are set, for both. Each trainer's own defaults apply: transformers'
  random batches, trainwright's length-grouped ones (train_sampling_strategy="auto").
* best: HF with train_sampling_strategy="group_by_length", optim="adamw_torch_fused" and bf16 where the
  hardware has it; ours with its default length-grouped batches, fused AdamW and the same bf16 choice
  (with --max-tokens N also max_tokens_per_batch=N, with --compile also torch_compile=True).

Appends/replaces a section of docs/benchmarks.md (--no-docs to skip).
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time

import _common as C


def parse():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-rows", type=int, default=4000)
    p.add_argument("--dev-rows", type=int, default=None, help="dev sentences to evaluate on (default: all 872)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--repeats", type=int, default=1,
                   help="alternating repeats of every setting (the fastest run reported, all runs listed)")
    p.add_argument("--settings", default="defaults,best", help="comma list of: defaults, best")
    p.add_argument("--max-tokens", type=int, default=None, help="ours also with max_tokens_per_batch=N in 'best' "
                   "(0: batch size x mean row length; default: no token budget)")
    p.add_argument("--bf16", choices=("auto", "on", "off"), default="auto",
                   help="bf16 autocast in 'best' for both (auto: where the hardware has bf16)")
    p.add_argument("--compile", action="store_true", help="ours with torch_compile=True in 'best'")
    p.add_argument("--identical-batches", action="store_true",
                   help="same model, same batches, same hyperparameters: per-step time ratio and import time")
    p.add_argument("--identical-steps", type=int, default=60)
    p.add_argument("--profile", choices=("auto", "always", "never"), default="auto",
                   help="profile both trainers when a target is missed (auto)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--no-docs", action="store_true")
    p.add_argument("--section", default="sst2", help="the docs/benchmarks.md section to write (another name keeps "
                   "the main section, e.g. for more seeds: --settings defaults --seed 45 --repeats 4 "
                   "--section sst2-seeds)")
    return p.parse_args()


# ------------------------------------------------------------------------------------------ runs
def load_data(opts, tokenizer):
    texts, labels = C.read_sst2("train", opts.train_rows)
    train = C.tokenized(tokenizer, texts, labels)
    texts, labels = C.read_sst2("dev", opts.dev_rows)
    dev = C.tokenized(tokenizer, texts, labels)
    return train, dev


def make_model(seed):
    import torch
    from transformers import AutoModelForSequenceClassification
    torch.manual_seed(seed)  # the new classifier head: the same weights for both trainers
    return AutoModelForSequenceClassification.from_pretrained(C.minilm_path(), num_labels=2)


def trainer_classes(kind):
    if kind == "hf":
        from transformers import Trainer, TrainerCallback, TrainingArguments
    else:
        from trainwright import Trainer, TrainerCallback, TrainingArguments
    return Trainer, TrainingArguments, TrainerCallback


def run_one(kind: str, setting: str, opts, tokenizer, train, dev, extra_args: dict, evaluate: bool = True,
            seed: int | None = None) -> dict:
    Trainer, TrainingArguments, TrainerCallback = trainer_classes(kind)
    seed = opts.seed if seed is None else seed
    C.fresh_gc()
    out = tempfile.mkdtemp(prefix=f"bench_{kind}_")
    kw = dict(output_dir=out, per_device_train_batch_size=opts.batch_size, num_train_epochs=opts.epochs,
              save_strategy="no", report_to="none", disable_tqdm=True, seed=seed)
    kw.update(extra_args)
    args = TrainingArguments(**kw)
    model = make_model(seed)
    timer = C.StepTimer()
    stats, handle = (None, None) if extra_args.get("torch_compile") else C.batch_stats_spy(model)
    trainer = Trainer(model=model, args=args, train_dataset=train, processing_class=tokenizer,
                      compute_metrics=C.accuracy, callbacks=[C.as_callback(TrainerCallback, timer)])
    with C.PeakMemory() as mem:
        t = time.perf_counter()
        result = trainer.train()
        train_s = time.perf_counter() - t
        eval_s, acc = float("nan"), float("nan")
        if evaluate:
            t = time.perf_counter()
            metrics = trainer.evaluate(dev)
            eval_s = time.perf_counter() - t
            acc = metrics.get("eval_accuracy", float("nan"))
    if handle is not None:
        handle.remove()
    # rows trained on: counted at the model's forward (exact with max_steps and token budgets)
    rows = stats["rows"] if stats is not None and stats["rows"] else len(train) * opts.epochs
    row = {"kind": kind, "setting": setting, "seed": seed, "train_s": train_s, "samples_s": rows / train_s,
           "steps": result.global_step, "step_s": timer.steady(), "eval_s": eval_s,
           "eval_samples_s": len(dev) / eval_s if evaluate else float("nan"), "accuracy": acc,
           "peak_mib": mem.mib, "train_loss": result.training_loss}
    if stats is not None and stats["padded"]:
        row["tokens_s"] = stats["tokens"] / train_s
        row["padding"] = 1 - stats["tokens"] / stats["padded"]
    else:
        row["tokens_s"] = row["padding"] = float("nan")
    print(f"  {kind:>4} {setting:<8} seed {seed} train {train_s:7.1f}s  {row['samples_s']:6.1f} samples/s  "
          f"padding {row['padding']:.1%}  eval {eval_s:6.1f}s  acc {acc:.4f}  peak {mem.mib:,.0f} MiB", flush=True)
    del trainer, model
    C.fresh_gc()
    return row


def settings(opts, info, train) -> dict[str, dict[str, dict]]:
    import numpy as np
    bf16 = opts.bf16 == "on" or (opts.bf16 == "auto" and (info["bf16_cpu"] or bool(info["gpu"])))
    mean_len = float(np.mean([len(x) for x in train["input_ids"]]))
    budget = opts.max_tokens or int(round(opts.batch_size * mean_len))  # --max-tokens 0: about batch-size steps
    best_hf = {"train_sampling_strategy": "group_by_length", "optim": "adamw_torch_fused", "bf16": bf16}
    # ours: the default length-grouped batches (the same steps as HF's group_by_length); a token budget on request
    best_ours = {"optim": "adamw_torch_fused", "bf16": bf16}
    if opts.max_tokens is not None:
        best_ours["max_tokens_per_batch"] = budget
    if bf16 and not info["gpu"]:  # transformers asks for use_cpu=True to autocast to bf16 on a CPU
        best_hf["use_cpu"] = best_ours["use_cpu"] = True
    if opts.compile:
        best_ours["torch_compile"] = True
    return {"defaults": {"hf": {}, "ours": {}}, "best": {"hf": best_hf, "ours": best_ours}}


# -------------------------------------------------------------------------------------- profiles
def profile(kind: str, opts, tokenizer, train, steps: int = 8) -> str:
    """torch.profiler top operators (self CPU time) and cProfile top Python functions over a few steps."""
    import cProfile
    import io
    import pstats

    import torch
    Trainer, TrainingArguments, _ = trainer_classes(kind)
    out = tempfile.mkdtemp(prefix=f"prof_{kind}_")
    args = TrainingArguments(output_dir=out, per_device_train_batch_size=opts.batch_size, max_steps=steps,
                             save_strategy="no", report_to="none", disable_tqdm=True, seed=opts.seed)
    trainer = Trainer(model=make_model(opts.seed), args=args, train_dataset=train, processing_class=tokenizer)
    prof = cProfile.Profile()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as tp:
        prof.enable()
        trainer.train()
        prof.disable()
    ops = tp.key_averages().table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=40)
    s = io.StringIO()
    pstats.Stats(prof, stream=s).sort_stats("cumulative").print_stats(18)
    text = s.getvalue()
    text = text[text.find("   ncalls"):] if "   ncalls" in text else text
    import site
    for prefix in sorted(site.getsitepackages() + [str(C.ROOT) + "/"], key=len, reverse=True):
        text = text.replace(prefix.rstrip("/") + "/", "")
    return f"#### {'transformers.Trainer' if kind == 'hf' else 'trainwright'}: {steps} steps, " \
           f"batch {opts.batch_size}\n\n" \
           f"torch.profiler, top operators by self CPU time:\n\n```\n{ops.strip()}\n```\n\n" \
           f"cProfile, top functions by cumulative time:\n\n```\n{text.strip()}\n```\n"


# -------------------------------------------------------------------------------------------- main
def main_compare(opts):
    import torch
    info, load0, tokenizer = C.start()
    train, dev = load_data(opts, tokenizer)
    plan = settings(opts, info, train)
    wanted = [s.strip() for s in opts.settings.split(",") if s.strip()]
    results: dict[str, dict[str, list]] = {s: {"hf": [], "ours": []} for s in wanted}
    print(f"{info['cpu']}, {info['cores']} cores, torch threads {torch.get_num_threads()}, load {load0}")
    for setting in wanted:
        print(f"[{setting}] hf: {plan[setting]['hf'] or 'defaults'}; ours: {plan[setting]['ours'] or 'defaults'}")
        for r in range(opts.repeats):
            for kind in (("hf", "ours") if r % 2 == 0 else ("ours", "hf")):
                results[setting][kind].append(run_one(kind, setting, opts, tokenizer, train, dev, plan[setting][kind],
                                                      seed=opts.seed + r))
    load1 = C.load_average()

    headers = ["setting", "trainer", "train samples/s", "tokens/s (non-pad)", "padding", "steps", "median step s",
               "eval s", "eval samples/s", "dev accuracy (mean)", "peak RSS MiB" if not info["gpu"] else "peak GPU MiB"]
    rows, ratios, med = [], [], {}
    for setting in wanted:
        for kind in ("hf", "ours"):
            m = med[(setting, kind)] = C.best_of(results[setting][kind])
            m["accuracy"] = sum(r["accuracy"] for r in results[setting][kind]) / len(results[setting][kind])
            rows.append([setting, "transformers" if kind == "hf" else "trainwright", m["samples_s"], m["tokens_s"],
                         f"{m['padding']:.1%}" if not math.isnan(m["padding"]) else "n/a", str(m["steps"]),
                         f"{m['step_s']:.3f}", m["eval_s"], m["eval_samples_s"], f"{m['accuracy']:.4f}", m["peak_mib"]])
        h, o = med[(setting, "hf")], med[(setting, "ours")]
        ratios.append([setting, f"{o['samples_s'] / h['samples_s']:.2f}x",
                       f"{o['eval_samples_s'] / h['eval_samples_s']:.2f}x",
                       f"{o['accuracy'] - h['accuracy']:+.4f}", f"{o['peak_mib'] / h['peak_mib']:.2f}x"])
    if "defaults" in wanted and "best" in wanted:
        hd, ob = med[("defaults", "hf")], med[("best", "ours")]
        ratios.append(["ours best / HF defaults", f"{ob['samples_s'] / hd['samples_s']:.2f}x",
                       f"{ob['eval_samples_s'] / hd['eval_samples_s']:.2f}x", f"{ob['accuracy'] - hd['accuracy']:+.4f}",
                       f"{ob['peak_mib'] / hd['peak_mib']:.2f}x"])
    runs_table = C.table(["setting", "trainer", "train samples/s, every run", "eval samples/s, every run",
                          "dev accuracy, every run"],
                         [[st, "transformers" if k == "hf" else "trainwright", C.spread(results[st][k], "samples_s"),
                           C.spread(results[st][k], "eval_samples_s"), C.spread(results[st][k], "accuracy", 4)]
                          for st in wanted for k in ("hf", "ours")])
    main_table = C.table(headers, rows)
    ratio_table = C.table(["comparison (ours / HF)", "train samples/s", "eval samples/s", "accuracy (ours - HF)",
                           "peak memory"], ratios)
    print("\n" + main_table + "\n\n" + ratio_table + "\n\n" + runs_table)

    targets = []
    if "defaults" in wanted:
        h, o = med[("defaults", "hf")], med[("defaults", "ours")]
        tr, ev = o["samples_s"] / h["samples_s"], o["eval_samples_s"] / h["eval_samples_s"]
        met = "met" if tr >= 1.3 and o["accuracy"] >= h["accuracy"] else "NOT met"
        targets.append(f"- Training at defaults >= 1.3x at equal or better accuracy: **{met}** ({tr:.2f}x, accuracy "
                       f"{o['accuracy']:.4f} vs {h['accuracy']:.4f}).")
        targets.append(f"- Evaluation >= 1.5x: **{'met' if ev >= 1.5 else 'NOT met'}** ({ev:.2f}x).")
    missed = any("NOT met" in t for t in targets)

    body = C.header_lines(info, load0, load1) + [
        f"- Data: first {opts.train_rows:,} SST-2 training sentences (real length distribution), batch "
        f"{opts.batch_size}, {opts.epochs:g} epoch; dev accuracy on all {len(dev)} dev sentences; "
        f"{opts.repeats} alternating repeat(s), repeat r with seed {opts.seed} + r for both trainers (the classifier "
        "head's initialisation and the data order change with it): speeds are the fastest run of each (other jobs "
        "only slow a run down), dev accuracy the mean over the seeds; every run in the last table.",
        "- defaults: both with only output_dir, per_device_train_batch_size, num_train_epochs, save_strategy='no' "
        "set (each trainer's own defaults: HF's random batches, trainwright's length-grouped ones)."
        + (f" best: HF {plan['best']['hf']}; ours {plan['best']['ours']}." if "best" in wanted else ""),
        "- train samples/s = rows / wall time of `train()` (everything the user waits for); tokens/s and padding "
        "from the batches the model's forward received; eval = wall time of `evaluate()` on the dev set "
        "(per_device_eval_batch_size 8, both).",
        "- Reference measured earlier on this machine type: transformers.Trainer 5.23 at defaults, 31.3 training "
        "samples/s, 121 eval samples/s, dev accuracy 0.797.",
        "", main_table, "", ratio_table, "", "Every run, in the order run (HF first in even repeats):", "",
        runs_table, "", "Targets:", *targets]
    if missed and opts.profile != "never" or opts.profile == "always":
        print("\nprofiling (a target was missed) ...", flush=True)
        body += ["", "### Where the time goes (a target was missed)", "",
                 "The profiles below (8 steps each at defaults, after the comparison) show which operators "
                 "take the time in each trainer.", "",
                 profile("ours", opts, tokenizer, train), profile("hf", opts, tokenizer, train)]
    if not opts.no_docs:
        title = "SST-2 fine-tuning (MiniLM): defaults and best settings" if opts.section == "sst2" else \
            f"SST-2 fine-tuning (MiniLM): {' and '.join(wanted)}, seeds {opts.seed} to {opts.seed + opts.repeats - 1}"
        C.write_section(opts.section, title, "\n".join(body))


def main_identical(opts):
    import numpy as np
    import torch
    info, load0, tokenizer = C.start()
    train, _ = load_data(opts, tokenizer)
    order = np.random.default_rng(opts.seed).permutation(len(train))
    train = train.select(order.tolist())  # both read it sequentially: the same batches, in the same order
    extra = {"train_sampling_strategy": "sequential", "max_steps": opts.identical_steps,
             "optim": "adamw_torch_fused", "learning_rate": 5e-5, "lr_scheduler_type": "linear"}
    runs = {"hf": [], "ours": []}
    print(f"{info['cpu']}, {info['cores']} cores, torch threads {torch.get_num_threads()}, load {load0}")
    for r in range(max(1, opts.repeats)):
        for kind in (("hf", "ours") if r % 2 == 0 else ("ours", "hf")):
            runs[kind].append(run_one(kind, "identical", opts, tokenizer, train, None, extra, evaluate=False))
    hf, ours = C.best_of(runs["hf"]), C.best_of(runs["ours"])
    print("import times (fresh interpreters) ...", flush=True)
    t_ours = C.import_time("import trainwright")
    t_hf = C.import_time("from transformers import Trainer")
    t_ours_full = C.import_time("from trainwright import Trainer, TrainingArguments")
    load1 = C.load_average()
    rows = [["transformers", f"{hf['step_s']:.4f}", hf["samples_s"], f"{hf['padding']:.1%}", f"{hf['train_loss']:.6f}",
             hf["peak_mib"], f"{t_hf:.2f} s (`from transformers import Trainer`)"],
            ["trainwright", f"{ours['step_s']:.4f}", ours["samples_s"], f"{ours['padding']:.1%}",
             f"{ours['train_loss']:.6f}", ours["peak_mib"],
             f"{t_ours:.2f} s (`import trainwright`), "
             f"{t_ours_full:.2f} s (`from trainwright import Trainer, TrainingArguments`)"]]
    tab = C.table(["trainer", "median step s", "train samples/s", "padding", "train loss", "peak MiB", "import time"],
                  rows)
    ratio = hf["step_s"] / ours["step_s"]
    print("\n" + tab + f"\n\nper-step time ratio HF/ours: {ratio:.3f}x (target >= 1.0x)")
    body = C.header_lines(info, load0, load1) + [
        f"- Same model (MiniLM, seeded head), same {opts.identical_steps} batches of {opts.batch_size} (a fixed "
        "permutation read sequentially by both), same hyperparameters (AdamW fused, lr 5e-5 linear).",
        "- median step s: median of on_step_begin -> on_step_end over the steps after the first 3.", "",
        tab, "", f"Per-step time ratio HF / ours: **{ratio:.3f}x** (target >= 1.0x: "
        f"{'met' if ratio >= 1.0 else 'NOT met'}). Import time: `import trainwright` is lazy ({t_ours:.2f} s); "
        f"importing the classes a script uses takes {t_ours_full:.2f} s against {t_hf:.2f} s for "
        f"`from transformers import Trainer` ({t_hf / t_ours_full:.1f}x less)."]
    if not opts.no_docs:
        C.write_section("sst2-identical", "SST-2 identical batches: per-step overhead and import time", "\n".join(body))


if __name__ == "__main__":
    options = parse()
    sys.exit(main_identical(options) if options.identical_batches else main_compare(options))
