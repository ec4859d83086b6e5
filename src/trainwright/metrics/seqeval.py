"""Entity-level precision / recall / F1 of IOB-tagged sequences (the ``seqeval`` package)."""
from __future__ import annotations

import importlib
from typing import Any

from ..errors import ConfigError, DataError
from ._inputs import _check_pair, _require, _text_list


def _seqeval(
    predictions,
    references,
    suffix=False,
    scheme=None,
    mode=None,
    sample_weight=None,
    zero_division="warn",
):
    seqeval_metrics = _require("seqeval.metrics", "seqeval", "seqeval")
    preds = [_text_list(p, "predictions[i]") for p in _text_list(predictions, "predictions")]
    refs = [_text_list(r, "references[i]") for r in _text_list(references, "references")]
    _check_pair(preds, refs)
    for i, (p, r) in enumerate(zip(preds, refs)):
        if len(p) != len(r):
            raise DataError(
                f"Sentence {i} has {len(p)} predicted tags but {len(r)} reference tags. Drop the tags of "
                f"ignored positions (label -100) from both before calling seqeval."
            )
    if scheme is not None and isinstance(scheme, str):
        scheme_module = importlib.import_module("seqeval.scheme")
        try:
            scheme = getattr(scheme_module, scheme)
        except AttributeError:
            raise ConfigError(
                f"scheme should be one of [IOB1, IOB2, IOE1, IOE2, IOBES, BILOU], got {scheme!r}."
            ) from None
    report = seqeval_metrics.classification_report(
        y_true=refs,
        y_pred=preds,
        suffix=suffix,
        output_dict=True,
        scheme=scheme,
        mode=mode,
        sample_weight=sample_weight,
        zero_division=zero_division,
    )
    report.pop("macro avg", None)
    report.pop("weighted avg", None)
    overall = report.pop("micro avg", None) or {"precision": 0.0, "recall": 0.0, "f1-score": 0.0}
    scores: dict[str, Any] = {
        type_name: {
            "precision": float(s["precision"]),
            "recall": float(s["recall"]),
            "f1": float(s["f1-score"]),
            "number": int(s["support"]),
        }
        for type_name, s in report.items()
    }
    scores["overall_precision"] = float(overall["precision"])
    scores["overall_recall"] = float(overall["recall"])
    scores["overall_f1"] = float(overall["f1-score"])
    scores["overall_accuracy"] = float(seqeval_metrics.accuracy_score(y_true=refs, y_pred=preds))
    return scores
