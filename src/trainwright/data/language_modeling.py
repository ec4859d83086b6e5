"""Language-modelling collator (masked LM and causal LM).

:class:`DataCollatorForLanguageModeling` has the constructor of ``transformers.DataCollatorForLanguageModeling``
(5.x, including the positional order ``tokenizer, mlm, whole_word_mask, mlm_probability, ...``) and its behaviour,
with these deliberate differences:

* causal LM (``mlm=False``): padding positions are found from the ``attention_mask`` (or from the example
  lengths), never by comparing with ``pad_token_id``. With GPT-2/Llama-style tokenizers ``pad_token`` is often the
  ``eos_token``, and comparing ids would also hide the real end-of-sequence tokens from the loss.
* causal LM: a ``labels`` column already present in the examples (e.g. prompt tokens set to -100 for SFT) is kept
  and padded with -100 instead of being overwritten.
* MLM: padding positions are never masked even when the ``special_tokens_mask`` given by the user says otherwise.
* when the examples are bare lists/tensors of ids, an ``attention_mask`` is returned with the padded ``input_ids``.
* with ``seed`` set, each DataLoader worker gets its own generator (``seed + worker id``), created lazily in the
  process that uses it, so forked workers never replay the same masks. Under ``Trainer.train()`` that generator
  is re-seeded for every batch from (``seed``, epoch, batch index) (see ``batch_seeds``), so the masks do not
  depend on the worker and a resumed run masks exactly as an uninterrupted one.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .token_classification import _check_return_tensors, _pad_label_lists, _to_list, _tokenizer_pad

__all__ = ["DataCollatorForLanguageModeling"]


def _as_long_tensor(x: Any) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.to(torch.long)
    return torch.as_tensor(np.asarray(x), dtype=torch.long)


@dataclass
class DataCollatorForLanguageModeling:
    """Collate (and pad) examples for masked or causal language modelling.

    Args:
        tokenizer: tokenizer used to encode the data (for padding, special tokens and the mask token).
        mlm: True for masked LM (BERT-style); False for causal LM (labels = inputs, padding ignored).
        whole_word_mask: mask whole words rather than sub-word tokens (needs ``offset_mapping`` in the examples,
            i.e. tokenize with ``return_offsets_mapping=True``; MLM only; forces ``mask_replace_prob=1``).
        mlm_probability: probability that a (non-special, non-padding) token is selected for prediction.
        mask_replace_prob: share of the selected tokens replaced by the mask token (0.8).
        random_replace_prob: share of the selected tokens replaced by a random token (0.1); the rest is kept.
        pad_to_multiple_of: round the padded length up to a multiple of this value.
        return_tensors: ``"pt"`` or ``"np"`` (the masking is computed with torch in both cases).
        seed: seed for a private ``torch.Generator``; None uses the global torch RNG.

    Examples can be dicts (with ``input_ids`` and optionally ``attention_mask``, ``special_tokens_mask``,
    ``offset_mapping``, ``labels``) or bare lists/tensors of token ids.
    """

    tokenizer: Any
    mlm: bool = True
    whole_word_mask: bool = False
    mlm_probability: float | None = 0.15
    mask_replace_prob: float = 0.8
    random_replace_prob: float = 0.1
    pad_to_multiple_of: int | None = None
    return_tensors: str = "pt"
    seed: int | None = None
    generator: torch.Generator | None = field(default=None, init=False, repr=False, compare=False)
    _generator_owner: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_return_tensors(self.return_tensors)
        if self.mlm:
            if getattr(self.tokenizer, "mask_token", None) is None:
                raise ValueError(
                    "This tokenizer has no mask token, which masked language modelling needs. "
                    "Pass mlm=False to train a causal language model instead."
                )
            if self.mlm_probability is None or not 0.0 <= float(self.mlm_probability) <= 1.0:
                raise ValueError(f"mlm_probability must be between 0 and 1, got {self.mlm_probability!r}")
            self.mlm_probability = float(self.mlm_probability)
        elif self.whole_word_mask:
            raise ValueError("whole_word_mask=True can only be used with mlm=True.")
        for name in ("mask_replace_prob", "random_replace_prob"):
            value = float(getattr(self, name))
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")
            setattr(self, name, value)
        if self.mask_replace_prob + self.random_replace_prob > 1.0 + 1e-12:
            raise ValueError("The sum of mask_replace_prob and random_replace_prob must not exceed 1")
        if self.whole_word_mask:
            if not getattr(self.tokenizer, "is_fast", True):
                warnings.warn(
                    "Whole word masking relies on offset mappings, which only fast tokenizers provide natively.",
                    UserWarning,
                    stacklevel=2,
                )
            if self.mask_replace_prob < 1.0:
                warnings.warn(
                    "Random token replacement is not supported with whole word masking; setting "
                    "mask_replace_prob=1 and random_replace_prob=0.",
                    UserWarning,
                    stacklevel=2,
                )
                self.mask_replace_prob = 1.0
                self.random_replace_prob = 0.0

    def __getstate__(self) -> dict[str, Any]:
        # The generator is per process: never ship it to DataLoader workers (they rebuild their own).
        state = self.__dict__.copy()
        state["generator"] = None
        state["_generator_owner"] = None
        return state

    # ------------------------------------------------------------------------------------------------------
    # RNG
    # ------------------------------------------------------------------------------------------------------
    def _get_generator(self) -> torch.Generator | None:
        if self.seed is None:
            return None
        worker = torch.utils.data.get_worker_info()
        owner = (os.getpid(), None if worker is None else worker.id)
        if self.generator is None or self._generator_owner != owner:
            seed = self.seed if worker is None else self.seed + worker.id
            self.generator = torch.Generator().manual_seed(int(seed))
            self._generator_owner = owner
        return self.generator

    # ------------------------------------------------------------------------------------------------------
    # Collation
    # ------------------------------------------------------------------------------------------------------
    def __call__(self, examples: Sequence[Any], return_tensors: str | None = None) -> dict[str, Any]:
        """One batch from ``examples`` (dicts or lists of ids): padded ``input_ids`` / ``attention_mask`` and the
        ``labels`` (masked tokens for MLM, the inputs with padding ignored for causal LM); ``return_tensors``
        overrides the collator's ("pt" or "np")."""
        return_tensors = _check_return_tensors(return_tensors or self.return_tensors)
        if len(examples) == 0:
            raise ValueError("DataCollatorForLanguageModeling received an empty list of examples")
        batch = self._collate(examples)
        if return_tensors == "np":
            batch = {k: (v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
        return batch

    # transformers compatibility: DataCollatorMixin entry points
    def torch_call(self, examples: Sequence[Any]) -> dict[str, Any]:
        """The batch as torch tensors (transformers' ``DataCollatorMixin`` entry point)."""
        return self(examples, return_tensors="pt")

    def numpy_call(self, examples: Sequence[Any]) -> dict[str, Any]:
        """The batch as numpy arrays (transformers' ``DataCollatorMixin`` entry point)."""
        return self(examples, return_tensors="np")

    def _collate(self, examples: Sequence[Any]) -> dict[str, Any]:
        padding_side = getattr(self.tokenizer, "padding_side", "right")
        given_labels = None
        offset_mapping = None
        if isinstance(examples[0], Mapping):
            features = [dict(e) for e in examples]
            if "labels" in features[0]:
                given_labels = [f.pop("labels") for f in features]
            if "offset_mapping" in features[0]:
                offset_mapping = [f.pop("offset_mapping") for f in features]
            batch = dict(
                _tokenizer_pad(
                    self.tokenizer, features, return_tensors="pt", pad_to_multiple_of=self.pad_to_multiple_of
                )
            )
            batch["input_ids"] = _as_long_tensor(batch["input_ids"])
            if "attention_mask" not in batch:
                lengths = [len(_to_list(f["input_ids"])) for f in features]
                batch["attention_mask"] = self._mask_from_lengths(lengths, batch["input_ids"].shape[1], padding_side)
        else:
            batch = self._collate_id_lists(examples, padding_side)

        input_ids: torch.Tensor = batch["input_ids"]
        attention_mask = _as_long_tensor(batch["attention_mask"])
        special_tokens_mask = batch.pop("special_tokens_mask", None)
        batch.pop("offset_mapping", None)
        seq_len = input_ids.shape[1]

        if self.mlm:
            if offset_mapping is not None:
                offset_mapping = self._pad_offsets(offset_mapping, seq_len, padding_side)
            batch["input_ids"], batch["labels"] = self.torch_mask_tokens(
                input_ids,
                special_tokens_mask=special_tokens_mask,
                offset_mapping=offset_mapping,
                attention_mask=attention_mask,
            )
        else:
            if given_labels is not None:
                labels = torch.tensor(_pad_label_lists(given_labels, seq_len, -100, padding_side), dtype=torch.long)
                labels[attention_mask == 0] = -100
            else:
                labels = input_ids.clone()
                labels[attention_mask == 0] = -100
            batch["labels"] = labels
        return batch

    def _collate_id_lists(self, examples: Sequence[Any], padding_side: str) -> dict[str, torch.Tensor]:
        rows = [_as_long_tensor(e).reshape(-1) for e in examples]
        lengths = [int(r.shape[0]) for r in rows]
        length = max(lengths)
        if self.pad_to_multiple_of and length % self.pad_to_multiple_of:
            length = (length // self.pad_to_multiple_of + 1) * self.pad_to_multiple_of
        if any(n != length for n in lengths):
            pad_id = getattr(self.tokenizer, "pad_token_id", None)
            if pad_id is None:
                raise ValueError(
                    f"The examples have different lengths but the tokenizer ({type(self.tokenizer).__name__}) has no "
                    "pad token. Set one, e.g. tokenizer.pad_token = tokenizer.eos_token."
                )
        else:
            pad_id = 0
        input_ids = torch.full((len(rows), length), int(pad_id), dtype=torch.long)
        for i, row in enumerate(rows):
            if padding_side == "right":
                input_ids[i, : row.shape[0]] = row
            else:
                input_ids[i, length - row.shape[0] :] = row
        return {"input_ids": input_ids, "attention_mask": self._mask_from_lengths(lengths, length, padding_side)}

    @staticmethod
    def _mask_from_lengths(lengths: Sequence[int], length: int, padding_side: str) -> torch.Tensor:
        positions = torch.arange(length).unsqueeze(0)
        lens = torch.tensor(list(lengths)).unsqueeze(1)
        if padding_side == "right":
            return (positions < lens).long()
        return (positions >= length - lens).long()

    @staticmethod
    def _pad_offsets(offsets: Sequence[Any], length: int, padding_side: str) -> torch.Tensor:
        out = torch.zeros((len(offsets), length, 2), dtype=torch.long)
        for i, row in enumerate(offsets):
            row_t = _as_long_tensor(row).reshape(-1, 2)
            n = row_t.shape[0]
            if padding_side == "right":
                out[i, :n] = row_t
            else:
                out[i, length - n :] = row_t
        return out

    # ------------------------------------------------------------------------------------------------------
    # Masking
    # ------------------------------------------------------------------------------------------------------
    def _special_mask(self, input_ids: torch.Tensor, special_tokens_mask: Any | None) -> torch.Tensor:
        if special_tokens_mask is None:
            special = [
                self.tokenizer.get_special_tokens_mask(row, already_has_special_tokens=True)
                for row in input_ids.tolist()
            ]
            return torch.tensor(special, dtype=torch.bool)
        return _as_long_tensor(special_tokens_mask).bool()

    def torch_mask_tokens(
        self,
        inputs: torch.Tensor,
        special_tokens_mask: Any | None = None,
        offset_mapping: Any | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Apply the BERT masking rule in place to ``inputs``; return ``(inputs, labels)``.

        ``mlm_probability`` of the eligible tokens are selected (special tokens and padding are never eligible);
        labels are -100 everywhere else. Of the selected tokens, ``mask_replace_prob`` become the mask token,
        ``random_replace_prob`` a random token id in ``[0, len(tokenizer))``, and the rest stay unchanged.
        """
        generator = self._get_generator()
        labels = inputs.clone()
        no_mask = self._special_mask(inputs, special_tokens_mask)
        if attention_mask is not None:
            no_mask = no_mask | (_as_long_tensor(attention_mask) == 0)

        if self.whole_word_mask:
            if offset_mapping is None:
                raise ValueError(
                    "whole_word_mask=True needs `offset_mapping` in the examples: tokenize with "
                    "return_offsets_mapping=True."
                )
            masked = self._whole_word_selection(_as_long_tensor(offset_mapping), no_mask, generator)
        else:
            probability = torch.full(labels.shape, float(self.mlm_probability))
            probability.masked_fill_(no_mask, 0.0)
            masked = torch.bernoulli(probability, generator=generator).bool()

        labels[~masked] = -100

        replaced = torch.bernoulli(torch.full(labels.shape, self.mask_replace_prob), generator=generator).bool()
        replaced &= masked
        inputs[replaced] = int(self.tokenizer.convert_tokens_to_ids(self.tokenizer.mask_token))

        if self.mask_replace_prob >= 1.0 or self.random_replace_prob <= 0.0:
            return inputs, labels

        # P(random | selected and not [MASK]) so that the overall share is random_replace_prob.
        scaled = self.random_replace_prob / (1.0 - self.mask_replace_prob)
        randomized = torch.bernoulli(torch.full(labels.shape, min(scaled, 1.0)), generator=generator).bool()
        randomized &= masked & ~replaced
        random_words = torch.randint(len(self.tokenizer), labels.shape, dtype=torch.long, generator=generator)
        inputs[randomized] = random_words[randomized]
        return inputs, labels

    def _whole_word_selection(
        self, offsets: torch.Tensor, no_mask: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        """Select whole words: each word start is drawn with ``mlm_probability`` and its pieces follow it.

        A token starts a new word when it is not special and either its start offset differs from the previous
        token's end offset or the previous token is special.
        """
        starts, ends = offsets[..., 0], offsets[..., 1]
        prev_ends = torch.roll(ends, 1, dims=1)
        prev_ends[:, 0] = -1
        prev_special = torch.roll(no_mask, 1, dims=1)
        prev_special[:, 0] = False
        is_new_word = ~no_mask & ((starts != prev_ends) | prev_special)
        word_ids = torch.cumsum(is_new_word.long(), dim=1)  # 1-based word index per row
        word_ids[no_mask] = 0  # 0 = no word

        probability = torch.full(no_mask.shape, float(self.mlm_probability))
        probability.masked_fill_(~is_new_word, 0.0)
        start_selected = torch.bernoulli(probability, generator=generator).long()
        per_word = torch.zeros((no_mask.shape[0], no_mask.shape[1] + 1), dtype=torch.long)
        per_word.scatter_add_(1, word_ids, start_selected)
        return (per_word.gather(1, word_ids) > 0) & (word_ids > 0)
