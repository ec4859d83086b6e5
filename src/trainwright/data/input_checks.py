"""Pre-flight checks of the rows and batches the model is fed, for mistakes that otherwise end in an internal
traceback (``Could not infer dtype of NoneType``, ``'list' object has no attribute 'get'``, ``KeyError: 0``,
``index out of range in self``, ``type of 101.0 unknown``) or in silently skipped steps (a NaN label):

* a ``None`` label (a list of rows: every row is scanned; other datasets: the first batch);
* a NaN float label: a warning, once, with the row (its loss is NaN and the step's update is skipped);
* token ids stored as floats (``input_ids``, ``token_type_ids``, ...);
* ``token_type_ids`` beyond the model's ``type_vocab_size``;
* a collator whose output is not a mapping of tensors (a list, a tuple, lists of numbers);
* a data collator that fails for another reason: the error names the batch's rows and any ``None`` value in them.

Called from ``validation.py`` (the first batch, Arrow scans, lists of rows) and from the train collate wrapper.
"""
from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ..errors import DataError, ModelError
from .columns import LABEL_ALIASES

IGNORE_INDEX = -100
ID_COLUMNS = ("input_ids", "token_type_ids", "attention_mask", "position_ids", "decoder_input_ids")
TENSOR_COLUMNS = ID_COLUMNS + ("decoder_attention_mask", "labels", "label", "start_positions", "end_positions")


# ================================================================================================ rows
def label_columns(label_names: Any) -> list[str]:
    return list(dict.fromkeys(list(label_names or ()) + ["labels", *LABEL_ALIASES]))


def check_rows(rows: Any, where: str, label_names: Any, first_index: int = 0, require_labels: bool = True) -> None:
    """A list of row dicts (the first batch, or a whole list dataset): None labels, float ids, NaN labels. Without
    ``require_labels`` (an eval set) a column of None labels only (an unlabeled split) is fine; a mix is not."""
    if not rows or not isinstance(rows[0], Mapping):
        return
    for column in label_columns(label_names):
        values = [r.get(column) if isinstance(r, Mapping) else None for r in rows]
        if all(v is None for v in values) and (column not in rows[0] or not require_labels):
            continue
        missing = [first_index + i for i, v in enumerate(values) if v is None]
        if missing:
            raise DataError(
                f"{where} column {column!r} has {len(missing)} missing (None) labels (first in row {missing[0]}). "
                f"Drop those rows (rows = [r for r in rows if r[{column!r}] is not None], or "
                f"ds = ds.filter(lambda r: r[{column!r}] is not None)) or fill them in.")
        nan = next((first_index + i for i, v in enumerate(values) if _has_nan(v)), None)
        if nan is not None:
            warn_nan_label(where, column, nan)
    for column in ID_COLUMNS:
        value = rows[0].get(column)
        if column != "attention_mask" and _holds_floats(value):  # a float attention mask is a valid mask
            raise DataError(_float_ids_message(where, column, f" (row {first_index}: {_first_number(value)!r})"))


def _has_nan(value) -> bool:
    if isinstance(value, float):
        return math.isnan(value)
    if isinstance(value, (list, tuple)):
        return any(isinstance(v, float) and math.isnan(v) for v in value)
    if isinstance(value, torch.Tensor):
        return value.is_floating_point() and bool(torch.isnan(value).any())
    if isinstance(value, np.ndarray):
        return value.dtype.kind == "f" and bool(np.isnan(value).any())
    return False


def _holds_floats(value) -> bool:
    if isinstance(value, torch.Tensor):
        return value.is_floating_point()
    if isinstance(value, np.ndarray):
        return value.dtype.kind == "f"
    first = _first_number(value)
    return isinstance(first, float) and not isinstance(first, bool)


def _first_number(value):
    while isinstance(value, (list, tuple)) and value:
        value = value[0]
    return value


_warned: set = set()


def reset_warnings() -> None:
    """Called at the start of the pre-flight checks: each warning once per train()."""
    _warned.clear()


def warn_nan_label(where: str, column: str, row: Any) -> None:
    """Once per data set and pre-flight run (the row scan and the first batch, whose label column may be renamed
    from 'label' to 'labels', may both see it)."""
    key = where
    if key in _warned:
        return
    _warned.add(key)
    at = f" (first in row {row})" if row is not None else ""
    warnings.warn(
        f"{where} column {column!r} has a NaN label{at}. Its loss is NaN, so every step that contains the row "
        f"is skipped (no update; counted in train_skipped_nonfinite_steps). Drop or fix those rows: "
        f"ds = ds.filter(lambda r: r[{column!r}] == r[{column!r}]).", UserWarning, stacklevel=3)


def scan_row_list(dataset: Any, where: str, label_names: Any, require_labels: bool = True) -> None:
    """A python list/tuple of row dicts is in memory: its labels are scanned whole (milliseconds)."""
    if isinstance(dataset, (list, tuple)) and dataset and isinstance(dataset[0], Mapping):
        check_rows(dataset, where, label_names, require_labels=require_labels)


# ================================================================================================ batches
def check_batch_structure(batch: Any, where: str, collator: Any, default_loss: bool) -> None:
    """The collated first batch must be a mapping of tensors when the Trainer's own compute_loss calls
    ``model(**batch)``; an override of compute_loss/training_step may take other structures (as transformers)."""
    if not default_loss:
        return
    name = _collator_name(collator)
    if not isinstance(batch, Mapping):
        raise DataError(
            f"The data collator ({name}) returned a {type(batch).__name__} for the {where} batches, but the "
            f"Trainer calls model(**batch), which needs a dict of tensors keyed by the model's argument names "
            f"(e.g. {{'input_ids': ..., 'attention_mask': ..., 'labels': ...}}). Make the collator return a dict "
            f"(transformers' collators and trainwright.default_data_collator do), or override compute_loss to "
            f"unpack your structure.")
    for key, value in batch.items():
        if key not in TENSOR_COLUMNS:
            continue  # other keys may be lists a model takes as such (image sizes, detection targets, ...)
        if isinstance(value, (list, tuple, np.ndarray)) and _is_numeric(value):
            raise DataError(
                f"The data collator ({name}) returned {where} column {key!r} as a {type(value).__name__}, not a "
                f"torch.Tensor, so the model cannot use it. Return tensors: torch.tensor(values) in your collator, "
                f"return_tensors='pt' for a transformers collator, or use DataCollatorWithPadding(tokenizer).")


def _is_numeric(value) -> bool:
    if isinstance(value, np.ndarray):
        return value.dtype.kind in "biuf"
    first = _first_number(value)
    return isinstance(first, numbers.Number)


def check_batch_ids(model: Any, batch: Any, where: str) -> None:
    """Float token ids and out-of-range ``token_type_ids`` in a collated batch; NaN labels warn."""
    if not isinstance(batch, Mapping):
        return
    for column in ID_COLUMNS:
        value = batch.get(column)
        if column != "attention_mask" and isinstance(value, torch.Tensor) and value.is_floating_point():
            sample = value.flatten()[0].item() if value.numel() else None
            raise DataError(_float_ids_message(where, column, f" (e.g. {sample!r})" if sample is not None else ""))
    types = batch.get("token_type_ids")
    if isinstance(types, torch.Tensor) and types.numel() and not types.is_floating_point():
        hi, lo = int(types.max()), int(types.min())
        limit = type_vocab_size(model)
        if limit is not None and (hi >= limit or lo < 0):
            bad = hi if hi >= limit else lo
            row = int((types == bad).nonzero()[0, 0]) if types.dim() > 1 else None
            raise_bad_token_type(model, where, bad, limit, f" (row {row})" if row is not None else "")


def warn_nan_in_batch(batch: Any, where: str, label_names: Any) -> None:
    if not isinstance(batch, Mapping):
        return
    for column in label_columns(label_names):
        value = batch.get(column)
        if isinstance(value, torch.Tensor) and value.is_floating_point() and value.numel():
            nan = torch.isnan(value)
            if bool(nan.any()):
                row = int(nan.nonzero()[0, 0]) if value.dim() else None
                warn_nan_label(where, column, row)


# ================================================================================================ Arrow
def check_arrow_inputs(model: Any, dataset: Any, where: str, label_names: Any, max_rows: int) -> None:
    """A datasets.Dataset: float id columns, token_type_ids range (first ``max_rows`` rows), NaN labels (all rows)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    features = dataset.features
    for column in ID_COLUMNS:
        if column != "attention_mask" and column in features and _arrow_value_kind(features[column]) == "float":
            raise DataError(_float_ids_message(where, column, ""))
    limit = type_vocab_size(model)
    if limit is not None and "token_type_ids" in features and _arrow_value_kind(features["token_type_ids"]) == "int":
        ds = dataset if len(dataset) <= max_rows else dataset.select(range(max_rows))
        flat, rows = _flatten_lists(ds.with_format("arrow")["token_type_ids"])
        if len(flat):
            mm = pc.min_max(flat).as_py()
            if mm["max"] >= limit or mm["min"] < 0:
                bad = mm["max"] if mm["max"] >= limit else mm["min"]
                i = pc.index(flat, pa.scalar(bad, type=flat.type)).as_py()
                row = f" (row {rows[i].as_py() if rows is not None else i})" if i is not None and i >= 0 else ""
                raise_bad_token_type(model, where, bad, limit, row)
    for column in label_columns(label_names):
        if column in features:
            if _arrow_value_kind(features[column]) == "float":
                flat, rows = _flatten_lists(dataset.with_format("arrow")[column])
                nan = pc.is_nan(flat)
                if pc.any(nan).as_py():
                    i = pc.index(nan, True).as_py()
                    warn_nan_label(where, column, rows[i].as_py() if rows is not None else i)
            break


def _flatten_lists(col):
    """The values of an Arrow column of lists, nested to any depth (a multiple-choice row holds one list of ids
    per choice), and each value's row index (None when the column holds no lists)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    rows = None
    while pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
        parents = pc.list_parent_indices(col)
        rows = parents if rows is None else pc.take(rows, parents)
        col = pc.list_flatten(col)
    return col, rows


def _arrow_value_kind(feature) -> str | None:
    inner = feature
    while type(inner).__name__ in ("Sequence", "List", "LargeList"):
        inner = getattr(inner, "feature", None)
    if type(inner).__name__ != "Value":
        return None
    dtype = inner.dtype
    if dtype.startswith(("float", "double", "half")):
        return "float"
    if dtype.startswith(("int", "uint")):
        return "int"
    return None


# ================================================================================================ model facts
def type_vocab_size(model: Any) -> int | None:
    """Rows of the model's token-type (segment) embedding, or None when it has none."""
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Embedding) and name.rsplit(".", 1)[-1] == "token_type_embeddings":
            return module.num_embeddings
    return None


# ================================================================================================ messages
def _float_ids_message(where, column, example) -> str:
    return (f"{where} column {column!r} holds floats{example}, but ids must be integers (the model looks them up in "
            f"an embedding table). Cast the column: ds = ds.cast_column({column!r}, "
            f"datasets.Sequence(datasets.Value('int64'))) (for a list of rows: [int(i) for i in row[{column!r}]]), "
            f"or return it as torch.long from the collator.")


def raise_bad_token_type(model: Any, where: str, bad: Any, limit: Any, row: Any="") -> None:
    name = type(model).__name__
    if bad < 0:
        raise DataError(f"{where} column 'token_type_ids' has the negative segment id {bad}{row}; segment ids "
                        f"must be in [0, {limit}). Re-tokenize, or drop the column to use segment 0 everywhere: "
                        f"ds = ds.remove_columns('token_type_ids').")
    raise ModelError(
        f"{where} column 'token_type_ids' has the segment id {bad}{row}, but {name} has type_vocab_size={limit} "
        f"(segment ids 0..{limit - 1}), so its token-type embedding would fail with 'index out of range'. The "
        f"tokenizer is probably not the model's (e.g. RoBERTa-style models take only segment 0): tokenize with the "
        f"model's own tokenizer, or drop the column to use segment 0 everywhere: "
        f"ds = ds.remove_columns('token_type_ids').")


def _collator_name(collator) -> str:
    inner, seen = collator, 0
    while hasattr(inner, "data_collator") and seen < 8:
        inner, seen = inner.data_collator, seen + 1
    return getattr(inner, "__name__", None) or type(inner).__name__


def collate_failure(error: Exception, rows: Any, indices: Any, where: str, collator: Any,
                    label_names: Any) -> Exception:
    """A clear DataError for a collator that raised: the rows it was given, and any None value in them."""
    rows_text = f"rows {list(indices)[:8]}{'...' if len(indices) > 8 else ''}"
    hint = ""
    if rows and isinstance(rows[0], Mapping):
        for i, row in enumerate(rows):
            column = next((k for k, v in row.items() if v is None), None)
            if column is not None:
                index = list(indices)[i] if indices is not None else i
                kind = "label" if column in label_columns(label_names) else "value"
                hint = (f" Row {index} has a None {kind} in column {column!r}: drop or fill such rows "
                        f"(ds = ds.filter(lambda r: r[{column!r}] is not None)).")
                break
    return DataError(f"The data collator ({_collator_name(collator)}) failed on the {where} batch of {rows_text}: "
                     f"{type(error).__name__}: {error}.{hint}")
