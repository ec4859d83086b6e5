"""``num_input_tokens_seen`` as transformers 5.x counts it (``include_num_input_tokens_seen``).

* ``"no"`` (the default) / ``False``: not counted, not logged; ``state.num_input_tokens_seen`` stays as it is.
* ``"all"`` / ``True``: every element of the model's main input (``model.main_input_name``, ``input_ids`` for
  text models, ``pixel_values`` for vision, ...), padding included.
* ``"non_padding"``: the sum of ``attention_mask``; without one, the main-input entries that differ from the
  processing class's ``pad_token_id``; without either, every element (with transformers' warning).

Counted on the host from each collated micro-batch, before the batch goes to the device (a mask already on
the device is summed there and read at the next logging step, never per step). Under torchrun each rank
counts its own batches and the counts are summed over the ranks when the trainer's throughput counter is
flushed (logging steps, evaluations, checkpoints, the end of ``train()``), so the figure is global, as in
transformers. A batch without the main input is not counted (transformers' warning, shown once here).

Logged as transformers does (``log_fields``): ``num_input_tokens_seen`` in every log while the option is on,
and on training-step logs also ``train_runtime`` and ``train_tokens_per_second`` (the tokens of this ``train()``
call over the time since it started).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from .args import TrainingArguments
    from .state import TrainerState

logger = logging.getLogger("trainwright")
MODES = ("all", "non_padding", "no")
_warned_modes: set[str] = set()


def counting_mode(args: TrainingArguments) -> str:
    """``args.include_num_input_tokens_seen`` as one of MODES (a bool as transformers maps it). Any other value
    counts every token, as transformers does, with a warning naming the argument."""
    mode = getattr(args, "include_num_input_tokens_seen", "no")
    if mode is True:
        return "all"
    if mode is False or mode is None:
        return "no"
    if mode not in MODES:
        if repr(mode) not in _warned_modes:
            _warned_modes.add(repr(mode))
            logger.warning(f"include_num_input_tokens_seen={mode!r} is not one of 'all', 'non_padding', 'no' (or "
                           "a bool): counting every input token, as transformers does for it. Set 'non_padding' "
                           "to leave padding out, or 'no' not to count.")
        return "all"
    return mode


class InputTokenCounter:
    """Counts the input tokens of collated batches for ``num_input_tokens_seen`` (see the module docstring)."""

    def __init__(self, args: TrainingArguments, model: torch.nn.Module | None = None, processing_class: Any = None,
                 initial: int = 0) -> None:
        self.mode = counting_mode(args)
        self.initial = initial  # state.num_input_tokens_seen when this train() call started (a resumed run's)
        self.main_input_name = getattr(model, "main_input_name", None) or "input_ids"
        pad = getattr(processing_class, "pad_token_id", None)
        self.pad_token_id = pad if isinstance(pad, int) else None
        self._on_device = None  # sums of masks that were already on the device, read at flush
        self._warned: set[str] = set()

    @property
    def enabled(self) -> bool:
        return self.mode != "no"

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(message)

    def _sum(self, t: torch.Tensor) -> int:
        if t.device.type == "cpu":
            return int(t.sum())
        s = t.sum(dtype=torch.int64)
        self._on_device = s if self._on_device is None else self._on_device + s
        return 0

    def count(self, batch: Any) -> int:
        """This batch's tokens counted on the host (0 for the part that is summed on the device)."""
        if self.mode == "no":
            return 0
        main = batch.get(self.main_input_name) if isinstance(batch, Mapping) else None
        if not isinstance(main, torch.Tensor):
            self._warn_once("main", "Tried to track the number of tokens seen, however the current model is not "
                                    "configured properly to know what item is the input. To fix this, add a "
                                    f"`main_input_name` attribute to the model class you are using (the batch has "
                                    f"no tensor {self.main_input_name!r}).")
            return 0
        if self.mode == "non_padding":
            mask = batch.get("attention_mask")
            if isinstance(mask, torch.Tensor):
                return self._sum(mask)
            if self.pad_token_id is not None:
                return self._sum(main != self.pad_token_id)
            self._warn_once("fallback", "Could not determine method to count non-padding tokens, falling back to "
                                        "counting all tokens.")
        return main.numel()

    def take_device_count(self) -> int:
        """The device-side sums since the last call (one read; called at flush only)."""
        if self._on_device is None:
            return 0
        value, self._on_device = int(self._on_device.item()), None
        return value


def log_fields(args: TrainingArguments, state: TrainerState, start_time: float | None = None,
               counter: InputTokenCounter | None = None) -> dict:
    """The keys transformers' ``Trainer.log`` adds when ``include_num_input_tokens_seen`` is on; with
    ``start_time`` (a training-step log) also the speed of this ``train()`` call, counted from
    ``counter.initial`` tokens at ``start_time``."""
    if (counter.mode if counter is not None else counting_mode(args)) == "no":
        return {}
    out = {"num_input_tokens_seen": state.num_input_tokens_seen}
    if start_time is not None:
        runtime = time.time() - start_time
        out["train_runtime"] = round(runtime, 4)
        if runtime != 0:
            initial = counter.initial if counter is not None else 0
            out["train_tokens_per_second"] = round((state.num_input_tokens_seen - initial) / runtime, 3)
    return out
