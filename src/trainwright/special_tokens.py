"""The model's special token ids aligned with the tokenizer's at ``train()``, as transformers.Trainer does.

A tokenizer may define tokens the model config lacks or holds differently: GPT-2 / Llama tokenizers get a pad
token (``tokenizer.pad_token = tokenizer.eos_token``) that their config does not have, and
``GPT2ForSequenceClassification`` cannot take a batch of more than one row without ``config.pad_token_id``;
a chat fine-tune adds an end-of-turn token. ``eos_token_id``, ``bos_token_id`` and ``pad_token_id`` that the
tokenizer defines are written into the model config (and its generation config) when they differ, with
transformers' warning; an id the tokenizer does not define is left as it is, and the config's and generation
config's extra EOS ids are kept.
"""
from __future__ import annotations

import logging
import sys
from typing import Any

logger = logging.getLogger("trainwright")


def _tokenizer_of(processing_class):
    """The tokenizer of a transformers tokenizer or processor (``processor.tokenizer``); None otherwise (as
    transformers, which aligns only for those two)."""
    if processing_class is None or "transformers" not in sys.modules:
        return None
    from transformers import PreTrainedTokenizerBase, ProcessorMixin
    if isinstance(processing_class, ProcessorMixin):
        return getattr(processing_class, "tokenizer", None)
    return processing_class if isinstance(processing_class, PreTrainedTokenizerBase) else None


def _align(name: str, tokenizer, config, generation_config, updated: dict, several: bool = False) -> None:
    token_id = getattr(tokenizer, name, None)
    if token_id is None:
        return
    config_ids = getattr(config, name, None)
    config_is_list = isinstance(config_ids, list)
    config_ids = config_ids if config_is_list else [config_ids]
    generation_ids = getattr(generation_config, name, None) if generation_config is not None else None
    generation_ids = generation_ids if isinstance(generation_ids, list) else [generation_ids]
    if token_id in config_ids and (generation_config is None or token_id in generation_ids):
        return
    updated[name] = token_id
    if several and config_is_list:  # a list of EOS ids: add, never drop a stop token
        setattr(config, name, [token_id, *(t for t in config_ids if t != token_id)])
    else:
        setattr(config, name, token_id)
    if generation_config is None:
        return
    if several:
        setattr(generation_config, name, [token_id, *(t for t in generation_ids if t is not None and t != token_id)])
    else:
        setattr(generation_config, name, token_id)


def align_special_tokens(model: Any, processing_class: Any) -> dict:
    """Writes the tokenizer's EOS / BOS / PAD ids into ``model.config`` (and ``model.generation_config``) where
    they differ; returns the ids changed."""
    tokenizer = _tokenizer_of(processing_class)
    config = getattr(model, "config", None)
    if tokenizer is None or config is None:
        return {}
    if hasattr(config, "get_text_config"):
        config = config.get_text_config()
    generation_config = getattr(model, "generation_config", None)
    updated: dict = {}
    _align("eos_token_id", tokenizer, config, generation_config, updated, several=True)
    _align("bos_token_id", tokenizer, config, generation_config, updated)
    _align("pad_token_id", tokenizer, config, generation_config, updated)
    if updated:
        logger.warning(
            "The tokenizer has new PAD/BOS/EOS tokens that differ from the model config and generation config. "
            "The model config and generation config were aligned accordingly, being updated with the tokenizer's "
            f"values. Updated tokens: {updated}.")
    return updated
