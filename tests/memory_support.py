"""Helpers shared by the memory tests (test_chunked_loss.py, test_memory_features.py): tiny causal LMs of the three
architecture families built from a config, causal-LM batches from tiny Shakespeare, and a measure of the bytes
autograd keeps for the backward pass."""
from __future__ import annotations

import re

import torch

from conftest import DATA


def tiny_causal_lm(arch: str, vocab_size: int = 512, seed: int = 0, hidden: int = 32, layers: int = 2, **kw):
    """A randomly initialised Llama (untied head), GPT-2 (tied) or Qwen2 (tied) without dropout."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM
    torch.manual_seed(seed)
    if arch == "llama":
        config = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                             num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                             max_position_embeddings=256, tie_word_embeddings=False, **kw)
        return LlamaForCausalLM(config)
    if arch == "gpt2":
        config = GPT2Config(vocab_size=vocab_size, n_embd=hidden, n_layer=layers, n_head=4, n_positions=256,
                            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0, **kw)
        return GPT2LMHeadModel(config)
    if arch == "qwen2":
        config = Qwen2Config(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                             num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                             max_position_embeddings=256, tie_word_embeddings=True, **kw)
        return Qwen2ForCausalLM(config)
    raise ValueError(arch)


def causal_batch(vocab_size: int, rows: int = 3, length: int = 24, seed: int = 1) -> dict:
    """Random ids with a padded row (labels -100 there) and an unlabelled prompt (the first 4 tokens)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_size, (rows, length), generator=g)
    mask = torch.ones_like(ids)
    mask[1, length - 7:] = 0
    labels = ids.clone()
    labels[mask == 0] = -100
    labels[:, :4] = -100
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def shakespeare_lm_dataset(tokenizer, n: int = 64, max_length: int = 48):
    """The first ``n`` tiny-Shakespeare speeches, tokenized (MiniLM), labels = input_ids (the collator pads)."""
    from datasets import Dataset
    text = (DATA / "tinyshakespeare" / "input.txt").read_text()
    speeches = [s.strip() for s in re.split(r"\n\s*\n", text) if s.strip()][:n]
    enc = tokenizer(speeches, truncation=True, max_length=max_length)
    return Dataset.from_dict({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})


def saved_tensor_bytes(fn, exclude=(), layers=()):
    """(bytes of the distinct storages kept for the backward pass while ``fn`` runs, fn's result): the tensors
    autograd saves, plus the hidden-state input of each module in ``layers`` (what activation checkpointing
    keeps to recompute a layer; without checkpointing the layer's first op saves it anyway, counted once).
    Storages shared with ``exclude`` (the parameters, an input the caller keeps anyway) are not counted."""
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    seen: dict[int, int] = {}

    def count(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in skip:
            seen[storage.data_ptr()] = storage.nbytes()

    def pack(t):
        count(t)
        return t

    def layer_input(module, args, kwargs):
        hidden = args[0] if args else kwargs.get("hidden_states")
        if isinstance(hidden, torch.Tensor):
            count(hidden)

    handles = [m.register_forward_pre_hook(layer_input, with_kwargs=True) for m in layers]
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = fn()
    finally:
        for h in handles:
            h.remove()
    return sum(seen.values()), out
