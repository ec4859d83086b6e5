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
                      kwarg ``no_answer_threshold=1.0`` (see ``trainwright.metrics.squad``)
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

Importing this package is cheap: numpy, scikit-learn, scipy and the text packages are imported only
when a metric is computed.

The package: this module holds the registry, :class:`Metric`, :func:`load`, :func:`combine` and
:func:`list_metrics`; one module per family holds the metrics -- :mod:`.classification` (accuracy, f1, precision,
recall, matthews_correlation, glue), :mod:`.regression` (pearsonr, spearmanr, mse, mae), :mod:`.text_generation`
(sacrebleu, bleu, rouge), :mod:`.seqeval`, :mod:`.squad` (squad, squad_v2) and :mod:`.perplexity`; input conversion
is in :mod:`._inputs`.
"""

from __future__ import annotations

import importlib.util
import inspect
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from ..errors import ConfigError, DataError, did_you_mean
from ._inputs import _NLP_EXTRA, _is_tensor, _tensor_to_numpy, _to_list
from .classification import GLUE_CONFIGS, _accuracy, _f1, _glue, _matthews_correlation, _precision, _recall
from .perplexity import _perplexity, perplexity_from_loss
from .regression import _mae, _mse, _pearsonr, _spearmanr
from .seqeval import _seqeval
from .squad import squad as _squad
from .squad import squad_v2 as _squad_v2
from .text_generation import _bleu, _rouge, _sacrebleu

__all__ = [
    "Metric",
    "CombinedMetrics",
    "load",
    "combine",
    "list_metrics",
    "perplexity_from_loss",
    "GLUE_CONFIGS",
]

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
