"""``batch_eval_metrics``: ``compute_metrics`` called on each evaluation batch, as transformers 5.x does.

With ``TrainingArguments(batch_eval_metrics=True)`` and a ``compute_metrics``, the evaluation loop calls
``compute_metrics(EvalPrediction(predictions, label_ids, ...), compute_result=is_last)`` after every batch that
has predictions and labels, ``compute_result=True`` on the last batch only; the metrics of the evaluation are what
that last call returns (prefixed as usual, next to ``eval_loss``). A batch's predictions and labels are torch
tensors on the device (the logits after ``preprocess_logits_for_metrics``; token-level outputs of a trimmed
pre-padded batch padded back to the batch's width with -100), as transformers hands them; under torchrun they are
the same step's batches of all ranks concatenated in rank order, so every rank makes the same calls. With
``include_for_metrics``: ``"loss"`` gives ``losses`` (the batch's mean loss repeated once per row, gathered like
the predictions), ``"inputs"`` gives the batch as collated on this rank (as transformers: not gathered).

``evaluate()`` keeps nothing of the batches (that is the memory saved); ``predict()`` still returns all
predictions and labels, and its metrics also come from the per-batch calls (transformers does the same). A
``compute_metrics`` without a ``compute_result`` parameter is refused when the Trainer is built, as in
transformers.
"""
from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import torch

from .errors import ConfigError


def check_compute_metrics(args: Any, compute_metrics: Any) -> Any:
    """``compute_metrics`` unchanged; with ``batch_eval_metrics`` it must take ``compute_result`` (ConfigError)."""
    if not getattr(args, "batch_eval_metrics", False) or compute_metrics is None:
        return compute_metrics
    try:
        params = inspect.signature(compute_metrics).parameters
    except (TypeError, ValueError):  # a callable whose signature cannot be read: let the first call tell
        return compute_metrics
    if "compute_result" in params or any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return compute_metrics
    name = getattr(compute_metrics, "__name__", type(compute_metrics).__name__)
    raise ConfigError(
        f"batch_eval_metrics=True calls compute_metrics once per evaluation batch with a boolean `compute_result` "
        f"argument (True after the last batch: return the metrics of the whole set then), but {name}() takes no "
        f"`compute_result` parameter. Add it, e.g. `def {name}(eval_pred, compute_result=False):` accumulating "
        f"per-batch statistics and returning the metrics when compute_result is True; or set "
        f"batch_eval_metrics=False to get the whole set in one call.")


def with_last(iterable: Iterable) -> Iterator[tuple[int, Any, bool]]:
    """(step, item, whether it is the last item), reading one item ahead (works without ``len``)."""
    iterator = iter(iterable)
    try:
        current = next(iterator)
    except StopIteration:
        return
    step = 0
    for following in iterator:
        yield step, current, False
        current, step = following, step + 1
    yield step, current, True


class BatchMetrics:
    """The per-batch ``compute_metrics`` calls of one evaluation loop (see the module docstring)."""

    def __init__(self, trainer: Any, gather: bool, description: str) -> None:
        self.trainer = trainer
        self.gather = gather  # torchrun with a sharded eval set: each step's batches of all ranks
        self.keeps_outputs = description == "Prediction"  # predict() still returns every prediction
        self.result: Any = None
        self.called = self.last_was_final = False

    @classmethod
    def for_loop(cls, trainer: Any, gather: bool, description: str) -> BatchMetrics | None:
        """The per-batch calls of this loop, or None when compute_metrics runs once on the whole set."""
        if not getattr(trainer.args, "batch_eval_metrics", False) or trainer.compute_metrics is None:
            return None
        return cls(trainer, gather, description)

    def add(self, loss: Any, logits: Any, labels: Any, inputs: Any, cut: Any, trimmer: Any, is_last: bool) -> None:
        """One batch (``logits``/``labels`` None for a padding batch, which still takes part in the gather)."""
        args = self.trainer.args
        if trimmer is not None:
            logits, labels = trimmer.pad_back(logits, cut), trimmer.pad_back(labels, cut)
        rows = _rows(logits if logits is not None else labels)
        losses = None
        if loss is not None and logits is not None and "loss" in args.include_for_metrics:
            losses = loss.detach().reshape(1).repeat(rows)
        if self.gather:
            logits, labels, losses = self._gathered(logits, labels, losses)
        if logits is None or labels is None:
            return
        from .evaluation import call_metrics
        from .outputs import EvalPrediction
        batch_inputs = inputs if "inputs" in args.include_for_metrics else None
        self.result = call_metrics(self.trainer, EvalPrediction(predictions=logits, label_ids=labels,
                                                                inputs=batch_inputs, losses=losses),
                                   compute_result=is_last)
        self.called, self.last_was_final = True, is_last

    def _gathered(self, logits: Any, labels: Any, losses: Any) -> tuple:
        """This step's outputs of all ranks, concatenated in rank order, as tensors on this rank's device."""
        from .evaluation import concat_to_numpy, to_host
        trainer = self.trainer
        local = (to_host(logits), to_host(labels), to_host(losses))
        if trainer.device.type == "cuda":
            torch.cuda.synchronize(trainer.device)  # the non-blocking copies are complete before pickling
        parts = trainer.dist.all_gather_objects(local)
        objects = bool(getattr(trainer.args, "eval_use_gather_object", False))
        out = []
        for i in range(3):
            found = [p[i] for p in parts if p[i] is not None]
            out.append(_to_device(concat_to_numpy(found, objects), trainer.device) if found else None)
        return tuple(out)

    def metrics(self) -> dict[str, Any]:
        """The last call's result, checked to be numbers ({} when no batch had predictions and labels)."""
        from .evaluation import check_metrics
        if not self.called or (self.result is None and not self.last_was_final):
            return {}
        return check_metrics(self.result)


def _rows(x: Any) -> int:
    while isinstance(x, (list, tuple)) and x:
        x = x[0]
    if isinstance(x, Mapping) and x:
        return _rows(next(iter(x.values())))
    return int(x.shape[0]) if isinstance(x, torch.Tensor) and x.dim() else 1


def _to_device(x: Any, device: torch.device) -> Any:
    if isinstance(x, np.ndarray) and x.dtype != object:
        return torch.from_numpy(x).to(device)
    if isinstance(x, (list, tuple)):
        return type(x)(_to_device(t, device) for t in x)
    if isinstance(x, Mapping):
        return {k: _to_device(v, device) for k, v in x.items()}
    return x  # other objects (eval_use_gather_object) stay as gathered
