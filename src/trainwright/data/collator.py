"""Batch collation: DataCollatorWithPadding (dynamic padding) and default_data_collator, as in transformers."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


def default_data_collator(features: list[Any], return_tensors: str = "pt") -> dict[str, Any]:
    """Stack already equal-length features into tensors; `label`/`label_ids` become `labels`."""
    if not features:
        return {}
    if not isinstance(features[0], Mapping):
        features = [vars(f) for f in features]
    first = features[0]
    batch: dict[str, Any] = {}
    for key in ("label", "label_ids"):
        if key in first and first[key] is not None:
            values = [f[key] for f in features]
            batch["labels"] = _stack_labels(values)
    for key, value in first.items():
        if key in ("label", "label_ids") or value is None or isinstance(value, str):
            continue
        values = [f[key] for f in features]
        if isinstance(value, torch.Tensor):
            batch[key] = torch.stack(values)
        elif isinstance(value, np.ndarray):
            batch[key] = torch.from_numpy(np.stack(values))
        else:
            try:
                batch[key] = torch.tensor(values)
            except (ValueError, TypeError) as e:
                from ..errors import DataError
                raise DataError(
                    f"Column {key!r} has rows of different lengths, so default_data_collator cannot stack them. "
                    f"Pad them: pass data_collator=DataCollatorWithPadding(tokenizer) or processing_class=tokenizer."
                ) from e
    if return_tensors == "np":
        batch = {k: v.numpy() for k, v in batch.items()}
    return batch


def _stack_labels(values):
    v0 = values[0]
    if isinstance(v0, torch.Tensor):
        return torch.stack(values) if v0.dim() else torch.stack(values)
    dtype = torch.float if isinstance(v0, float) or (isinstance(v0, np.floating)) else None
    if dtype is None and isinstance(v0, (list, tuple)) and v0 and isinstance(v0[0], float):
        dtype = torch.float
    return torch.tensor(np.asarray(values) if isinstance(v0, np.ndarray) else values, dtype=dtype)


@dataclass
class DataCollatorWithPadding:
    """Pads each batch to its longest member (or ``max_length`` / a multiple of ``pad_to_multiple_of``)."""

    tokenizer: Any
    padding: bool | str = True
    max_length: int | None = None
    pad_to_multiple_of: int | None = None
    return_tensors: str = "pt"

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        labels = None
        label_key = next((k for k in ("label", "labels", "label_ids") if k in features[0]), None)
        if label_key is not None:
            labels = [f[label_key] for f in features]
            features = [{k: v for k, v in f.items() if k != label_key} for f in features]
        features = [{k: v for k, v in f.items() if not isinstance(v, str)} for f in features]
        batch = self.tokenizer.pad(
            features,
            padding=self.padding,
            max_length=self.max_length,
            pad_to_multiple_of=self.pad_to_multiple_of,
            return_tensors=self.return_tensors,
        )
        batch = dict(batch)
        if labels is not None and labels[0] is not None:
            tensor = _stack_labels(labels)
            batch["labels"] = tensor.numpy() if self.return_tensors == "np" else tensor
        return batch


class RemoveColumnsCollator:
    """Drops the columns the model does not take before collating (for datasets we cannot edit)."""

    def __init__(self, data_collator: Any, keep: set[str]) -> None:
        self.data_collator = data_collator
        self.keep = keep

    def __call__(self, features: list[Any]) -> Any:
        if features and isinstance(features[0], Mapping):
            features = [{k: v for k, v in f.items() if k in self.keep} for f in features]
        return self.data_collator(features)
