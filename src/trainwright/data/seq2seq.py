"""Sequence-to-sequence collator (translation, summarization).

:class:`DataCollatorForSeq2Seq` has the constructor and behaviour of ``transformers.DataCollatorForSeq2Seq``:
encoder inputs are padded with ``tokenizer.pad``; labels are padded with ``label_pad_token_id`` (-100) to the
longest label (or ``max_length`` with ``padding="max_length"``, rounded up to ``pad_to_multiple_of``), on the
tokenizer's ``padding_side``; when ``model`` has ``prepare_decoder_input_ids_from_labels`` (BART, T5, Marian,
...), ``decoder_input_ids`` (labels shifted right, -100 replaced by the pad id) are added to the batch.

Differences: a batch without labels has no ``labels`` key (transformers puts ``labels=None`` in it), and
``decoder_input_ids`` are also built for ``return_tensors="np"`` (computed with torch, returned as numpy).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .token_classification import _as_framework, _check_return_tensors, _pad_label_lists, _tokenizer_pad

__all__ = ["DataCollatorForSeq2Seq"]


def _is_no_padding(padding: Any) -> bool:
    return padding is False or str(getattr(padding, "value", padding)) == "do_not_pad"


def _is_max_length_padding(padding: Any) -> bool:
    return str(getattr(padding, "value", padding)) == "max_length"


@dataclass
class DataCollatorForSeq2Seq:
    """Dynamically pad encoder inputs and labels for encoder-decoder models.

    Args:
        tokenizer: tokenizer used to encode the data.
        model: the model being trained; if it has ``prepare_decoder_input_ids_from_labels``, the collator adds
            ``decoder_input_ids`` (useful with label smoothing, so the model need not shift the labels itself).
        padding: ``True``/``"longest"`` (default), ``"max_length"`` or ``False``/``"do_not_pad"``.
        max_length: maximum length, used with ``padding="max_length"`` (for the inputs and the labels).
        pad_to_multiple_of: round the padded lengths (inputs and labels, separately) up to a multiple of this.
        label_pad_token_id: value used to pad the labels (-100, ignored by the loss).
        return_tensors: ``"pt"`` or ``"np"``.
    """

    tokenizer: Any
    model: Any | None = None
    padding: Any = True
    max_length: int | None = None
    pad_to_multiple_of: int | None = None
    label_pad_token_id: int = -100
    return_tensors: str = "pt"

    def __call__(self, features: Sequence[Mapping[str, Any]], return_tensors: str | None = None) -> dict[str, Any]:
        """One batch from ``features`` (dicts of ``input_ids``, ``labels``, ...): inputs padded by the tokenizer,
        labels padded with ``label_pad_token_id``, and ``decoder_input_ids`` when the model makes them;
        ``return_tensors`` overrides the collator's ("pt" or "np")."""
        return_tensors = _check_return_tensors(return_tensors or self.return_tensors)
        if not features:
            raise ValueError("DataCollatorForSeq2Seq received an empty list of features")
        label_name = "label" if "label" in features[0] else "labels"
        labels = [f[label_name] for f in features] if label_name in features[0] else None
        if labels is not None and all(label is None for label in labels):
            labels = None
        non_label_features = [{k: v for k, v in f.items() if k != label_name} for f in features]

        batch = _tokenizer_pad(
            self.tokenizer,
            non_label_features,
            padding=self.padding,
            max_length=self.max_length,
            pad_to_multiple_of=self.pad_to_multiple_of,
            return_tensors=return_tensors,
        )
        if labels is None:
            return batch

        if _is_no_padding(self.padding):
            lengths = {len(label) for label in labels}
            if len(lengths) != 1:
                raise ValueError(
                    "padding=False but the labels have different lengths "
                    f"({sorted(lengths)}); they cannot be stacked into one tensor. Use padding=True."
                )
            padded = [[int(t) for t in np.asarray(label).tolist()] for label in labels]
        else:
            if _is_max_length_padding(self.padding) and self.max_length is not None:
                target = int(self.max_length)
            else:
                target = max(len(label) for label in labels)
            if self.pad_to_multiple_of:
                m = int(self.pad_to_multiple_of)
                target = (target + m - 1) // m * m
            padding_side = getattr(self.tokenizer, "padding_side", "right")
            padded = _pad_label_lists(labels, target, self.label_pad_token_id, padding_side)
        batch["labels"] = _as_framework(padded, return_tensors)

        prepare = getattr(self.model, "prepare_decoder_input_ids_from_labels", None) if self.model else None
        if prepare is not None:
            labels_pt = batch["labels"] if return_tensors == "pt" else torch.from_numpy(batch["labels"])
            decoder_input_ids = prepare(labels=labels_pt)
            if return_tensors == "np" and isinstance(decoder_input_ids, torch.Tensor):
                decoder_input_ids = decoder_input_ids.numpy()
            batch["decoder_input_ids"] = decoder_input_ids
        return batch
