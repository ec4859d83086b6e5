"""Classification metrics: accuracy, f1, precision, recall, matthews_correlation, and the GLUE tasks' metric."""
from __future__ import annotations

from ..errors import ConfigError, DataError
from ._inputs import _classification_arrays, _regression_arrays, _score

GLUE_CONFIGS = (
    "sst2",
    "mnli",
    "mnli_mismatched",
    "mnli_matched",
    "cola",
    "stsb",
    "mrpc",
    "qqp",
    "qnli",
    "rte",
    "wnli",
    "hans",
)


def _accuracy(predictions, references, normalize=True, sample_weight=None):
    from sklearn.metrics import accuracy_score

    preds, refs = _classification_arrays(predictions, references)
    return {
        "accuracy": float(accuracy_score(refs, preds, normalize=normalize, sample_weight=sample_weight))
    }


def _prf(which: str):
    def compute(
        predictions,
        references,
        labels=None,
        pos_label=1,
        average="binary",
        sample_weight=None,
        zero_division="warn",
        *,
        _multilabel=False,
    ):
        import sklearn.metrics as skm

        fn = {"f1": skm.f1_score, "precision": skm.precision_score, "recall": skm.recall_score}[which]
        preds, refs = _classification_arrays(predictions, references, multilabel=_multilabel)
        if average == "binary" and not _multilabel:
            classes = set(refs.ravel().tolist()) | set(preds.ravel().tolist())
            if len(classes) > 2:
                raise DataError(
                    f'"{which}" defaults to average="binary", but the labels have {len(classes)} classes '
                    f"({sorted(classes)[:10]}). For multi-class labels pass average=\"macro\", "
                    f'"micro" or "weighted" (or average=None for one score per class).'
                )
        score = fn(
            refs,
            preds,
            labels=labels,
            pos_label=pos_label,
            average=average,
            sample_weight=sample_weight,
            zero_division=zero_division,
        )
        return {which: _score(score)}

    compute.__name__ = f"_{which}"
    return compute


_f1 = _prf("f1")
_precision = _prf("precision")
_recall = _prf("recall")


def _matthews_correlation(predictions, references, sample_weight=None, average=None, *, _multilabel=False):
    from sklearn.metrics import matthews_corrcoef

    preds, refs = _classification_arrays(predictions, references, multilabel=_multilabel)
    if _multilabel:
        if preds.ndim != 2 or refs.ndim != 2:
            raise DataError(
                'The "multilabel" matthews_correlation needs 2-D predictions and references of shape '
                f"(examples, labels); got {tuple(preds.shape)} and {tuple(refs.shape)}."
            )
        scores = [
            float(matthews_corrcoef(refs[:, i], preds[:, i], sample_weight=sample_weight))
            for i in range(refs.shape[1])
        ]
        if average == "macro":
            return {"matthews_correlation": float(sum(scores) / len(scores))}
        if average is not None:
            raise ConfigError(f'average must be None or "macro" for the multilabel config, got {average!r}.')
        return {"matthews_correlation": scores}
    return {"matthews_correlation": float(matthews_corrcoef(refs, preds, sample_weight=sample_weight))}


def _glue(predictions, references, *, _config):
    if _config == "stsb":
        from scipy.stats import pearsonr, spearmanr

        preds, refs = _regression_arrays(predictions, references)
        return {"pearson": float(pearsonr(preds, refs)[0]), "spearmanr": float(spearmanr(preds, refs)[0])}
    preds, refs = _classification_arrays(predictions, references)
    if _config == "cola":
        from sklearn.metrics import matthews_corrcoef

        return {"matthews_correlation": float(matthews_corrcoef(refs, preds))}
    accuracy = float((preds == refs).mean())
    if _config in ("mrpc", "qqp"):
        from sklearn.metrics import f1_score

        return {"accuracy": accuracy, "f1": float(f1_score(y_true=refs, y_pred=preds))}
    return {"accuracy": accuracy}
