"""The evaluation part of the pre-flight checks (:func:`trainwright.preflight.preflight`): every eval set's data is
checked like the train set's, and, when evaluation runs during training with ``compute_metrics`` or
``metric_for_best_model``, a dry evaluation on one batch of each eval set shows now, not after ``eval_steps`` of
training, a ``metric_for_best_model`` that evaluation does not produce, a ``compute_metrics`` that returns something
other than numbers, or one that always raises.

The dry evaluation runs ``Trainer._run_evaluation`` -- ``evaluation_loop`` exactly as ``evaluate()`` runs it, but
without logging and without callbacks -- so it goes through the methods the run itself calls
(``get_eval_dataloader``, ``evaluation_loop``, ``prediction_step``, ``compute_loss``). Where a subclass overrides
``evaluate`` or ``evaluation_loop`` (transformers' question-answering example does), the metrics come from the
subclass's own code, which the checks cannot run without its side effects (logging, callbacks): the dry
evaluation steps aside and the first evaluation decides, as in transformers.

When ``compute_metrics`` raises on the one-batch sample, an eval set of at most ``DRY_RUN_FULL_ROWS`` rows is
evaluated whole (what the first evaluation computes, before any training): if it still raises, the run stops
with a ``ConfigError`` chained to the user's exception (its traceback shows the failing line). A larger set is
not evaluated now: an error of the code itself (``NameError``, ``AttributeError``, ``TypeError``, ...) still stops
the run; anything else (say, a metric that needs both classes) is a warning, and the first evaluation decides.
"""
from __future__ import annotations

import os
import warnings
from typing import Any

import torch

from ..batch_size_search import evaluation_oom_not_retried
from ..checkpoint.manager import best_metric_key
from ..data.columns import is_iterable_dataset
from ..distributed import unwrap_model
from ..errors import ConfigError
from .checks import (
    SKIP_ENV,
    _preserved_collator,
    check_arrow_dataset,
    check_batch,
    check_collator,
    first_batch,
    overridden,
    preserved_rng,
)


def check_eval(trainer: Any, eval_dataset: Any = None, *, dry_run: bool = True) -> dict | None:
    """Checks every eval set like the train set (labels, token ids, lengths) and, with ``dry_run``, evaluates
    one batch of each: compute_metrics must return numbers and metric_for_best_model must be among the
    metrics. Returns the dry-run metrics (or None).

    Everything goes through the methods the run itself calls (get_eval_dataloader, evaluation_loop,
    prediction_step, compute_loss): where a subclass overrides ``evaluate`` or ``evaluation_loop``, the metrics
    come from its own code, so the dry evaluation steps aside; a ``get_eval_dataloader`` that returns something
    other than a DataLoader is not inspected."""
    if os.environ.get(SKIP_ENV, "").strip() in ("1", "true", "True", "yes"):
        return None
    model = unwrap_model(trainer.model)
    eval_dataset = trainer.eval_dataset if eval_dataset is None else eval_dataset
    if eval_dataset is None:
        return None
    dry_run = dry_run and not overridden(trainer, "evaluate", "evaluation_loop")
    sets = eval_dataset.items() if isinstance(eval_dataset, dict) else [(None, eval_dataset)]
    produced: dict = {}
    deferred = False
    for name, ds in sets:
        where = "eval_dataset" if name is None else f"eval_dataset[{name!r}]"
        prefix = "eval" if name is None else f"eval_{name}"
        dataloader = trainer.get_eval_dataloader(ds)
        if not isinstance(dataloader, torch.utils.data.DataLoader):
            deferred = True  # a subclass's own batches: the first evaluation decides
            continue
        check_collator(dataloader.collate_fn, trainer.processing_class, where)
        check_arrow_dataset(model, dataloader.dataset, where, trainer.label_names)
        batch = first_batch(dataloader, where, trainer.label_names, model)
        check_batch(trainer, model, batch, where, require_labels=False)
        if dry_run and not deferred:
            metrics = _dry_evaluate_set(trainer, batch, ds, where, prefix)
            if metrics is None:  # compute_metrics needs more than the sample: the first evaluation decides
                deferred = True
            else:
                produced.update(metrics)
    if dry_run and not deferred and trainer.args.metric_for_best_model is not None:
        key = best_metric_key(trainer.args)
        if key not in produced:
            shown = sorted(k for k in produced if not k.endswith(("_runtime", "_per_second")))
            raise ConfigError(
                f"metric_for_best_model={trainer.args.metric_for_best_model!r}: evaluation produces no {key!r} "
                f"(checked on one batch before training). It produces: {', '.join(shown) or 'nothing'}. Set "
                f"metric_for_best_model to one of these (without the 'eval_' prefix), or return it from "
                f"compute_metrics.")
    return produced if dry_run and not deferred else None


# ================================================================================================ dry evaluation
# when compute_metrics raises on the one-batch sample, an eval set of at most this many rows is evaluated whole
# (exactly what the first evaluation computes, before any training) to tell "needs more rows" from "always fails"
DRY_RUN_FULL_ROWS = 1024
# exceptions that say the code itself is wrong, whatever the rows: raised at once even for a larger eval set
_CODE_ERRORS = (NameError, AttributeError, TypeError, ImportError, NotImplementedError, SyntaxError)


class MetricsFailed(Exception):
    """compute_metrics raised during the pre-flight dry evaluation (the user's exception is the __cause__)."""


def _dry_evaluate_set(trainer, batch: dict, dataset, where: str, prefix: str) -> dict | None:
    """The dry evaluation of one eval set: the prefixed metrics, or None when compute_metrics may need more rows
    than the sample (a warning says so). A compute_metrics that fails on the whole set (or, for a set too large
    to evaluate now, fails with an error of the code itself) raises ConfigError chained to its own exception."""
    try:
        return _dry_evaluate(trainer, [batch], prefix)
    except MetricsFailed as e:
        cause = e.__cause__
    rows = len(dataset) if hasattr(dataset, "__len__") and not is_iterable_dataset(dataset) else None
    if rows is not None and rows <= DRY_RUN_FULL_ROWS:
        dataloader = trainer.get_eval_dataloader(dataset)
        try:
            with _preserved_collator(dataloader.collate_fn):  # a seeded collator draws as if this had not run
                return _dry_evaluate(trainer, dataloader, prefix)
        except MetricsFailed as e:
            cause = e.__cause__
            raise ConfigError(
                f"compute_metrics raised {type(cause).__name__}: {cause} -- on the whole {where} ({rows} rows), "
                f"evaluated before training, so the first evaluation would fail the same way after eval_steps of "
                f"training. Fix compute_metrics (its traceback is above).") from cause
    if isinstance(cause, _CODE_ERRORS):
        raise ConfigError(
            f"compute_metrics raised {type(cause).__name__}: {cause} -- on one {where} batch before training; an "
            f"error of this kind does not depend on the rows, so the first evaluation would fail the same way "
            f"after eval_steps of training. Fix compute_metrics (its traceback is above).") from cause
    warnings.warn(f"compute_metrics could not run on one {prefix} batch before training "
                  f"({type(cause).__name__}: {cause}); it will first run at the first evaluation.", stacklevel=4)
    return None


def _dry_evaluate(trainer, batches, prefix: str) -> dict | None:
    """trainer._run_evaluation (evaluation_loop, as evaluate() runs it, without logging or callbacks) on
    ``batches``, the RNGs restored. Returns the prefixed metrics; raises MetricsFailed when compute_metrics
    raised. Errors of the forward pass itself propagate: the first evaluation would hit them too, after training
    for eval_steps."""
    model = unwrap_model(trainer.model)
    if trainer.precision.eval_dtype is not None and any(p.dtype != torch.float32 for p in model.parameters()):
        return None  # evaluation_loop would cast a non-fp32 model to fp32 afterwards: leave it to the first evaluation
    was_training = model.training
    try:
        with preserved_rng(), evaluation_oom_not_retried(trainer.args):  # not a train batch size problem
            output = trainer._run_evaluation(batches, "Evaluation", metric_key_prefix=prefix, quiet=True)
        return output.metrics
    finally:
        model.train(was_training)
