"""Perplexity from the losses the Trainer already computed (no language model is run)."""
from __future__ import annotations

import math
from typing import Any

from ..errors import ConfigError, DataError
from ._inputs import _is_tensor, _tensor_to_numpy, _to_numpy


def perplexity_from_loss(loss: Any) -> float:
    """Perplexity of a mean per-token cross-entropy loss (in nats): ``exp(loss)``.

    Returns ``float("inf")`` when ``exp`` overflows (loss above ~709) and ``nan`` for a NaN loss.
    Accepts a Python number, a numpy scalar or a 0-d torch tensor. ``perplexity_from_loss(math.log(10))``
    is ``10.0``.
    """
    if _is_tensor(loss):
        loss = _tensor_to_numpy(loss)
    try:
        loss = float(loss)
    except (TypeError, ValueError):
        raise DataError(f"loss must be a single number, got {type(loss).__name__}: {loss!r}") from None
    if math.isnan(loss):
        return float("nan")
    try:
        return math.exp(loss)
    except OverflowError:
        return float("inf")


def _perplexity(predictions=None, references=None, eval_loss=None, losses=None, weights=None, **kwargs):
    if "model_id" in kwargs:
        raise ConfigError(
            'trainwright\'s "perplexity" does not run a model (that would need a Hub download). Pass the '
            "evaluation loss instead: compute(eval_loss=metrics_dict['eval_loss']) or compute(losses=[...])."
        )
    if kwargs:
        raise TypeError(f"perplexity got unexpected arguments: {sorted(kwargs)}")
    if predictions is not None or references is not None:
        raise ConfigError(
            '"perplexity" is computed from losses, not predictions: use compute(eval_loss=x) or '
            "compute(losses=[...], weights=[tokens per loss, optional])."
        )
    if (eval_loss is None) == (losses is None):
        raise ConfigError(
            '"perplexity" needs exactly one of eval_loss=<mean loss> or losses=[<per-batch or per-example losses>].'
        )
    if eval_loss is not None:
        return {"perplexity": perplexity_from_loss(eval_loss)}
    import numpy as np

    arr = _to_numpy(losses, "losses").astype(float).ravel()
    if arr.size == 0:
        raise DataError("`losses` is empty: there is nothing to score.")
    if weights is None:
        mean = float(arr.mean())
    else:
        w = _to_numpy(weights, "weights").astype(float).ravel()
        if w.shape != arr.shape:
            raise DataError(f"`weights` has {w.size} values but `losses` has {arr.size}.")
        if w.sum() <= 0:
            raise DataError("`weights` must sum to a positive number (they are token counts).")
        mean = float(np.average(arr, weights=w))
    return {"perplexity": perplexity_from_loss(mean)}
