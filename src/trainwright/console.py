"""What the Trainer tells the user in words: the "Running training" header (INFO records, as transformers, shown
with ``log_level="info"``) and the ``log_metrics`` table."""
from __future__ import annotations

import logging
import sys
from typing import Any

from .data.samplers import TokenBudgetBatchSampler
from .distributed import unwrap_model

logger = logging.getLogger("trainwright")


def print_training_header(trainer: Any, plan: Any, resumed: str | None, own_loader: bool) -> None:
    """The run's size, batches, order, steps and device (main process only)."""
    if not trainer.dist.is_main_process:
        return
    args, dist = trainer.args, trainer.dist
    model = unwrap_model(trainer.model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total_batch = args.per_device_train_batch_size * args.gradient_accumulation_steps * dist.world_size
    epochs = plan.num_epochs if plan.num_epochs != sys.maxsize else "unknown (iterable)"
    lines = ["***** Running training *****",
             f"  Num examples = {plan.num_examples:,}",
             f"  Num Epochs = {epochs}",
             f"  Instantaneous batch size per device = {args.per_device_train_batch_size:,}"
             if not args.max_tokens_per_batch else
             f"  Instantaneous batch per device = up to {args.max_tokens_per_batch:,} padded tokens "
             "(max_tokens_per_batch)",
             f"  Total train batch size (w. parallel, distributed & accumulation) = {total_batch:,}",
             f"  Batch order = {sampling_description(args, plan.sampler, own_loader)}",
             f"  Gradient Accumulation steps = {args.gradient_accumulation_steps}",
             f"  Total optimization steps = {plan.max_steps:,}",
             f"  Number of trainable parameters = {trainable:,}",
             f"  Device = {trainer.device}" + (f" x {dist.world_size} processes" if dist.enabled else "")
             + (f", {'bf16' if args.bf16 else 'fp16'} autocast" if args.bf16 or args.fp16 else "")]
    if resumed:
        lines.append(f"  Resuming from {resumed} at step {trainer.state.global_step}")
    for line in lines:  # as transformers: INFO records, shown with log_level="info"
        logger.info(line)


def sampling_description(args: Any, sampler: Any, own_loader: bool) -> str:
    """The train sampler's order in words (an iterable dataset has no sampler: its own order)."""
    if sampler is None:
        return "the iterable dataset's own order" if own_loader else "the order of get_train_dataloader()'s batches"
    budget = isinstance(sampler, TokenBudgetBatchSampler)
    if budget:
        what = "token budget, " + ("rows of similar length" if sampler.shuffle else "in data order")
    elif not sampler.shuffle:
        what = "in data order"
    else:
        what = "shuffled, rows of similar length batched together" if sampler.group_by_length else "shuffled"
    if args.train_sampling_strategy == "auto" and not budget:
        what += " (train_sampling_strategy='auto'" + ("; 'random' gives HF's order)" if sampler.group_by_length
                                                      else ")")
    return what


def print_metrics(split: str, metrics: dict) -> None:
    """``***** train metrics *****`` and one aligned ``key = value`` line per metric, formatted as transformers
    (metrics_format.py)."""
    from .metrics_format import log_lines
    print("\n".join(log_lines(split, metrics)))
