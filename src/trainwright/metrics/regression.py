"""Regression metrics: pearsonr, spearmanr, mse, mae."""
from __future__ import annotations

from ._inputs import _regression_arrays, _score


def _pearsonr(predictions, references, return_pvalue=False):
    from scipy.stats import pearsonr

    preds, refs = _regression_arrays(predictions, references)
    r, p = pearsonr(refs, preds)
    if return_pvalue:
        return {"pearsonr": float(r), "p-value": float(p)}
    return {"pearsonr": float(r)}


def _spearmanr(predictions, references, return_pvalue=False):
    from scipy.stats import spearmanr

    preds, refs = _regression_arrays(predictions, references)
    rho, p = spearmanr(refs, preds)
    if return_pvalue:
        return {"spearmanr": float(rho), "spearmanr_pvalue": float(p)}
    return {"spearmanr": float(rho)}


def _mse(predictions, references, sample_weight=None, multioutput="uniform_average", squared=True):
    import sklearn.metrics as skm

    preds, refs = _regression_arrays(predictions, references)
    if squared:
        value = skm.mean_squared_error(refs, preds, sample_weight=sample_weight, multioutput=multioutput)
    elif hasattr(skm, "root_mean_squared_error"):  # scikit-learn >= 1.4
        value = skm.root_mean_squared_error(refs, preds, sample_weight=sample_weight, multioutput=multioutput)
    else:  # pragma: no cover - older scikit-learn
        value = skm.mean_squared_error(
            refs, preds, sample_weight=sample_weight, multioutput=multioutput, squared=False
        )
    return {"mse": _score(value)}


def _mae(predictions, references, sample_weight=None, multioutput="uniform_average"):
    from sklearn.metrics import mean_absolute_error

    preds, refs = _regression_arrays(predictions, references)
    return {"mae": _score(mean_absolute_error(refs, preds, sample_weight=sample_weight, multioutput=multioutput))}
