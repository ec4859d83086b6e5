"""Column handling: which dataset columns the model takes, label renaming, and clear data errors."""
from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from ..errors import DataError

LABEL_ALIASES = ("label", "label_ids")
MODEL_INPUTS = ("input_ids", "inputs_embeds", "pixel_values", "input_values", "input_features")


def model_signature_columns(model: Any, label_names: list[str]) -> list[str]:
    forward = getattr(model, "forward", None)
    params = inspect.signature(forward).parameters if forward is not None else {}
    names = [n for n, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    return list(dict.fromkeys(names + list(LABEL_ALIASES) + list(label_names)))


def default_label_names(model: Any) -> list[str]:
    forward = getattr(model, "forward", None)
    params = inspect.signature(forward).parameters if forward is not None else {}
    if "start_positions" in params and "end_positions" in params:
        return ["start_positions", "end_positions"]
    return ["labels"]


def dataset_columns(dataset: Any) -> list[str] | None:
    """Column names of a datasets.Dataset, a list of dicts or a map-style dataset of dicts."""
    names = getattr(dataset, "column_names", None)
    if isinstance(names, list):
        return names
    if isinstance(names, dict):  # DatasetDict
        return None
    try:
        first = dataset[0]
    except Exception:
        return None
    return list(first.keys()) if isinstance(first, Mapping) else None


def first_row(dataset: Any) -> Any:
    try:
        return dataset[0]
    except Exception:
        return None


def prepare_columns(dataset: Any, model: Any, label_names: list[str], remove_unused: bool, description: str,
                    rename_label: bool = True) -> tuple:
    """Returns (dataset, columns_to_keep or None). datasets.Dataset gets unused columns dropped in place (cheap,
    lazy) and, with ``rename_label`` (the Trainer's own collator), label→labels; other datasets get a
    collator-side filter instead. A collator the script passed sees the rows as transformers gives them: a
    ``label`` column stays ``label`` (run_swag.py's collator pops ``"label"``)."""
    if _is_dataset_dict(dataset):
        raise DataError(f"{description} is a DatasetDict with splits {list(dataset.keys())}: pass one split, "
                        f"e.g. {description}=tokenized_datasets['train'].")
    check_not_column_dict(dataset, description)
    columns = dataset_columns(dataset)
    if columns is None:
        return dataset, None
    _check_not_empty(dataset, description)
    signature = model_signature_columns(model, label_names)
    has_model_input = any(c in columns for c in MODEL_INPUTS)
    if not has_model_input:
        text = [c for c in columns if isinstance((first_row(dataset) or {}).get(c), str)]
        if text:
            raise DataError(
                f"{description} has no tokenized input (no 'input_ids' column); its column {text[0]!r} holds raw text. "
                f"Tokenize it first: dataset = dataset.map(lambda batch: tokenizer(batch[{text[0]!r}], "
                f"truncation=True), batched=True).")
    if not remove_unused:
        return (_rename_label(dataset, columns) if rename_label else dataset), None
    keep = [c for c in columns if c in signature]
    dropped = [c for c in columns if c not in signature]
    if not [c for c in keep if c not in LABEL_ALIASES and c not in label_names]:
        raise DataError(
            f"{description} has columns {columns}, none of which the model's forward() takes "
            f"({', '.join(p for p in signature if p not in LABEL_ALIASES)}). Tokenize the text "
            f"(dataset.map(tokenizer_fn, batched=True)) or set remove_unused_columns=False.")
    if hasattr(dataset, "remove_columns") and hasattr(dataset, "rename_column"):
        if dropped:
            dataset = dataset.remove_columns(dropped)
        return (_rename_label(dataset, dataset.column_names) if rename_label else dataset), None
    return dataset, set(keep) | {"labels"}


def check_not_column_dict(dataset: Any, description: str) -> None:
    """A plain dict of columns ({"input_ids": [...], "labels": [...]}) is not a dataset of rows: indexing it by row
    number fails deep in the DataLoader (KeyError: 0). (A dict of named eval sets holds datasets or row lists.)"""
    if not isinstance(dataset, Mapping) or _is_dataset_dict(dataset) or not dataset:
        return
    values = list(dataset.values())
    if all(isinstance(k, str) for k in dataset) and all(_is_column(v) for v in values):
        names = ", ".join(repr(k) for k in list(dataset)[:5])
        lengths = sorted({len(v) for v in values})
        raise DataError(
            f"{description} is a dict of columns ({names}; {'/'.join(map(str, lengths))} values each), not a dataset "
            f"of rows, so its rows cannot be read by index. Make it a dataset: "
            f"{description}=datasets.Dataset.from_dict({{...}}) (or a list of row dicts: "
            f"[dict(zip({description}, row)) for row in zip(*{description}.values())]).")


def _is_column(value) -> bool:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or not hasattr(value, "__getitem__"):
        return False
    if type(value).__name__ in ("Dataset", "IterableDataset") or len(value) == 0:
        return False
    if not isinstance(value, (list, tuple)) and type(value).__module__.split(".")[0] not in ("numpy", "torch"):
        return False
    first = value[0]
    return not isinstance(first, Mapping)


def dropped_columns(dataset: Any, model: Any, label_names: Any) -> list[str]:
    columns = dataset_columns(dataset) or []
    signature = model_signature_columns(model, label_names)
    return [c for c in columns if c not in signature]


def _rename_label(dataset, columns):
    if hasattr(dataset, "rename_column") and "labels" not in columns:
        for alias in LABEL_ALIASES:
            if alias in columns:
                return dataset.rename_column(alias, "labels")
    return dataset


def _check_not_empty(dataset, description):
    try:
        n = len(dataset)
    except TypeError:
        return
    if n == 0:
        raise DataError(f"{description} is empty (0 rows). Check the split and any .filter()/.select() applied to it.")


def _is_dataset_dict(dataset) -> bool:
    return type(dataset).__name__ in ("DatasetDict", "IterableDatasetDict")


def is_iterable_dataset(dataset: Any) -> bool:
    import torch.utils.data
    if isinstance(dataset, torch.utils.data.IterableDataset):
        return True
    return type(dataset).__name__ == "IterableDataset"


def has_length(dataset: Any) -> bool:
    try:
        return len(dataset) is not None
    except (TypeError, NotImplementedError):
        return False
