"""Token classification (NER, POS, chunking) data helpers.

* :class:`DataCollatorForTokenClassification` -- same constructor and behaviour as
  ``transformers.DataCollatorForTokenClassification``: inputs are padded with ``tokenizer.pad`` and the
  ``labels`` (or ``label``) column is padded with ``label_pad_token_id`` (-100) to the same length, on the
  tokenizer's ``padding_side``.
* :func:`align_labels_with_tokens` -- maps word-level labels onto sub-word tokens.
* :func:`tokenize_and_align_labels` -- factory for a ``datasets.Dataset.map(batched=True)`` function.

The module only imports ``torch`` and ``numpy``; ``transformers`` is never imported here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = [
    "DataCollatorForTokenClassification",
    "align_labels_with_tokens",
    "tokenize_and_align_labels",
]

_RETURN_TENSORS = ("pt", "np")


# --------------------------------------------------------------------------------------------------------------
# Shared private helpers (also used by language_modeling.py and seq2seq.py)
# --------------------------------------------------------------------------------------------------------------
def _check_return_tensors(return_tensors: str) -> str:
    if return_tensors not in _RETURN_TENSORS:
        raise ValueError(f"return_tensors must be one of {_RETURN_TENSORS}, got {return_tensors!r}")
    return return_tensors


def _tokenizer_pad(tokenizer: Any, features: Any, **pad_kwargs: Any) -> Any:
    """``tokenizer.pad`` without the "you're using a fast tokenizer, calling __call__ is faster" warning.

    The warning makes no sense for collators (the data is already tokenized). Feature extractors without the
    ``deprecation_warnings`` attribute are padded directly.
    """
    warnings_state = getattr(tokenizer, "deprecation_warnings", None)
    if not isinstance(warnings_state, dict):
        return tokenizer.pad(features, **pad_kwargs)
    key = "Asking-to-pad-a-fast-tokenizer"
    previous = warnings_state.get(key, False)
    warnings_state[key] = True
    try:
        return tokenizer.pad(features, **pad_kwargs)
    finally:
        warnings_state[key] = previous


def _to_list(values: Any) -> list:
    if isinstance(values, (torch.Tensor, np.ndarray)):
        return values.tolist()
    return list(values)


def _pad_label_lists(
    labels: Sequence[Any], length: int, pad_id: int, padding_side: str, what: str = "labels"
) -> list[list[int]]:
    out = []
    for label in labels:
        label = _to_list(label)
        missing = length - len(label)
        if missing < 0:
            raise ValueError(
                f"A {what} sequence has {len(label)} entries but the padded batch has only {length} positions; "
                f"{what} must not be longer than input_ids (truncate them together, e.g. with "
                "tokenize_and_align_labels(max_length=...))."
            )
        out.append(label + [pad_id] * missing if padding_side == "right" else [pad_id] * missing + label)
    return out


def _as_framework(values: Any, return_tensors: str, dtype: str = "int64") -> Any:
    if return_tensors == "pt":
        return torch.tensor(values, dtype=getattr(torch, dtype))
    return np.array(values, dtype=getattr(np, dtype))


# --------------------------------------------------------------------------------------------------------------
# Collator
# --------------------------------------------------------------------------------------------------------------
@dataclass
class DataCollatorForTokenClassification:
    """Dynamically pad token-classification batches (inputs and per-token labels).

    Args:
        tokenizer: the tokenizer used to encode the data (its ``pad`` method and ``padding_side`` are used).
        padding: ``True``/``"longest"`` (default), ``"max_length"`` or ``False``/``"do_not_pad"``, as in
            ``tokenizer.pad``.
        max_length: maximum length, used with ``padding="max_length"``.
        pad_to_multiple_of: round the padded length up to a multiple of this value.
        label_pad_token_id: value used to pad the labels (-100 is ignored by the loss).
        return_tensors: ``"pt"`` or ``"np"``.

    The label column may be called ``labels`` or ``label``; the output keeps the input's name (as
    transformers does). Labels are padded on the tokenizer's ``padding_side`` so they stay aligned with the
    ``input_ids``.
    """

    tokenizer: Any
    padding: Any = True
    max_length: int | None = None
    pad_to_multiple_of: int | None = None
    label_pad_token_id: int = -100
    return_tensors: str = "pt"

    def __call__(self, features: Sequence[Mapping[str, Any]], return_tensors: str | None = None) -> dict[str, Any]:
        """One batch from ``features``: inputs padded by the tokenizer, the per-token ``labels`` padded with
        ``label_pad_token_id`` on the tokenizer's padding side; ``return_tensors`` overrides the collator's."""
        return_tensors = _check_return_tensors(return_tensors or self.return_tensors)
        if not features:
            raise ValueError("DataCollatorForTokenClassification received an empty list of features")
        first = features[0]
        label_name = "label" if "label" in first else "labels"
        labels = [f[label_name] for f in features] if label_name in first else None
        no_label_features = [{k: v for k, v in f.items() if k != label_name} for f in features]

        batch = _tokenizer_pad(
            self.tokenizer,
            no_label_features,
            padding=self.padding,
            max_length=self.max_length,
            pad_to_multiple_of=self.pad_to_multiple_of,
            return_tensors=return_tensors,
        )
        if labels is None:
            return batch

        sequence_length = int(np.asarray(batch["input_ids"]).shape[1])
        padding_side = getattr(self.tokenizer, "padding_side", "right")
        padded = _pad_label_lists(labels, sequence_length, self.label_pad_token_id, padding_side)
        batch[label_name] = _as_framework(padded, return_tensors)
        return batch


# --------------------------------------------------------------------------------------------------------------
# Label alignment helpers
# --------------------------------------------------------------------------------------------------------------
def align_labels_with_tokens(
    word_labels: Sequence[int],
    word_ids: Sequence[int | None],
    label_all_tokens: bool = False,
    ignore_index: int = -100,
    b_to_i_label: Sequence[int] | None = None,
) -> list[int]:
    """Project word-level labels onto the sub-word tokens of one sequence.

    Args:
        word_labels: one label id per word.
        word_ids: the tokenizer's ``encoding.word_ids()`` for that sequence (``None`` for special tokens).
        label_all_tokens: if False (default) only the first sub-word of each word carries the word's label and
            the following pieces get ``ignore_index``; if True every piece carries the word's label.
        ignore_index: label given to special tokens and to ignored pieces (-100).
        b_to_i_label: optional mapping ``label id -> label id`` used, when ``label_all_tokens`` is True, for the
            continuation pieces (e.g. turn ``B-PER`` into ``I-PER`` so that the IOB2 scheme stays valid), as in the
            transformers ``run_ner`` example.

    Returns:
        a list with one label per token (same length as ``word_ids``).
    """
    aligned: list[int] = []
    previous: int | None = None
    n_words = len(word_labels)
    for word_id in word_ids:
        if word_id is None:
            aligned.append(ignore_index)
        elif word_id != previous:
            if not 0 <= word_id < n_words:
                raise ValueError(f"word id {word_id} is out of range for a sentence of {n_words} word labels")
            aligned.append(int(word_labels[word_id]))
        elif label_all_tokens:
            label = int(word_labels[word_id])
            aligned.append(int(b_to_i_label[label]) if b_to_i_label is not None else label)
        else:
            aligned.append(ignore_index)
        previous = word_id
    return aligned


def tokenize_and_align_labels(
    tokenizer: Any,
    words_column: str = "tokens",
    labels_column: str = "ner_tags",
    max_length: int | None = None,
    label_all_tokens: bool = False,
    label2id: Mapping[str, int] | None = None,
    b_to_i_label: Sequence[int] | None = None,
    ignore_index: int = -100,
) -> Callable[[Mapping[str, list]], dict[str, list]]:
    """Build a function for ``datasets.Dataset.map(fn, batched=True)`` that tokenizes pre-split words and aligns
    their labels with the sub-word tokens.

    The returned function takes a batch ``{words_column: [[word, ...], ...], labels_column: [[label, ...], ...]}``
    and returns the tokenizer outputs plus a ``labels`` column (special tokens and non-first pieces at
    ``ignore_index``, see :func:`align_labels_with_tokens`). No padding is done (leave it to
    :class:`DataCollatorForTokenClassification`); sequences are truncated to ``max_length`` (the tokenizer's
    ``model_max_length`` when None). String labels are converted with ``label2id``. It also works on a plain
    dict of lists, without ``datasets``. A fast tokenizer is required (for ``word_ids``).
    """
    if not getattr(tokenizer, "is_fast", True):
        raise ValueError(
            "tokenize_and_align_labels needs a fast (Rust) tokenizer because it relies on `word_ids()`; load it "
            "with AutoTokenizer.from_pretrained(..., use_fast=True)."
        )

    def fn(batch: Mapping[str, list]) -> dict[str, list]:
        words = batch[words_column]
        if words and isinstance(words[0], str):
            raise ValueError(
                f"Column {words_column!r} must hold lists of words; got plain strings. Use map(batched=True)."
            )
        encoded = tokenizer(list(words), is_split_into_words=True, truncation=True, max_length=max_length)
        out = {key: value for key, value in encoded.items()}
        if labels_column in batch:
            out["labels"] = [
                align_labels_with_tokens(
                    _word_label_ids(word_labels, len(words[i]), i, labels_column, label2id),
                    encoded.word_ids(i),
                    label_all_tokens=label_all_tokens,
                    ignore_index=ignore_index,
                    b_to_i_label=b_to_i_label,
                )
                for i, word_labels in enumerate(batch[labels_column])
            ]
        return out

    return fn


def _word_label_ids(word_labels: Sequence[Any], num_words: int, row: int, labels_column: str,
                    label2id: Mapping[str, int] | None) -> list[int]:
    """One example's word labels as ids (string labels through ``label2id``), one per word."""
    ids = []
    for label in word_labels:
        if isinstance(label, str):
            if label2id is None:
                raise ValueError(f"Got the string label {label!r}; pass label2id= to convert string labels to ids")
            ids.append(int(label2id[label]))
        else:
            ids.append(int(label))
    if len(ids) != num_words:
        raise ValueError(f"Example {row} has {num_words} words but {len(ids)} labels in {labels_column!r}")
    return ids
