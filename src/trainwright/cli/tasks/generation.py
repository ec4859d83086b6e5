"""What the generating tasks (causal-lm, instruction, seq2seq) share: the end-of-text token, decoding generated
ids, the pad token id that ``generate`` pads finished rows with, and the decoder-only tasks' model setup."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from ...seq2seq import Seq2SeqTrainingArguments
    from .base import LabelInfo


class DecoderModelSetup:
    """The decoder-only tasks' (causal-lm, instruction) model setup, mixed in before ``Task``: the model gets the
    tokenizer's pad token, a model built from a config takes the tokenizer's vocabulary and special tokens, and
    the arguments are the Seq2Seq ones (generation settings)."""

    def prepare_model(self, model: Any, tokenizer: Any) -> Any:
        return set_pad_token_id(model, tokenizer)

    def config_defaults(self, tokenizer: Any, info: LabelInfo) -> dict:
        return {"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id,
                "bos_token_id": getattr(tokenizer, "bos_token_id", None) or getattr(tokenizer, "cls_token_id", None),
                "eos_token_id": eos_id(tokenizer)}

    def arguments_class(self) -> type[Seq2SeqTrainingArguments]:
        from ...seq2seq import Seq2SeqTrainingArguments
        return Seq2SeqTrainingArguments


def eos_id(tokenizer: Any) -> int | None:
    """The end-of-text token (eos, else BERT's [SEP]): appended to every document of a causal-LM corpus."""
    for name in ("eos_token_id", "sep_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            return int(value)
    return None


def decode(tokenizer: Any, ids: npt.ArrayLike) -> list[str]:
    """Token ids (-100 read as padding) → text without special tokens, stripped."""
    ids = np.asarray(ids)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = np.where(ids < 0, pad, ids)
    return [t.strip() for t in tokenizer.batch_decode(ids.tolist(), skip_special_tokens=True)]


def set_pad_token_id(model: Any, tokenizer: Any) -> Any:
    """Generation pads finished rows with the pad id: take the tokenizer's when the model has none."""
    for config in (getattr(model, "config", None), getattr(model, "generation_config", None)):
        if config is not None and getattr(config, "pad_token_id", None) is None and tokenizer.pad_token_id is not None:
            config.pad_token_id = tokenizer.pad_token_id
    return model
