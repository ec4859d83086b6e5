"""How many optimizer steps and epochs a run has, where a resumed run starts, and which micro-batches each step takes.

A map-style train set (the Trainer's resumable batch sampler) has exact epochs, also when token budgets make their
lengths differ; a subclass's ``get_train_dataloader`` returning an iterable with a length has epochs too (as in
transformers); an iterable dataset runs ``max_steps`` steps, starting the stream again when it runs out.
"""
from __future__ import annotations

import logging
import math
import sys
from collections.abc import Iterator
from typing import Any

from .data.columns import has_length, is_iterable_dataset
from .data.samplers import EpochPlan, ResumableBatchSampler
from .errors import ConfigError

logger = logging.getLogger("trainwright")


class TrainPlan:
    """The shape of one ``train()`` call over ``dataloader``: ``max_steps``, ``num_epochs``, ``num_examples`` and,
    for a sized loader, the steps of each epoch."""

    def __init__(self, trainer: Any, dataloader: Any) -> None:
        args = trainer.args
        self.dataloader = dataloader
        self.accum = args.gradient_accumulation_steps
        batch_sampler = getattr(dataloader, "batch_sampler", None)
        self.sampler = batch_sampler if isinstance(batch_sampler, ResumableBatchSampler) else None
        # a subclass's get_train_dataloader may return any iterable of batches: with a length it has epochs (as HF)
        sized = self.sampler if self.sampler is not None else dataloader if (
            has_length(dataloader) and not is_iterable_dataset(getattr(dataloader, "dataset", None))) else None
        if sized is not None:
            self.batches_per_epoch = len(sized)
            self.epochs = EpochPlan(sized, self.accum)  # steps per epoch; exact when token budgets vary them by epoch
            self.steps_per_epoch = self.epochs.steps(0)
            if args.max_steps > 0:
                self.max_steps = args.max_steps
                self.num_epochs = self.epochs.num_epochs(self.max_steps)
            else:
                self.max_steps = self.epochs.total_steps(args.num_train_epochs)
                self.num_epochs = math.ceil(args.num_train_epochs)
            self.num_examples = self.sampler.num_samples if self.sampler is not None else \
                trainer.num_examples(dataloader)
        else:  # iterable dataset: max_steps was checked at construction (a subclass's loader: here)
            if args.max_steps <= 0:
                raise ConfigError(f"get_train_dataloader() returned a {type(dataloader).__name__} without a "
                                  "length, so the number of steps is unknown: set max_steps=<number of optimizer "
                                  "steps> in TrainingArguments.")
            self.batches_per_epoch = None
            self.steps_per_epoch = self.max_steps = args.max_steps
            self.num_epochs = sys.maxsize
            self.num_examples = self.max_steps * args.per_device_train_batch_size * self.accum * \
                trainer.dist.world_size

    @property
    def sized(self) -> bool:
        return self.batches_per_epoch is not None

    def start(self, global_step: int) -> tuple[int, int]:
        """(epoch, steps already done in it) of a run resumed at ``global_step``: the sampler's saved position
        when the checkpoint holds one (else, and for a checkpoint of an earlier trainwright or of transformers,
        the position ``global_step`` gives under this plan)."""
        if self.sampler is None:
            return divmod(global_step, self.steps_per_epoch)
        derived = self.epochs.locate(global_step)
        saved, self.sampler.resume_position = self.sampler.resume_position, None
        if saved is None:
            return derived
        epoch, done = saved
        batches = self.sampler.num_batches(epoch)
        position = (epoch + 1, 0) if done >= batches else (epoch, done // self.accum)
        if position != derived:
            logger.warning("The checkpoint's data position (epoch %d, %d of %d batches done) is not where its "
                           "global_step %d falls under this run's plan (epoch %d, step %d in it): resuming at the "
                           "saved position.", epoch, done, batches, global_step, derived[0], derived[1])
        return position

    def steps_in_epoch(self, epoch: int) -> int:
        return self.steps_per_epoch if self.batches_per_epoch is None else self.epochs.steps(epoch)

    def begin_epoch(self, epoch: int, skip: int) -> None:
        """The sampler's epoch, starting after the ``skip`` steps a resumed run already did."""
        if self.sampler is not None:
            self.sampler.set_epoch(epoch, start_batch=skip * self.accum)

    def micro_batches(self, epoch: int, skip: int, ignore_data_skip: bool = False) -> Iterator[tuple[int, list]]:
        """(step in the epoch, its micro-batches) for the rest of ``epoch``. A subclass's own loader, resumed, passes
        the batches already trained on (as transformers; not with ``ignore_data_skip``); an iterable dataset that
        runs out starts again."""
        batches = iter(self.dataloader)
        if skip and self.sampler is None and self.sized and not ignore_data_skip:
            _take(batches, skip * self.accum)
        in_epoch = self.sampler.num_batches(epoch) if self.sampler is not None else 0
        for step_in_epoch in range(skip, self.steps_in_epoch(epoch)):
            micro_batches = _take(batches, self.accum)
            if not micro_batches:
                if not self.sized:  # iterable dataset exhausted: start it again
                    batches = iter(self.dataloader)
                    micro_batches = _take(batches, self.accum)
                if not micro_batches:
                    return
            if self.sampler is not None:  # the position a checkpoint taken after this step records
                self.sampler.consumed = (epoch, min((step_in_epoch + 1) * self.accum, in_epoch))
            yield step_in_epoch, micro_batches


def ratio_to_steps(value: Any, max_steps: int) -> int:
    """``logging_steps`` / ``eval_steps`` / ``save_steps`` as a number of steps (a float < 1: a fraction of all)."""
    if value is None:
        return 0
    if isinstance(value, float) and value < 1:
        return max(1, math.ceil(max_steps * value))
    return int(value)


def _take(iterator, n: int) -> list:
    out = []
    for _ in range(n):
        try:
            out.append(next(iterator))
        except StopIteration:
            break
    return out
