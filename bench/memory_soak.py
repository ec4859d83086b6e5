"""Memory soak: a long run of a tiny model and many evaluate() calls, measuring the process RSS.

    python bench/memory_soak.py [--steps 5000] [--evaluates 1000] [--sample-every 250] [--json out.json]

Training: a tiny BERT classifier on a synthetic datasets.Dataset (variable lengths, dynamic padding), logging
every 50 steps, a checkpoint every 1000 steps (save_total_limit=1). RSS is sampled (after gc.collect()) every
``--sample-every`` steps. Evaluation: ``trainer.evaluate()`` on 64 rows with compute_metrics, called
``--evaluates`` times, RSS sampled every tenth of them. Growth is measured after a warm-up (the first
``--warmup-steps`` steps, the first tenth of the evaluations), when the allocator pools, the dataloader and
the optimizer state exist. ``state.log_history`` grows by design (one entry per log and per evaluation, as in
transformers); its size is reported separately.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _rss_mb() -> float:
    import psutil
    gc.collect()
    return psutil.Process().memory_info().rss / 2**20


def _dataset(n: int, vocab: int, seed: int):
    import numpy as np
    from datasets import Dataset
    rng = np.random.default_rng(seed)
    ids, labels = [], []
    for _ in range(n):
        length = int(rng.integers(8, 48))
        row = rng.integers(5, vocab, size=length)
        ids.append([2] + row.tolist() + [3])
        labels.append(int(row[:4].sum() % 2))
    return Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * len(r) for r in ids], "label": labels})


class _Pad:
    """Minimal tokenizer stand-in for DataCollatorWithPadding: pads input_ids with 0 and attention_mask with 0."""

    pad_token = "[PAD]"
    pad_token_id = 0

    def pad(self, features, padding=True, max_length=None, pad_to_multiple_of=None, return_tensors="pt"):
        import torch
        longest = max(len(f["input_ids"]) for f in features)
        out = {}
        for key in features[0]:
            out[key] = torch.tensor([list(f[key]) + [0] * (longest - len(f[key])) for f in features])
        return out


def _accuracy(eval_pred):
    import numpy as np
    logits, labels = eval_pred
    return {"accuracy": float((np.argmax(logits, -1) == labels).mean())}


def soak(workdir: str, steps: int = 5000, evaluates: int = 1000, sample_every: int = 250, warmup_steps: int = 500,
         log=None) -> dict:
    import torch
    from transformers import BertConfig, BertForSequenceClassification
    from transformers.utils import logging as hf_logging

    from trainwright import (
        DataCollatorWithPadding,
        PrinterCallback,
        ProgressCallback,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    hf_logging.set_verbosity_error()
    log = log or (lambda m: None)
    torch.set_num_threads(1)
    vocab = 1000
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(
        vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64, num_labels=2))
    train, dev = _dataset(256, vocab, 1), _dataset(64, vocab, 2)
    samples: list[tuple[int, float]] = []

    class Sample(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step % sample_every == 0:
                samples.append((state.global_step, round(_rss_mb(), 2)))
                log(f"step {state.global_step}: rss {samples[-1][1]:.1f} MB")
            return control

    args = TrainingArguments(
        output_dir=workdir, max_steps=steps, per_device_train_batch_size=16, per_device_eval_batch_size=16,
        learning_rate=1e-3, logging_steps=50, save_strategy="steps", save_steps=1000, save_total_limit=1,
        report_to="none", disable_tqdm=True, write_report=False, use_cpu=True, dataloader_pin_memory=False)
    trainer = Trainer(model, args, train_dataset=train, eval_dataset=dev, data_collator=DataCollatorWithPadding(_Pad()),
                      compute_metrics=_accuracy, callbacks=[Sample()])
    for cb in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cb)
    start_rss = _rss_mb()
    t0 = time.time()
    trainer.train()
    train_seconds = time.time() - t0
    base = next((rss for step, rss in samples if step >= warmup_steps), samples[0][1])
    train_growth = samples[-1][1] - base

    eval_samples: list[tuple[int, float]] = []
    every = max(1, evaluates // 10)
    t0 = time.time()
    for i in range(1, evaluates + 1):
        trainer.evaluate()
        if i % every == 0:
            eval_samples.append((i, round(_rss_mb(), 2)))
            log(f"evaluate {i}: rss {eval_samples[-1][1]:.1f} MB")
    eval_seconds = time.time() - t0
    eval_growth = eval_samples[-1][1] - eval_samples[0][1]
    history_bytes = len(json.dumps(trainer.state.log_history))
    return {
        "steps": steps, "evaluates": evaluates, "rss_before_train_mb": round(start_rss, 1),
        "train_samples": samples, "train_base_step": warmup_steps,
        "train_growth_mb": round(train_growth, 2), "train_seconds": round(train_seconds, 1),
        "eval_samples": eval_samples, "eval_growth_mb": round(eval_growth, 2), "eval_seconds": round(eval_seconds, 1),
        "log_history_entries": len(trainer.state.log_history), "log_history_json_kb": round(history_bytes / 1024, 1),
        "peak_rss_mb": round(max(r for _, r in samples + eval_samples), 1),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="RSS over a long training run and many evaluate() calls.")
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--evaluates", type=int, default=1000)
    p.add_argument("--sample-every", type=int, default=250)
    p.add_argument("--warmup-steps", type=int, default=500)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="trainwright-soak-") as workdir:
        result = soak(workdir, a.steps, a.evaluates, a.sample_every, a.warmup_steps, log=lambda m: print(m, flush=True))
    print(json.dumps({k: v for k, v in result.items() if not k.endswith("_samples")}, indent=2))
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
