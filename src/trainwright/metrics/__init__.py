"""Offline evaluation metrics with the same names, arguments and result keys as Hugging Face ``evaluate``.

``evaluate.load("accuracy")`` downloads a script from the Hub; ``trainwright.metrics.load("accuracy")``
needs no network: every metric is computed here with scikit-learn, scipy and numpy (and, for the text
metrics, the optional ``seqeval``, ``sacrebleu`` and ``rouge_score`` packages:
``pip install "trainwright[nlp]"``)::

    from trainwright import metrics

    accuracy = metrics.load("accuracy")
    accuracy.compute(predictions=[0, 1, 1, 0], references=[0, 1, 0, 0])   # {"accuracy": 0.75}

    glue = metrics.load("glue", "mrpc")
    glue.compute(predictions=preds, references=labels)                     # {"accuracy": ..., "f1": ...}

    clf = metrics.combine("accuracy", "f1", "precision", "recall")
    clf.compute(predictions=preds, references=labels)                      # all four keys in one dict

``predictions`` and ``references`` may be lists, numpy arrays or torch tensors (on any device, any
dtype). Metric objects also keep evaluate's ``add_batch()`` / ``add()`` then ``compute()`` pattern.

Metrics and their result keys (as in ``evaluate``):

===================== ====================================================================
``accuracy``          ``{"accuracy"}``; kwargs ``normalize=True``, ``sample_weight=None``
``f1``                ``{"f1"}``; kwargs ``labels``, ``pos_label=1``, ``average="binary"``,
                      ``sample_weight``, ``zero_division``
``precision``         ``{"precision"}``; same kwargs as ``f1``
``recall``            ``{"recall"}``; same kwargs as ``f1``
``matthews_correlation`` ``{"matthews_correlation"}``; kwarg ``sample_weight``
``pearsonr``          ``{"pearsonr"}``; ``return_pvalue=True`` adds ``"p-value"``
``spearmanr``         ``{"spearmanr"}``; ``return_pvalue=True`` adds ``"spearmanr_pvalue"``
``mse``               ``{"mse"}``; ``squared=False`` gives the RMSE, still under ``"mse"``
``mae``               ``{"mae"}``
``glue`` (config)     sst2/mnli/mnli_matched/mnli_mismatched/qnli/rte/wnli/hans:
                      ``{"accuracy"}``; mrpc/qqp: ``{"accuracy", "f1"}``;
                      stsb: ``{"pearson", "spearmanr"}``; cola: ``{"matthews_correlation"}``
``seqeval``           per entity type ``{"precision", "recall", "f1", "number"}`` plus
                      ``overall_precision``, ``overall_recall``, ``overall_f1``, ``overall_accuracy``
``sacrebleu``         ``{"score" (0-100), "counts", "totals", "precisions", "bp", "sys_len", "ref_len"}``
``bleu``              ``{"bleu" (0-1), "precisions", "brevity_penalty", "length_ratio",
                      "translation_length", "reference_length"}``
``rouge``             ``{"rouge1", "rouge2", "rougeL", "rougeLsum"}`` (mean F-measure)
``perplexity``        ``{"perplexity"}`` from losses: ``compute(eval_loss=x)`` or ``compute(losses=[...])``
``squad``             ``{"exact_match", "f1"}`` (0-100); predictions ``[{"id", "prediction_text"}]``,
                      references ``[{"id", "answers": {"text": [...], "answer_start": [...]}}]``
``squad_v2``          ``{"exact", "f1", "total", "HasAns_*", "NoAns_*", "best_exact", "best_exact_thresh",
                      "best_f1", "best_f1_thresh"}``; predictions also carry ``"no_answer_probability"``;
                      kwarg ``no_answer_threshold=1.0`` (see ``trainwright.metrics_squad``)
===================== ====================================================================

Differences from ``evaluate``, all on purpose:

* Scalars are plain Python ``float`` (``int`` for seqeval's ``"number"``), never numpy scalars, so
  results can go straight to JSON and to loggers. Per-class results (``average=None``,
  ``multioutput="raw_values"``) are lists of floats instead of numpy arrays.
* ``rouge`` with ``use_aggregator=True`` returns the plain mean of the per-example F-measures.
  ``evaluate`` returns the middle of a bootstrap confidence interval (an unseeded random estimate of
  that same mean), so its numbers jitter in the third decimal from run to run; these do not.
* ``perplexity`` does not run a language model (``evaluate``'s version downloads one): it turns the
  cross-entropy loss the Trainer already computed into a perplexity, ``exp(loss)``.
  See :func:`perplexity_from_loss`.
* Predictions that look like logits (shape ``(N, C)`` against labels of shape ``(N,)``) are refused
  with a message telling you to take ``argmax(axis=-1)`` first, instead of a scikit-learn error.

Importing this module is cheap: numpy, scikit-learn, scipy and the text packages are imported only
when a metric is computed.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
from collections import Counter
from typing import Any, Callable, Iterable

from trainwright.errors import ConfigError, DataError, did_you_mean
from trainwright.metrics_squad import squad as _squad
from trainwright.metrics_squad import squad_v2 as _squad_v2

__all__ = [
    "Metric",
    "CombinedMetrics",
    "load",
    "combine",
    "list_metrics",
    "perplexity_from_loss",
    "GLUE_CONFIGS",
]

_NLP_EXTRA = 'pip install "trainwright[nlp]"'

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


# --------------------------------------------------------------------------------------------------
# input conversion helpers
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# metric implementations: each takes (predictions, references, **kwargs) and returns a dict
# --------------------------------------------------------------------------------------------------


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


def _references_per_prediction(predictions, references, metric: str) -> tuple[list[str], list[list[str]]]:
    preds = _text_list(predictions, "predictions")
    refs = _text_list(references, "references")
    _check_pair(preds, refs)
    refs = [[r] if isinstance(r, str) else _text_list(r, "references[i]") for r in refs]
    for i, p in enumerate(preds):
        if not isinstance(p, str):
            raise DataError(
                f'"{metric}" scores detokenized text: predictions[{i}] is a {type(p).__name__}, not a str. '
                f"Decode token ids first (tokenizer.batch_decode(ids, skip_special_tokens=True))."
            )
    return preds, refs


def _sacrebleu(
    predictions,
    references,
    smooth_method="exp",
    smooth_value=None,
    force=False,
    lowercase=False,
    tokenize=None,
    use_effective_order=False,
):
    sacrebleu = _require("sacrebleu", "sacrebleu", "sacrebleu")
    preds, refs = _references_per_prediction(predictions, references, "sacrebleu")
    n_refs = len(refs[0])
    if any(len(r) != n_refs for r in refs):
        raise DataError("sacrebleu needs the same number of references for every prediction.")
    transposed = [[r[i] for r in refs] for i in range(n_refs)]
    out = sacrebleu.corpus_bleu(
        preds,
        transposed,
        smooth_method=smooth_method,
        smooth_value=smooth_value,
        force=force,
        lowercase=lowercase,
        use_effective_order=use_effective_order,
        **({"tokenize": tokenize} if tokenize else {}),
    )
    return {
        "score": float(out.score),
        "counts": [int(c) for c in out.counts],
        "totals": [int(t) for t in out.totals],
        "precisions": [float(p) for p in out.precisions],
        "bp": float(out.bp),
        "sys_len": int(out.sys_len),
        "ref_len": int(out.ref_len),
    }


def _ngrams(tokens: list[str], max_order: int) -> Counter:
    counts: Counter = Counter()
    for order in range(1, max_order + 1):
        for i in range(len(tokens) - order + 1):
            counts[tuple(tokens[i : i + order])] += 1
    return counts


def _bleu(predictions, references, tokenizer=None, max_order=4, smooth=False):
    """evaluate's "bleu": the tensorflow/nmt corpus BLEU on 13a-tokenized text, a score in [0, 1]."""
    if tokenizer is None:
        tok13a = _require("sacrebleu.tokenizers.tokenizer_13a", "sacrebleu", "bleu").Tokenizer13a()

        def tokenizer(line: str) -> list[str]:
            return tok13a(line).split()

    preds, refs = _references_per_prediction(predictions, references, "bleu")
    ref_tokens = [[tokenizer(r) for r in rs] for rs in refs]
    pred_tokens = [tokenizer(p) for p in preds]

    matches = [0] * max_order
    possible = [0] * max_order
    reference_length = 0
    translation_length = 0
    for rs, t in zip(ref_tokens, pred_tokens):
        reference_length += min(len(r) for r in rs)
        translation_length += len(t)
        merged: Counter = Counter()
        for r in rs:
            merged |= _ngrams(r, max_order)
        overlap = _ngrams(t, max_order) & merged
        for ngram, count in overlap.items():
            matches[len(ngram) - 1] += count
        for order in range(1, max_order + 1):
            if len(t) - order + 1 > 0:
                possible[order - 1] += len(t) - order + 1
    precisions = [0.0] * max_order
    for i in range(max_order):
        if smooth:
            precisions[i] = (matches[i] + 1.0) / (possible[i] + 1.0)
        elif possible[i] > 0:
            precisions[i] = matches[i] / possible[i]
    geo_mean = math.exp(sum(math.log(p) / max_order for p in precisions)) if min(precisions) > 0 else 0.0
    ratio = translation_length / reference_length if reference_length > 0 else 0.0
    if ratio > 1.0:
        bp = 1.0
    elif ratio > 0.0:
        bp = math.exp(1.0 - 1.0 / ratio)
    else:
        bp = 0.0
    return {
        "bleu": float(geo_mean * bp),
        "precisions": [float(p) for p in precisions],
        "brevity_penalty": float(bp),
        "length_ratio": float(ratio),
        "translation_length": int(translation_length),
        "reference_length": int(reference_length),
    }


class _RougeTokenizer:
    """Wraps a plain ``str -> list[str]`` function into the object rouge_score expects."""

    def __init__(self, fn: Callable[[str], list[str]]):
        self.fn = fn

    def tokenize(self, text: str) -> list[str]:
        return self.fn(text)


def _rouge(predictions, references, rouge_types=None, use_aggregator=True, use_stemmer=False, tokenizer=None):
    rouge_scorer = _require("rouge_score.rouge_scorer", "rouge_score", "rouge")
    preds = _text_list(predictions, "predictions")
    refs = _text_list(references, "references")
    _check_pair(preds, refs)
    if rouge_types is None:
        rouge_types = ["rouge1", "rouge2", "rougeL", "rougeLsum"]
    if tokenizer is not None and not hasattr(tokenizer, "tokenize"):
        tokenizer = _RougeTokenizer(tokenizer)
    scorer = rouge_scorer.RougeScorer(rouge_types=list(rouge_types), use_stemmer=use_stemmer, tokenizer=tokenizer)
    per_example = []
    for ref, pred in zip(refs, preds):
        if isinstance(ref, str):
            per_example.append(scorer.score(ref, pred))
        else:
            per_example.append(scorer.score_multi(list(ref), pred))
    if use_aggregator:
        return {k: float(sum(s[k].fmeasure for s in per_example) / len(per_example)) for k in rouge_types}
    return {k: [float(s[k].fmeasure) for s in per_example] for k in rouge_types}


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


# --------------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------------

_LABEL_CONFIGS = (None, "default", "multiclass", "binary", "multilabel")

# name -> (function, allowed configs, (module, pip package) needed or None, one-line description)
_REGISTRY: dict[str, tuple[Callable[..., dict], tuple, tuple[str, str] | None, str]] = {
    "accuracy": (_accuracy, _LABEL_CONFIGS, None, "Fraction of predictions equal to the reference labels."),
    "f1": (_f1, _LABEL_CONFIGS, None, "F1 score (harmonic mean of precision and recall)."),
    "precision": (_precision, _LABEL_CONFIGS, None, "Precision: true positives / predicted positives."),
    "recall": (_recall, _LABEL_CONFIGS, None, "Recall: true positives / actual positives."),
    "matthews_correlation": (
        _matthews_correlation,
        _LABEL_CONFIGS,
        None,
        "Matthews correlation coefficient, in [-1, 1].",
    ),
    "pearsonr": (_pearsonr, (None, "default"), None, "Pearson correlation coefficient."),
    "spearmanr": (_spearmanr, (None, "default"), None, "Spearman rank correlation coefficient."),
    "mse": (_mse, (None, "default", "multilist"), None, "Mean squared error (RMSE with squared=False)."),
    "mae": (_mae, (None, "default", "multilist"), None, "Mean absolute error."),
    "glue": (_glue, GLUE_CONFIGS, None, "The GLUE benchmark's metric for one task (config = task name)."),
    "seqeval": (_seqeval, (None, "default"), ("seqeval", "seqeval"), "Entity-level precision/recall/F1 (IOB tags)."),
    "sacrebleu": (_sacrebleu, (None, "default"), ("sacrebleu", "sacrebleu"), "SacreBLEU corpus score, 0-100."),
    "bleu": (_bleu, (None, "default"), ("sacrebleu", "sacrebleu"), "Corpus BLEU on 13a tokens, 0-1."),
    "rouge": (_rouge, (None, "default"), ("rouge_score", "rouge_score"), "ROUGE-1/2/L/Lsum mean F-measures."),
    "perplexity": (_perplexity, (None, "default"), None, "exp(mean cross-entropy loss), from losses."),
    "squad": (_squad, (None, "default", "plain_text"), None, "SQuAD v1.1 exact match and token F1, 0-100."),
    "squad_v2": (_squad_v2, (None, "default", "plain_text"), None,
                 "SQuAD v2.0 exact/F1 with unanswerable questions and the best no-answer threshold."),
}


def list_metrics() -> list[str]:
    """The names :func:`load` accepts, sorted."""
    return sorted(_REGISTRY)


def _normalize_name(name: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"metric name must be a str, got {type(name).__name__}")
    key = name.strip()
    for prefix in ("evaluate-metric/", "metrics/"):
        if key.lower().startswith(prefix):
            key = key[len(prefix) :]
    return key.lower().replace("-", "_")


class Metric:
    """One metric: ``compute(predictions=..., references=..., **kwargs) -> dict``.

    Like an ``evaluate.EvaluationModule``, it can also gather inputs batch by batch with
    :meth:`add_batch` / :meth:`add`, then score them all in :meth:`compute` (which empties the buffer).
    """

    def __init__(self, name: str, config_name: str | None = None):
        key = _normalize_name(name)
        if key not in _REGISTRY:
            hint = did_you_mean(key, list(_REGISTRY), cutoff=0.5, show=lambda m: f'"{m}"')
            raise ConfigError(
                f"Unknown metric {name!r}.{hint} Available metrics: {', '.join(list_metrics())}."
            )
        fn, configs, requirement, description = _REGISTRY[key]
        if isinstance(config_name, str):
            config_name = config_name.strip().lower()
        if key == "glue":
            if config_name is None:
                raise ConfigError(
                    'The "glue" metric needs a task name as its config, e.g. load("glue", "mrpc"). '
                    f"Valid configs: {', '.join(GLUE_CONFIGS)}."
                )
            if config_name not in configs:
                hint = did_you_mean(config_name, list(configs), cutoff=0.5, show=lambda m: f'"{m}"')
                raise ConfigError(
                    f"Unknown glue config {config_name!r}.{hint} Valid configs: {', '.join(GLUE_CONFIGS)}."
                )
        elif config_name not in configs:
            valid = [c for c in configs if c is not None]
            raise ConfigError(
                f'The "{key}" metric has no config {config_name!r}; valid configs: {", ".join(valid)} '
                f"(or none)."
            )
        if requirement is not None and importlib.util.find_spec(requirement[0]) is None:
            raise ImportError(
                f'The "{key}" metric needs the `{requirement[1]}` package, which is not installed. '
                f"Install it with: {_NLP_EXTRA}"
            )
        self.name = key
        self.config_name = config_name
        self.description = description
        self._fn = fn
        self._predictions: list = []
        self._references: list = []

    # -- evaluate-compatible batch accumulation -------------------------------------------------
    def add_batch(self, *, predictions: Any = None, references: Any = None) -> None:
        """Buffer one batch of predictions and references; :meth:`compute` then scores everything."""
        if predictions is None or references is None:
            raise DataError("add_batch() needs both predictions= and references=.")
        p, r = _to_list(predictions), _to_list(references)
        if len(p) != len(r):
            raise DataError(f"This batch has {len(p)} predictions but {len(r)} references.")
        self._predictions.extend(p)
        self._references.extend(r)

    def add(self, *, prediction: Any = None, reference: Any = None) -> None:
        """Buffer one example."""
        if _is_tensor(prediction):
            prediction = _tensor_to_numpy(prediction).tolist()
        if _is_tensor(reference):
            reference = _tensor_to_numpy(reference).tolist()
        self._predictions.append(prediction)
        self._references.append(reference)

    def _kwargs_accepted(self) -> set[str] | None:
        params = inspect.signature(self._fn).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return None
        return {n for n in params if not n.startswith("_") and n not in ("predictions", "references")}

    def compute(self, predictions: Any = None, references: Any = None, **kwargs: Any) -> dict[str, Any]:
        """Score ``predictions`` against ``references`` (or the batches added so far) and return a dict."""
        if predictions is None and references is None and self._predictions:
            predictions, references = self._predictions, self._references
        self._predictions, self._references = [], []
        accepted = self._kwargs_accepted()
        if accepted is not None:
            unknown = sorted(set(kwargs) - accepted)
            if unknown:
                raise TypeError(
                    f'The "{self.name}" metric got unexpected argument(s) {unknown}; it accepts: '
                    f"{', '.join(sorted(accepted)) or 'no extra arguments'}."
                )
        extra: dict[str, Any] = {}
        if self.name == "glue":
            extra["_config"] = self.config_name
        elif self.config_name == "multilabel" and "_multilabel" in inspect.signature(self._fn).parameters:
            extra["_multilabel"] = True
        if self.name == "perplexity":
            return self._fn(predictions=predictions, references=references, **kwargs)
        return self._fn(predictions, references, **kwargs, **extra)

    def __repr__(self) -> str:
        config = f", config_name={self.config_name!r}" if self.config_name else ""
        return f"trainwright.metrics.Metric(name={self.name!r}{config})"


def load(name: str, config: str | None = None, *, config_name: str | None = None, **_ignored: Any) -> Metric:
    """Return the metric ``name`` (e.g. ``"accuracy"``, or ``"glue"`` with ``config="mrpc"``).

    Drop-in for ``evaluate.load(name, config_name)``: the same names, result keys and compute()
    arguments, computed offline. Extra keyword arguments evaluate accepts (``cache_dir``,
    ``experiment_id``, ...) are ignored. Raises ``ValueError`` for an unknown name or config, listing
    the valid ones, and ``ImportError`` naming ``pip install "trainwright[nlp]"`` when a text metric's
    package is missing.
    """
    if config is not None and config_name is not None and config != config_name:
        raise ConfigError(f"config={config!r} and config_name={config_name!r} disagree; pass one of them.")
    return Metric(name, config if config is not None else config_name)


class CombinedMetrics:
    """Several metrics computed together, their results merged in one dict (like ``evaluate.combine``).

    A result key two metrics share is prefixed with the metric's name (``"glue_accuracy"``), and with
    ``force_prefix=True`` every key is. Keyword arguments to :meth:`compute` go to each metric that
    accepts them (``average="macro"`` reaches f1/precision/recall, not accuracy).
    """

    def __init__(self, metrics: Iterable[Metric], force_prefix: bool = False):
        self.metrics = list(metrics)
        self.force_prefix = force_prefix
        self.name = "+".join(m.name for m in self.metrics)

    def add_batch(self, *, predictions: Any = None, references: Any = None) -> None:
        for m in self.metrics:
            m.add_batch(predictions=predictions, references=references)

    def add(self, *, prediction: Any = None, reference: Any = None) -> None:
        for m in self.metrics:
            m.add(prediction=prediction, reference=reference)

    def compute(self, predictions: Any = None, references: Any = None, **kwargs: Any) -> dict[str, Any]:
        results = []
        leftover = set(kwargs)
        for m in self.metrics:
            accepted = m._kwargs_accepted()
            mine = kwargs if accepted is None else {k: v for k, v in kwargs.items() if k in accepted}
            leftover -= set(mine)
            results.append(m.compute(predictions=predictions, references=references, **mine))
        if leftover:
            raise TypeError(f"No metric in {self.name} accepts argument(s) {sorted(leftover)}.")
        return self._merge(results)

    def _merge(self, results: list[dict]) -> dict[str, Any]:
        names = [m.name for m in self.metrics]
        key_counts = Counter(k for r in results for k in r)
        dup_keys = {k for k, c in key_counts.items() if c > 1}
        dup_names = {n for n, c in Counter(names).items() if c > 1}
        seen = {n: 0 for n in dup_names}
        merged: dict[str, Any] = {}
        for name, result in zip(names, results):
            for k, v in result.items():
                if k not in dup_keys and not self.force_prefix:
                    merged[k] = v
                elif name in seen:
                    merged[f"{name}_{seen[name]}_{k}"] = v
                else:
                    merged[f"{name}_{k}"] = v
            if name in seen:
                seen[name] += 1
        return merged

    def __repr__(self) -> str:
        return f"trainwright.metrics.CombinedMetrics({self.metrics!r})"


def _is_name_config_pair(item: Any) -> bool:
    """("glue", "mrpc") is one metric with a config; ("accuracy", "f1") is two metrics."""
    return (
        isinstance(item, tuple)
        and len(item) == 2
        and isinstance(item[0], str)
        and (item[1] is None or (isinstance(item[1], str) and _normalize_name(item[1]) not in _REGISTRY))
    )


def combine(*metrics: Any, force_prefix: bool = False) -> CombinedMetrics:
    """Combine metrics so one ``compute()`` returns all their keys: ``combine("accuracy", "f1")``.

    Each argument is a metric name, a ``(name, config)`` pair such as ``("glue", "mrpc")``, a
    :class:`Metric`, or one list of these (``combine(["accuracy", "f1"])``, as ``evaluate.combine`` takes).
    """
    if len(metrics) == 1 and isinstance(metrics[0], list):
        metrics = tuple(metrics[0])
    elif len(metrics) == 1 and isinstance(metrics[0], tuple) and not _is_name_config_pair(metrics[0]):
        metrics = metrics[0]
    if not metrics:
        raise ConfigError("combine() needs at least one metric, e.g. combine('accuracy', 'f1').")
    built = []
    for m in metrics:
        if isinstance(m, Metric):
            built.append(m)
        elif isinstance(m, str):
            built.append(load(m))
        elif _is_name_config_pair(m):
            built.append(load(m[0], m[1]))
        else:
            raise TypeError(
                f"combine() takes metric names, (name, config) pairs or Metric objects, got {m!r}."
            )
    return CombinedMetrics(built, force_prefix=force_prefix)
