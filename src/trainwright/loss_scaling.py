"""How a micro-batch's loss is normalised, so that gradient accumulation (and data parallelism) give the
gradients and the logged loss of one big batch: batch 16 == 4 x 4 accumulation == 2 ranks x 8.

Every optimizer step counts the *items* of its micro-batches on the host (the batches are still on the CPU):

* integer labels: the label entries that are not -100 (tokens for token-level and causal-LM labels, where a
  causal LM's first position is not a target; rows for one class id per row);
* float labels (regression, multi-label targets): every element, as a mean squared error or BCE averages them;
* no label tensor at all (the loss comes from the inputs alone): the rows.

The labels counted are ``shift_labels`` when the collator provides them, else ``labels``, else the first of
``label_names`` in the batch (``start_positions`` for question answering: one item per row).

A micro-batch with ``n`` of the step's ``N`` items then contributes ``its mean loss x n / N``: the sum of these
is the mean over the whole step, whatever the split into micro-batches. A model that takes
``num_items_in_batch`` itself (a ``num_items_in_batch`` parameter in ``forward``, or ``accepts_loss_kwargs =
True`` on its class) gets ``N`` and its ``sum / N`` is used as is; so is what ``compute_loss_func`` returns, and
what a ``compute_loss`` override returns when it names a ``num_items_in_batch`` parameter (transformers' contract)
or passes it on to ``super().compute_loss``. Any other override returns a per-micro-batch mean, which is weighted
by ``n / N``; transformers' ``loss_is_scaled_for_ga``, when a subclass sets it, decides instead.
"""
from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping
from typing import Any

import torch

IGNORE_INDEX = -100
CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")


def shifts_labels(model: Any) -> bool:
    """Whether the model's loss predicts label i+1 at position i (a causal LM), so position 0 is no target."""
    return any(c.__name__.endswith(CAUSAL_SUFFIXES) for c in type(model).__mro__)


def label_tensor(batch: Mapping, label_names: Any) -> tuple[str | None, object]:
    for key in ("shift_labels", "labels", *(label_names or ())):
        if key in batch and batch[key] is not None:
            return key, batch[key]
    return None, None


def count_items(batch: Mapping, label_names: Any = (), shift: bool = False) -> int:
    """The number of items this micro-batch's mean loss averages over (see the module docstring)."""
    if not isinstance(batch, Mapping):
        return rows(batch)
    key, labels = label_tensor(batch, label_names)
    if not isinstance(labels, torch.Tensor):
        return rows(batch)
    if labels.dim() == 0:
        return 1
    if labels.is_floating_point() or labels.dtype == torch.bool:
        return labels.numel()
    if shift and key == "labels" and labels.dim() > 1:
        labels = labels[..., 1:]
    return int((labels != IGNORE_INDEX).sum())


def rows(batch: Any) -> int:
    if isinstance(batch, Mapping):
        for v in batch.values():
            if isinstance(v, torch.Tensor) and v.dim() > 0:
                return v.shape[0]
            if isinstance(v, (list, tuple)):
                return len(v)
    elif isinstance(batch, (list, tuple)):  # a collator's own structure: the first tensor's rows
        for v in batch:
            if isinstance(v, torch.Tensor) and v.dim() > 0:
                return v.shape[0]
    return 1


def model_takes_num_items(model: Any) -> bool:
    """Whether ``num_items_in_batch`` is passed to the model's forward: it names the parameter, or its class says
    ``accepts_loss_kwargs = True``. (transformers' models take ``**kwargs`` that most of their losses ignore:
    their mean loss is weighted instead, which is exact for every one of them.)"""
    flag = getattr(type(model), "accepts_loss_kwargs", None)
    if flag is not None:
        return bool(flag)
    forward = getattr(model, "forward", None)
    return forward is not None and _names_num_items(getattr(forward, "__func__", forward))


@functools.lru_cache(maxsize=64)
def _names_num_items(fn) -> bool:
    try:
        return "num_items_in_batch" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


@functools.lru_cache(maxsize=64)
def takes_num_items(fn: Any) -> bool:
    """Whether ``compute_loss`` can be called with ``num_items_in_batch=`` (the parameter or ``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return True
    return "num_items_in_batch" in params or any(p.kind == p.VAR_KEYWORD for p in params.values())


def user_loss_is_normalised(trainer: Any, base_compute_loss: Any, base_normalised: bool) -> bool:
    """Whether the loss ``compute_loss`` returned is already ``sum / num_items_in_batch`` (else it is a
    per-micro-batch mean, which training_step weights). ``base_normalised``: the Trainer's own compute_loss ran
    with ``num_items_in_batch`` during this call (directly, or from an override through ``super()``), so the loss
    is normalised. Otherwise an override normalised it when it names a ``num_items_in_batch`` parameter
    (transformers' contract), and ``compute_loss_func`` always does. transformers' ``loss_is_scaled_for_ga``, when a
    subclass sets it, decides for its own ``compute_loss``."""
    user_fn = type(trainer).compute_loss
    if user_fn is base_compute_loss:
        return True
    declared = getattr(trainer, "loss_is_scaled_for_ga", None)
    if declared is not None:
        return bool(declared)
    return base_normalised or _names_num_items(user_fn)


def zero_loss(model: Any) -> torch.Tensor:
    """A zero loss that reaches every trainable parameter (a micro-batch without loss items under DDP)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return sum(p.sum() for p in params) * 0.0 if params else torch.zeros(())


def weighted(loss: torch.Tensor, outputs: Any, items: int, num_items_in_batch: Any) -> torch.Tensor:
    """``loss`` (a mean over ``items`` items) as its share of the step: ``loss x items / num_items_in_batch``.
    A micro-batch without items contributes a zero that still reaches every output (DDP needs the graph)."""
    if items == 0:
        return zero_like_outputs(outputs, loss)
    return loss * (items / num_items_in_batch)


def zero_like_outputs(outputs: Any, loss: Any) -> torch.Tensor:
    values = outputs.values() if isinstance(outputs, Mapping) else outputs if isinstance(outputs, (tuple, list)) else ()
    for v in values:
        if isinstance(v, torch.Tensor) and v.is_floating_point() and v.requires_grad and v is not loss:
            return v.sum() * 0.0
    return torch.zeros((), device=loss.device, dtype=loss.dtype) if isinstance(loss, torch.Tensor) else loss * 0.0
