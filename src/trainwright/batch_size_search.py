"""``auto_find_batch_size=True``: train() starts at ``per_device_train_batch_size`` and, each time training runs out
of memory, starts over with the batch size times 0.9 (rounded down), as transformers (accelerate's
``find_executable_batch_size``). What counts as out of memory is accelerate's list of ``RuntimeError`` messages
(CUDA / ROCm / XPU, MPS, HPU, the CPU allocator, cuDNN's "not supported") plus any ``torch.OutOfMemoryError``.

Each try is a whole ``train()`` run: a new dataloader and sampler at the new batch size, the optimizer and schedule the
Trainer made built again (one passed as ``optimizers=`` is kept, as transformers keeps it), a new state and new loop
counters, ``on_train_begin`` again, gradients cleared; the signal handlers and the background checkpoint write of the
failed try end with it (``Trainer._train_once``'s scopes), the output_dir lock is held across the tries. As in
transformers the model's weights are not restored: updates a failed try made before it ran out of memory stay (the
first step is where it almost always happens); a resumed run loads its checkpoint again at each try, and with
``model_init`` each try starts from a new model, as each ``train()`` does.

The batch size found is ``state.train_batch_size`` (in every ``trainer_state.json``), the Trainer's
``_train_batch_size`` (the next ``train()`` starts from it, as transformers) and, while training,
``args.per_device_train_batch_size`` (so checkpoints' ``training_args.json`` record the batch the data order was cut
with; the script's value is put back when ``train()`` ends). Resuming with ``auto_find_batch_size`` starts from the
checkpoint's ``train_batch_size``.

Under torchrun every process must run out of memory at the same step (the usual case: the same model and batch size
on every device); then each computes the same next size. An out-of-memory error on one process only leaves the others
waiting in a collective until the process group times out, as in transformers.
"""
from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

import torch

from .errors import BatchSizeSearchError, TrainwrightError
from .memory import empty_device_cache

logger = logging.getLogger("trainwright")

# accelerate's should_reduce_batch_size messages, and the CPU allocator's other wording
OUT_OF_MEMORY_MESSAGES = (
    " out of memory.",  # CUDA, ROCm, XPU
    "MPS backend out of memory",
    "cuDNN error: CUDNN_STATUS_NOT_SUPPORTED.",
    "DefaultCPUAllocator: can't allocate memory",
    "DefaultCPUAllocator: not enough memory",
    "FATAL ERROR :: MODULE:PT_DEVMEM Allocation failed",  # HPU
)
REDUCTION = 0.9  # accelerate's factor


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is a device or host out-of-memory error that a smaller batch may avoid (never one of
    trainwright's own errors)."""
    if isinstance(error, TrainwrightError):
        return False
    oom_type = getattr(torch, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(error, oom_type):
        return True
    if not isinstance(error, RuntimeError) or len(error.args) != 1 or not isinstance(error.args[0], str):
        return False
    return any(text in error.args[0] for text in OUT_OF_MEMORY_MESSAGES)


def next_batch_size(batch_size: int) -> int:
    """The batch size to try after ``batch_size`` ran out of memory (0 when none is left)."""
    return int(batch_size * REDUCTION)


def free_memory(device: torch.device) -> None:
    """Collects garbage and empties the device's cache of free blocks (CUDA, XPU, MPS)."""
    gc.collect()
    empty_device_cache(device)


def stored_batch_size(checkpoint: str) -> int | None:
    """``train_batch_size`` in the checkpoint's trainer_state.json (None when absent or unreadable: the resume
    itself then reports the checkpoint)."""
    try:
        with open(os.path.join(checkpoint, "trainer_state.json"), encoding="utf-8") as f:
            value = json.load(f).get("train_batch_size")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else None


@contextlib.contextmanager
def evaluation_oom_not_retried(args: Any) -> Iterator[None]:
    """Around an evaluation inside ``train()``: with ``auto_find_batch_size``, an evaluation that runs out of memory
    stops the run with a clear error instead of shrinking the train batch size down to zero (as transformers)."""
    try:
        yield
    except RuntimeError as e:
        if args.auto_find_batch_size and is_out_of_memory(e):
            raise BatchSizeSearchError(
                "Evaluation ran out of memory during training. auto_find_batch_size only adjusts the training batch "
                f"size (per_device_train_batch_size): lower per_device_eval_batch_size "
                f"(now {args.per_device_eval_batch_size}) instead.") from e
        raise


def evaluate_in_training(trainer: Any, ignore_keys: list[str] | None = None) -> dict:
    """``trainer.evaluate()`` during training, under :func:`evaluation_oom_not_retried`."""
    with evaluation_oom_not_retried(trainer.args):
        return trainer.evaluate(ignore_keys=ignore_keys)


class BatchSizeSearch:
    """One ``train()`` call: runs ``train_once`` until it does not run out of memory (once when
    ``auto_find_batch_size`` is off)."""

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer
        self.enabled = bool(trainer.args.auto_find_batch_size)
        self.batch_size = int(getattr(trainer, "_train_batch_size", None) or trainer.args.per_device_train_batch_size)
        self.tried: list[int] = []
        self._last_error = "none"
        self._target: tuple[str | None, bool] | None = None

    def resume_target(self, resume_from_checkpoint: str | bool | None) -> tuple[str | None, bool]:
        """``checkpoints.resume_target`` resolved once for all the tries (a failed try's checkpoints are not
        resumed by the next); with ``auto_find_batch_size`` the first try takes the checkpoint's batch size."""
        if self._target is None:
            self._target = self.trainer.checkpoints.resume_target(resume_from_checkpoint)
            stored = stored_batch_size(self._target[0]) if self.enabled and self._target[0] else None
            if stored is not None and stored != self.batch_size:
                logger.info("auto_find_batch_size: resuming with the checkpoint's train_batch_size=%d", stored)
                self.tried[-1:] = [stored]
                self._use(stored)
        return self._target

    def run(self, train_once: Callable, *args: Any) -> Any:
        """``train_once(self, *args)``, again at a smaller batch size after each out-of-memory error."""
        if not self.enabled:
            return train_once(self, *args)
        trainer_args = self.trainer.args
        original = trainer_args.per_device_train_batch_size
        try:
            while True:
                if self.batch_size < 1:
                    raise self._nothing_fits()
                self.tried.append(self.batch_size)
                self._use(self.batch_size)
                try:
                    return train_once(self, *args)
                except Exception as e:
                    if not is_out_of_memory(e):
                        raise
                    self._last_error = f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"
                # out of the except block: the failed try's frames (and the activations they hold) are released
                self._reset()
                smaller = next_batch_size(self.batch_size)
                logger.warning("auto_find_batch_size: out of memory at per_device_train_batch_size=%d (%s); "
                               "trying %d.", self.batch_size, self._last_error, smaller)
                self.batch_size = smaller
        finally:
            trainer_args.per_device_train_batch_size = original

    def _use(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self.trainer.args.per_device_train_batch_size = self.trainer._train_batch_size = batch_size

    def _reset(self) -> None:
        """Drops what the failed try built, so that the next starts clean and the memory is free."""
        t = self.trainer
        from .distributed import unwrap_model
        unwrap_model(t.model).zero_grad(set_to_none=True)
        t.model_wrapped = t.model
        if t._created_optimizer:
            t.optimizer = None  # built again over the same parameters, with no state from the failed try
            t._created_optimizer = False
        if t._created_lr_scheduler:
            t.lr_scheduler = None
        t.callback_handler.optimizer = t.callback_handler.lr_scheduler = None
        t.callback_handler.train_dataloader = None
        t.loss_tracker = t.throughput = t._grad_norm = None
        free_memory(t.device)

    def _nothing_fits(self) -> BatchSizeSearchError:
        tried = ", ".join(str(b) for b in self.tried)
        return BatchSizeSearchError(
            f"auto_find_batch_size=True found no per_device_train_batch_size that fits in memory: tried {tried}, "
            f"down to zero (No executable batch size found, reached zero). The last error: "
            f"{self._last_error}. Reduce the memory one row needs: shorter sequences "
            "(max_length), gradient_checkpointing=True, bf16=True, a smaller model, or more device memory.")
