"""Evaluation and prediction: the loop over the batches, one batch's forward, and what leaves the device.

``Trainer.evaluation_loop`` and ``Trainer.prediction_step`` (the methods a subclass overrides, as in transformers)
call :func:`evaluation_loop` and :func:`prediction_step`. Every batch's outputs leave the device as produced (no
device memory grows with the eval set), under torchrun every rank gets all outputs in the single-process order, and
batches run sorted by length come back in dataset order. With ``eval_do_concat_batches=False`` predictions, labels,
inputs and losses are lists of per-batch numpy outputs (batches in dataset order; under torchrun all ranks' batches in
the single-process order), as transformers returns them. ``include_for_metrics=["loss"]`` gives compute_metrics
``losses``: each batch's mean loss repeated once per row. With ``quiet`` (the pre-flight dry run,
``Trainer._run_evaluation(..., quiet=True)``) no callback is called and a failing ``compute_metrics`` is reported as
``preflight.MetricsFailed``.
"""
from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from .batch_metrics import BatchMetrics, with_last
from .data.columns import has_length, is_iterable_dataset
from .data.samplers import restore_order
from .data.trim import batch_trimmer
from .distributed import unwrap_model
from .errors import ConfigError
from .loss_scaling import rows as batch_rows
from .outputs import EvalPrediction


class EvalLoopOutput:
    """What ``evaluation_loop`` returns: predictions, label ids, prefixed metrics and the number of rows."""

    def __init__(self, predictions: Any, label_ids: Any, metrics: dict[str, Any], num_samples: int) -> None:
        self.predictions, self.label_ids, self.metrics, self.num_samples = predictions, label_ids, metrics, num_samples


def run_evaluation(trainer: Any, dataloader: Any, description: str, ignore_keys: Any, metric_key_prefix: str,
                   prediction_loss_only: Any,
                   quiet: bool) -> EvalLoopOutput:
    """``trainer.evaluation_loop`` plus the speed metrics (see ``Trainer._run_evaluation``)."""
    previous = getattr(trainer, "_eval_quiet", False)
    trainer._eval_quiet = quiet
    start = time.time()
    try:
        output = trainer.evaluation_loop(dataloader, description, prediction_loss_only=prediction_loss_only,
                                         ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
    finally:
        trainer._eval_quiet = previous
    steps = num_eval_steps(dataloader, output.num_samples, trainer.args.per_device_eval_batch_size)
    output.metrics.update(speed_metrics(metric_key_prefix, start, output.num_samples, steps))
    return output


def compute_metrics(trainer: Any, eval_prediction: EvalPrediction) -> dict[str, float]:
    """``trainer.compute_metrics`` checked to return numbers; in the quiet dry run its failure is MetricsFailed."""
    return check_metrics(call_metrics(trainer, eval_prediction))


def call_metrics(trainer: Any, eval_prediction: EvalPrediction, **kwargs: Any) -> Any:
    """``trainer.compute_metrics(eval_prediction, **kwargs)`` as returned; in the quiet dry run its failure is
    MetricsFailed."""
    if not getattr(trainer, "_eval_quiet", False):
        return trainer.compute_metrics(eval_prediction, **kwargs)
    try:
        return trainer.compute_metrics(eval_prediction, **kwargs)
    except Exception as e:  # the pre-flight decides whether this can wait for the first evaluation
        from .preflight import MetricsFailed
        raise MetricsFailed(e) from e


def evaluation_loop(trainer: Any, dataloader: Any, prediction_loss_only: bool | None, ignore_keys: Any,
                    metric_key_prefix: str, description: str = "Evaluation") -> EvalLoopOutput:
    """Runs ``trainer.prediction_step`` over ``dataloader``; see the module docstring."""
    args = trainer.args
    prediction_loss_only = args.prediction_loss_only if prediction_loss_only is None else prediction_loss_only
    model = trainer.model_wrapped if trainer.model_wrapped is not None else trainer.model
    quiet = getattr(trainer, "_eval_quiet", False)  # the pre-flight dry run: no callbacks
    # every rank gets all outputs, in rank order (= the single-process order); an iterable eval set is not
    # sharded (every rank evaluates all of it), so there is nothing to gather
    gather = trainer.dist.enabled and not is_iterable_dataset(getattr(dataloader, "dataset", None))
    streaming = BatchMetrics.for_loop(trainer, gather, description)  # batch_eval_metrics: called per batch
    with trainer.precision.evaluation(trainer.model):  # bf16_full_eval / fp16_full_eval: the model cast, then back
        model.eval()
        if not quiet:
            trainer.callback_handler.eval_dataloader = dataloader
        outputs = _run_batches(trainer, model, dataloader, prediction_loss_only, ignore_keys, quiet, streaming)
    predictions, label_ids, loss_sum, num_samples, eval_inputs, losses = outputs
    objects = bool(getattr(args, "eval_use_gather_object", False))  # a list output: one object per row
    concat = bool(getattr(args, "eval_do_concat_batches", True))  # False: a list of per-batch outputs
    if gather:
        predictions, label_ids, loss_sum, num_samples, eval_inputs, losses = gather_predictions(
            trainer.dist, predictions, label_ids, loss_sum, num_samples, eval_inputs, objects, losses, concat)
    # batches ran sorted by length: back to dataset order (the order spans all ranks' gathered outputs); per-batch
    # outputs (eval_do_concat_batches=False) come from batches in dataset order
    inverse_order = getattr(getattr(dataloader, "batch_sampler", None), "inverse_order", None) if concat else None
    predictions, label_ids, eval_inputs, losses = (restore_order(x, inverse_order, objects)
                                                   for x in (predictions, label_ids, eval_inputs, losses))
    metrics: dict[str, Any] = {}
    if streaming is not None:
        metrics = streaming.metrics()
    elif trainer.compute_metrics is not None and predictions is not None and label_ids is not None:
        metrics = compute_metrics(trainer, EvalPrediction(predictions=predictions, label_ids=label_ids,
                                                          inputs=eval_inputs, losses=losses))
    if num_samples and loss_sum is not None and (trainer._has_labels_seen or float(loss_sum.item()) != 0.0):
        metrics["loss"] = float(loss_sum.item()) / num_samples
    metrics = {(k if k.startswith(f"{metric_key_prefix}_") else f"{metric_key_prefix}_{k}"): v
               for k, v in metrics.items()}
    return EvalLoopOutput(predictions, label_ids, metrics, num_samples)


def _run_batches(trainer, model, dataloader, prediction_loss_only, ignore_keys, quiet: bool, streaming=None):
    """(predictions, label ids, summed loss, rows, inputs, per-row losses) of this rank, on the host (with
    ``batch_eval_metrics`` in evaluate(): no predictions, labels, inputs or losses kept; each batch goes to
    ``streaming``)."""
    trainer._has_labels_seen = False  # set by prediction_step: whether this evaluation's batches had labels
    loss_sum = torch.zeros((), dtype=torch.float64, device=trainer.device)
    num_samples = 0
    wanted = trainer.args.include_for_metrics
    kept = _Kept(streaming is None or streaming.keeps_outputs, "inputs" in wanted, "loss" in wanted,
                 getattr(unwrap_model(trainer.model), "main_input_name", "input_ids"))
    real_batches = getattr(getattr(dataloader, "batch_sampler", None), "num_real_batches", None)
    trimmer = batch_trimmer(dataloader)  # pre-padded batches run trimmed
    batches = with_last(dataloader) if streaming is not None else ((s, b, False) for s, b in enumerate(dataloader))
    for step, inputs, is_last in batches:
        batch_size = batch_rows(inputs)
        run, cut = trimmer.trim(inputs) if trimmer is not None else (inputs, None)
        loss, logits, labels = trainer.prediction_step(model, run, prediction_loss_only, ignore_keys)
        if real_batches is not None and step >= real_batches:
            # a padding batch: run so that every rank runs as many forwards (FSDP2), then dropped
            if streaming is not None:  # it still takes part in the per-step gather
                streaming.add(None, None, None, inputs, None, None, is_last)
            continue
        if loss is not None:
            loss_sum += loss.detach().to(torch.float64) * batch_size
        if logits is not None and trainer.preprocess_logits_for_metrics is not None:
            logits = trainer.preprocess_logits_for_metrics(logits, labels)
        kept.add(logits, labels, inputs, cut, loss, batch_size)
        num_samples += batch_size
        if not quiet:
            trainer.control = trainer.callback_handler.on_prediction_step(trainer.args, trainer.state, trainer.control)
        if streaming is not None:
            streaming.add(loss, logits, labels, inputs, cut, trimmer, is_last)
    if trainer.device.type == "cuda":
        torch.cuda.synchronize(trainer.device)
    objects = bool(getattr(trainer.args, "eval_use_gather_object", False))
    concat = bool(getattr(trainer.args, "eval_do_concat_batches", True))
    predictions, label_ids, input_ids, losses = kept.arrays(trimmer, objects, concat)
    return predictions, label_ids, loss_sum, num_samples, input_ids, losses


class _Kept:
    """The batches' outputs moved to the host (``keep`` False: none kept) and, when trimmed, their cuts; with
    ``losses`` (``include_for_metrics=["loss"]``) each batch's mean loss repeated once per row, as transformers."""

    def __init__(self, keep: bool, inputs: bool, losses: bool = False, input_name: str = "input_ids") -> None:
        self.keep, self.inputs, self.with_losses = keep, inputs, losses
        self.input_name = input_name  # the model's main_input_name, as transformers
        self.preds, self.labels, self.input_ids, self.pred_cuts, self.label_cuts = [], [], [], [], []
        self.losses: list = []

    def add(self, logits: Any, labels: Any, inputs: Any, cut: Any, loss: Any = None, rows: int = 0) -> None:
        if not self.keep:
            return
        if self.with_losses and loss is not None:  # a device op, no sync: copied with the outputs
            self.losses.append(to_host(loss.detach().reshape(1).repeat(rows)))
        if logits is not None:
            self.preds.append(to_host(logits))
            self.pred_cuts.append(cut)
        if labels is not None:
            self.labels.append(to_host(labels))
            self.label_cuts.append(cut)
        if self.inputs:
            if self.input_name not in inputs:
                raise ConfigError(f"include_for_metrics=['inputs'] hands compute_metrics the model's main input "
                                  f"{self.input_name!r} (its main_input_name), but the evaluation batches have no "
                                  f"such key (they have {sorted(inputs)}). Keep that column in the dataset or remove "
                                  "'inputs' from include_for_metrics.")
            self.input_ids.append(to_host(inputs[self.input_name]))

    def arrays(self, trimmer: Any, objects: bool, concat: bool = True) -> tuple:
        """(predictions, label ids, input ids, losses) concatenated, or with ``concat`` False lists of the batches'
        numpy outputs (None where nothing was kept); token-level outputs of trimmed batches back to the batches'
        widths, on the host."""
        preds, labels = self.preds, self.labels
        if trimmer is not None:
            preds, labels = trimmer.pad_back_all(preds, self.pred_cuts), trimmer.pad_back_all(labels, self.label_cuts)
        parts = (preds, labels, self.input_ids, self.losses)
        if not concat:
            return tuple([to_numpy(p, objects) for p in part] if part else None for part in parts)
        return tuple(concat_to_numpy(part, objects) if part else None for part in parts)


def gather_predictions(dist: Any, predictions: Any, label_ids: Any, loss_sum: Any, num_samples: int,
                       inputs: Any = None, objects: bool = False, losses: Any = None, concat: bool = True) -> tuple:
    """All ranks' outputs concatenated in rank order (ranks hold contiguous runs of the batches, so this is the
    single-process order); a rank without rows contributes nothing. ``objects`` (``eval_use_gather_object``): a
    list output holds one object per row, and the ranks' lists are concatenated, as ``gather_object`` does.
    ``concat`` False: each output is a list of batches, and the ranks' lists are joined (the single-process
    batches, in order). Returns (predictions, label ids, summed loss, rows, inputs, losses)."""
    parts = dist.all_gather_objects((predictions, label_ids, float(loss_sum.item()), num_samples, inputs, losses))

    def cat(i):
        found = [p[i] for p in parts if p[i] is not None]
        if not found:
            return None
        return concat_to_numpy(found, objects) if concat else [batch for part in found for batch in part]
    total_loss = torch.tensor(sum(p[2] for p in parts), dtype=torch.float64)
    return cat(0), cat(1), total_loss, sum(p[3] for p in parts), cat(4), cat(5)


def _loss_kwargs(trainer: Any, model: Any, inputs: dict) -> dict:
    """As transformers 5.x: a ``compute_loss_func`` gets this batch's label count in evaluation too (counted on the
    host before the batch moves: no device sync), when ``compute_loss`` is the Trainer's or takes the argument."""
    from .loss_scaling import count_items, shifts_labels, takes_num_items
    from .trainer import Trainer
    fn = type(trainer).compute_loss
    if trainer.compute_loss_func is None or not (fn is Trainer.compute_loss or takes_num_items(fn)):
        return {}
    return {"num_items_in_batch": count_items(inputs, trainer.label_names, shifts_labels(unwrap_model(model)))}


def prediction_step(trainer: Any, model: Any, inputs: dict, prediction_loss_only: bool,
                    ignore_keys: list[str] | None) -> tuple:
    """(loss, logits, labels) of one batch: the loss through ``trainer.compute_loss`` when the batch has every label
    column, the outputs other than the loss (and ``ignore_keys``) as the logits."""
    has_labels = bool(trainer.label_names) and all(inputs.get(k) is not None for k in trainer.label_names)
    trainer._has_labels_seen = getattr(trainer, "_has_labels_seen", False) or has_labels
    loss_kwargs = _loss_kwargs(trainer, model, inputs) if has_labels else {}
    inputs = trainer._prepare_inputs(inputs)
    if ignore_keys is None:
        config = getattr(unwrap_model(trainer.model), "config", None)
        ignore_keys = list(getattr(config, "keys_to_ignore_at_inference", []) or [])
    labels = None
    if has_labels:
        labels = tuple(inputs.get(name) for name in trainer.label_names)
        labels = labels[0] if len(labels) == 1 else labels
    with torch.no_grad(), trainer.precision.autocast(evaluating=True):
        if has_labels:
            loss, outputs = trainer.compute_loss(model, inputs, return_outputs=True, **loss_kwargs)
            loss = loss.detach().mean()
            if isinstance(outputs, Mapping):
                logits = tuple(v for k, v in outputs.items() if k not in ignore_keys + ["loss"])
            else:
                logits = outputs[1:]
        else:
            loss = None
            outputs = model(**inputs)
            if isinstance(outputs, Mapping):
                logits = tuple(v for k, v in outputs.items() if k not in ignore_keys and k != "loss")
            else:
                logits = outputs
    if prediction_loss_only:
        return loss, None, None
    logits = nested_detach(logits)
    if isinstance(logits, tuple) and len(logits) == 1:
        logits = logits[0]
    return loss, logits, labels


def num_eval_steps(dataloader: Any, num_samples: int, batch_size: int) -> int:
    """Batches run: the dataloader's length or, for an iterable dataset without one (each process runs all of it),
    its rows over the batch size."""
    if has_length(dataloader):
        return len(dataloader)
    return math.ceil(num_samples / batch_size)


def speed_metrics(prefix: str, start: float, num_samples: int, num_steps: int) -> dict[str, float]:
    runtime = time.time() - start
    return {f"{prefix}_runtime": round(runtime, 4),
            f"{prefix}_samples_per_second": round(num_samples / runtime, 3) if runtime > 0 else 0.0,
            f"{prefix}_steps_per_second": round(num_steps / runtime, 3) if runtime > 0 else 0.0}


def check_metrics(result: Any) -> dict[str, float]:
    """``compute_metrics``' result as plain numbers; anything else raises naming the key."""
    if not isinstance(result, Mapping):
        raise ConfigError(f"compute_metrics must return a dict of metric name -> number, got {type(result).__name__}. "
                          "Return e.g. {'accuracy': 0.91}.")
    out = {}
    for k, v in result.items():
        if isinstance(v, (np.generic,)):
            v = v.item()
        if isinstance(v, torch.Tensor) and v.numel() == 1:
            v = v.item()
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(f"compute_metrics returned {k!r}: {v!r} ({type(v).__name__}), which is not a number. "
                              f"Return plain numbers, e.g. float(value); put per-class values under separate keys.")
        out[k] = v
    return out


def nested_detach(x: Any) -> Any:
    if isinstance(x, (list, tuple)):
        return type(x)(nested_detach(t) for t in x)
    if isinstance(x, Mapping):
        return {k: nested_detach(v) for k, v in x.items()}
    return x.detach() if isinstance(x, torch.Tensor) else x


def to_host(x: Any) -> Any:
    """Tensors to the CPU (half precision as float32), without waiting for the copy on CUDA."""
    if isinstance(x, (list, tuple)):
        return type(x)(to_host(t) for t in x)
    if isinstance(x, Mapping):
        return {k: to_host(v) for k, v in x.items()}
    if isinstance(x, torch.Tensor):
        if x.dtype in (torch.bfloat16, torch.float16):
            x = x.float()
        return x.to("cpu", non_blocking=x.is_cuda)
    return x


def to_numpy(x: Any, objects: bool = False) -> Any:
    """One batch's host outputs as numpy arrays, nested structure kept; with ``objects`` a list (one object per
    row) stays as produced."""
    if objects and isinstance(x, list):
        return x
    if isinstance(x, (list, tuple)):
        return type(x)(to_numpy(t, objects) for t in x)
    if isinstance(x, Mapping):
        return {k: to_numpy(v, objects) for k, v in x.items()}
    return x.numpy() if isinstance(x, torch.Tensor) else x


def concat_to_numpy(parts: list, objects: bool = False) -> Any:
    """Concatenate per-batch outputs; token-level outputs of different lengths are padded with -100. A tuple (or
    list) holds several outputs, concatenated each; with ``objects`` (``eval_use_gather_object``) a list holds
    one object per row, and the lists are concatenated."""
    first = parts[0]
    if objects and isinstance(first, list):
        return [row for p in parts for row in p]
    if isinstance(first, (list, tuple)):
        return type(first)(concat_to_numpy([p[i] for p in parts], objects) for i in range(len(first)))
    if isinstance(first, Mapping):
        return {k: concat_to_numpy([p[k] for p in parts], objects) for k in first}
    arrays = [p.numpy() if isinstance(p, torch.Tensor) else np.asarray(p) for p in parts]
    if arrays[0].ndim == 0:
        return np.stack(arrays)
    if arrays[0].ndim == 1 or all(a.shape[1:] == arrays[0].shape[1:] for a in arrays):
        return np.concatenate(arrays, axis=0)
    max_len = max(a.shape[1] for a in arrays)
    padded = []
    for a in arrays:
        width = [(0, 0)] * a.ndim
        width[1] = (0, max_len - a.shape[1])
        padded.append(np.pad(a, width, constant_values=-100))
    return np.concatenate(padded, axis=0)
