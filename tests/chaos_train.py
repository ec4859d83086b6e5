"""A small, deterministic training run that resumes from its newest checkpoint: the subject of the chaos test.

    python tests/chaos_train.py OUTPUT_DIR [--max-steps 30] [--save-steps 3]

A tiny BERT classifier (dropout on, so the restored RNG state matters) trains on synthetic data (a python list
of dicts, no tokenizer, so a restart is quick) with gradient accumulation over several epochs, saving every
``--save-steps`` steps and keeping the newest 3 checkpoints. If OUTPUT_DIR holds a complete checkpoint the run
resumes from it (``resume_from_checkpoint=True``). It appends to OUTPUT_DIR/chaos_events.log:

    start <pid> resume=<checkpoint dir or ->       when training is about to start
    step <global_step> <sha256 of all weights>     after every optimizer step (the trajectory, for diagnosis)
    done <pid>                                     after final.safetensors was written (atomically)

and writes the final weights to OUTPUT_DIR/final.safetensors. Killing it at any moment and starting it again
until it prints ``done`` must give the same final.safetensors as one uninterrupted run, bit for bit.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

EVENTS = "chaos_events.log"
FINAL = "final.safetensors"


def log_event(output_dir: str, line: str) -> None:
    # one write() of a short line in append mode: whole lines, even when the process is killed
    fd = os.open(os.path.join(output_dir, EVENTS), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def weights_hash(model) -> str:
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().contiguous().cpu().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def build_data(n_rows: int, seq_len: int, vocab: int, seed: int = 1234):
    import numpy as np
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n_rows):
        ids = rng.integers(5, vocab, size=seq_len)
        label = int(ids[: seq_len // 2].sum() % 2)  # learnable from the tokens
        rows.append({"input_ids": [2] + ids.tolist(), "attention_mask": [1] * (seq_len + 1), "label": label})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("output_dir")
    p.add_argument("--max-steps", type=int, default=30)
    p.add_argument("--save-steps", type=int, default=3)
    p.add_argument("--rows", type=int, default=40)
    p.add_argument("--seed", type=int, default=7)
    a = p.parse_args(argv)

    global torch
    import torch
    from transformers import BertConfig, BertForSequenceClassification
    from transformers.utils import logging as hf_logging

    from trainwright import Trainer, TrainerCallback, TrainingArguments
    from trainwright.checkpoint import latest_checkpoint

    hf_logging.set_verbosity_error()
    torch.set_num_threads(1)
    os.makedirs(a.output_dir, exist_ok=True)
    vocab = 200
    config = BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=32, num_labels=2,
                        hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    torch.manual_seed(a.seed)
    model = BertForSequenceClassification(config)
    data = build_data(a.rows, 15, vocab)
    args = TrainingArguments(
        output_dir=a.output_dir, max_steps=a.max_steps, per_device_train_batch_size=4,
        gradient_accumulation_steps=2, learning_rate=3e-3, warmup_steps=3, lr_scheduler_type="linear",
        weight_decay=0.01, save_strategy="steps", save_steps=a.save_steps, save_total_limit=3,
        logging_steps=1, seed=a.seed, report_to="none", disable_tqdm=True, write_report=False, use_cpu=True,
        dataloader_pin_memory=False)

    out_dir = a.output_dir

    class StepLog(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kw):
            log_event(out_dir, f"step {state.global_step} {weights_hash(model)}")
            return control

    trainer = Trainer(model, args, train_dataset=data, callbacks=[StepLog()])
    resume = latest_checkpoint(a.output_dir)
    log_event(a.output_dir, f"start {os.getpid()} resume={resume or '-'} t={time.time():.3f}")
    trainer.train(resume_from_checkpoint=resume)

    from safetensors.torch import save_file
    final = os.path.join(a.output_dir, FINAL)
    tmp = final + f".tmp-{os.getpid()}"
    save_file({k: v.contiguous() for k, v in trainer.model.state_dict().items()}, tmp)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)
    log_event(a.output_dir, f"done {os.getpid()} step={trainer.state.global_step}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
