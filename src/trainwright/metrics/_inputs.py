"""Turning metric inputs (lists, numpy arrays, torch tensors on any device) into arrays, with clear errors for
mismatched lengths and logits where labels belong; plain-Python scores; optional packages."""
from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from ..errors import DataError

_NLP_EXTRA = 'pip install "trainwright[nlp]"'


def _tensor_to_numpy(x: Any) -> Any:
    """A torch tensor (any device, any dtype, with or without grad) as a numpy array, without importing torch."""
    t = x.detach()
    if hasattr(t, "cpu"):
        t = t.cpu()
    try:
        return t.numpy()
    except (TypeError, RuntimeError):  # bfloat16 and friends have no numpy dtype
        return t.float().numpy()


def _is_tensor(x: Any) -> bool:
    return hasattr(x, "detach") and hasattr(x, "numpy")


def _to_numpy(x: Any, what: str = "predictions") -> Any:
    """Lists, tuples, numpy arrays, torch tensors (or lists of tensors) -> numpy array."""
    import numpy as np

    if _is_tensor(x):
        return _tensor_to_numpy(x)
    if isinstance(x, (list, tuple)) and len(x) > 0 and any(_is_tensor(e) for e in x):
        x = [_tensor_to_numpy(e) if _is_tensor(e) else e for e in x]
    try:
        return np.asarray(x)
    except ValueError as e:  # ragged nested lists
        raise DataError(
            f"`{what}` could not be turned into one array ({e}). Pass one value per example "
            f"(a flat list, a 1-D array or a 1-D tensor)."
        ) from None


def _to_list(x: Any) -> list:
    """Anything iterable (including tensors and arrays) -> a Python list of its items (for add_batch)."""
    if _is_tensor(x):
        x = _tensor_to_numpy(x)
    if hasattr(x, "tolist") and not isinstance(x, (str, bytes)):
        return list(x.tolist()) if getattr(x, "ndim", 1) > 0 else [x.tolist()]
    if isinstance(x, (str, bytes)):
        return [x]
    return list(x)


def _check_pair(predictions: Any, references: Any) -> None:
    if predictions is None or references is None:
        missing = "predictions" if predictions is None else "references"
        raise DataError(
            f"`{missing}` is missing. Call compute(predictions=..., references=...) "
            f"(or add_batch(...) first, then compute())."
        )
    n_p, n_r = len(predictions), len(references)
    if n_p != n_r:
        raise DataError(
            f"`predictions` has {n_p} examples but `references` has {n_r}: they must pair up one to one."
        )
    if n_p == 0:
        raise DataError("`predictions` and `references` are empty: there is nothing to score.")


def _classification_arrays(predictions: Any, references: Any, multilabel: bool = False):
    preds = _to_numpy(predictions, "predictions")
    refs = _to_numpy(references, "references")
    if preds.ndim == 0 or refs.ndim == 0:
        raise DataError("`predictions` and `references` must be sequences, one value per example, not scalars.")
    _check_pair(preds, refs)
    if not multilabel and preds.ndim == 2 and refs.ndim == 1:
        raise DataError(
            f"`predictions` has shape {tuple(preds.shape)}, which looks like logits or probabilities, but "
            f"`references` has shape {tuple(refs.shape)}. Take the predicted class first: "
            f"predictions = logits.argmax(axis=-1)."
        )
    if preds.dtype.kind == "f" and refs.dtype.kind in "iub":
        # Float predictions that are whole numbers (e.g. from a float tensor) are fine as labels.
        import numpy as np

        if np.all(np.isfinite(preds)) and np.all(preds == np.round(preds)):
            preds = preds.astype(refs.dtype if refs.dtype.kind != "b" else np.int64)
    return preds, refs


def _regression_arrays(predictions: Any, references: Any):
    preds = _to_numpy(predictions, "predictions")
    refs = _to_numpy(references, "references")
    if preds.ndim == 0 or refs.ndim == 0:
        raise DataError("`predictions` and `references` must be sequences, one value per example, not scalars.")
    _check_pair(preds, refs)
    if preds.ndim == 2 and preds.shape[1] == 1 and refs.ndim == 1:  # (N, 1) regression head output
        preds = preds[:, 0]
    return preds.astype(float, copy=False), refs.astype(float, copy=False)


def _score(x: Any) -> Any:
    """numpy scalar / 0-d array -> float; arrays -> list of floats (for average=None and friends)."""
    if hasattr(x, "ndim") and x.ndim > 0:
        return [float(v) for v in x.ravel()]
    if isinstance(x, (list, tuple)):
        return [float(v) for v in x]
    return float(x)


def _require(module: str, package: str, metric: str):
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f'The "{metric}" metric needs the `{package}` package, which is not installed. '
            f"Install it with: {_NLP_EXTRA}"
        ) from e


def _text_list(x: Any, what: str) -> list:
    if isinstance(x, str):
        raise DataError(f"`{what}` is a single string; pass a list of strings, one per example.")
    return _to_list(x)
