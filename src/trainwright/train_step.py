"""One optimizer step: the micro-batches of an accumulation, the loss each one contributes, the gradient clipping and
the update (skipped on NaN/inf gradients).

The loss is normalised by the number of label items in the whole accumulated (and, under DDP, global) batch, so
accumulation and data parallelism give the same gradients as one big batch (see ``loss_scaling``). The hot path
never waits for the device: the running loss, the gradient norm and the non-finite counters stay on it
(``progress.LossTracker``). ``Trainer.training_step`` / ``Trainer.compute_loss`` (the methods a subclass overrides)
call :func:`training_step` / :func:`compute_loss` here.
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import torch

from .chunked_loss import compute_chunked_loss, uses_chunked_loss
from .distributed import unwrap_model
from .errors import ConfigError, ModelError
from .loss_scaling import (
    count_items,
    model_takes_num_items,
    shifts_labels,
    takes_num_items,
    user_loss_is_normalised,
    weighted,
    zero_loss,
)
from .memory import empty_device_cache
from .optim import steps_on_metric


def optimizer_step(trainer: Any, model: Any, micro_batches: list, epoch: int, step_in_epoch: int,
                   steps_in_epoch: int) -> None:
    """One optimizer step over the accumulated micro-batches, with the callbacks transformers calls around it."""
    args, handler = trainer.args, trainer.callback_handler
    counts, num_items = count_step_items(trainer, micro_batches)
    trainer.control = handler.on_step_begin(args, trainer.state, trainer.control)
    step_loss = None
    for i, batch in enumerate(micro_batches):
        last = i == len(micro_batches) - 1
        trainer.throughput.count_batch(batch)
        trainer._micro_batch_items = counts[i]
        with trainer.dist.no_sync(model, skip=not last):
            loss = trainer.training_step(model, batch, num_items)
        trainer._micro_batch_items = None
        step_loss = loss if step_loss is None else step_loss + loss
        if not last:
            trainer.control = handler.on_substep_end(args, trainer.state, trainer.control)
    trainer.loss_tracker.add_step_loss(trainer.dist.mean_over_ranks(step_loss))  # every rank: the global batch's loss

    trainer.control = handler.on_pre_optimizer_step(args, trainer.state, trainer.control)
    trainer.precision.unscale_(trainer.optimizer)
    trainer._grad_norm = clip_gradients(model, args.max_grad_norm, trainer.device)
    guarded_update(trainer)
    trainer.control = handler.on_optimizer_step(args, trainer.state, trainer.control)
    if not steps_on_metric(trainer.lr_scheduler):  # those are stepped with the metric after evaluations
        trainer.lr_scheduler.step()
    model.zero_grad(set_to_none=True)
    if args.torch_empty_cache_steps and trainer.state.global_step % args.torch_empty_cache_steps == 0:
        empty_device_cache(trainer.device)  # as transformers: read before the increment (the first step too)

    trainer.state.global_step += 1
    trainer.state.epoch = epoch + (step_in_epoch + 1) / steps_in_epoch
    trainer.loss_tracker.log_steps += 1
    trainer.control = handler.on_step_end(args, trainer.state, trainer.control)


def count_step_items(trainer: Any, micro_batches: list) -> tuple:
    """Loss items per micro-batch and in the whole step (see ``loss_scaling``), counted on the host from the
    collated (still CPU) batches. Single process: plain ints, no device work. DDP: one all-reduce."""
    shift = shifts_labels(unwrap_model(trainer.model))
    counts = [count_items(b, trainer.label_names, shift) for b in micro_batches]
    total = sum(counts)
    if trainer.dist.enabled and trainer.args.average_tokens_across_devices:
        t = torch.tensor(float(total), dtype=torch.float32)
        t = t.pin_memory() if trainer.device.type == "cuda" else t
        total = trainer.dist.all_reduce_sum(t.to(trainer.device, non_blocking=True))
    return counts, total


def clip_gradients(model: Any, max_grad_norm: float | None, device: torch.device) -> torch.Tensor:
    """The total gradient norm (a device tensor), after clipping to ``max_grad_norm`` (0 / None: no clipping)."""
    params = [p for p in model.parameters() if p.grad is not None]
    if not params:
        return torch.zeros((), device=device)
    max_norm = max_grad_norm if max_grad_norm else float("inf")
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm  # FSDP2: a replicated DTensor


def guarded_update(trainer: Any) -> None:
    """The optimizer step, skipped when the gradients are NaN/inf. With fused AdamW the skip happens on the device
    (the optimizer's found_inf), so nothing waits; other optimizers read one flag. Under fp16 the GradScaler skips
    non-finite steps itself."""
    optimizer = trainer.optimizer
    if trainer.precision.scaler is not None:
        trainer.precision.step(optimizer)
        return
    bad = trainer.loss_tracker.add_gradient_check(trainer._grad_norm)
    if _supports_found_inf(optimizer):
        optimizer.found_inf = bad.to(torch.float32)
        optimizer.step()
        del optimizer.found_inf
    elif not bool(bad):
        optimizer.step()


def _supports_found_inf(optimizer) -> bool:
    return isinstance(optimizer, (torch.optim.AdamW, torch.optim.Adam)) and \
        any(g.get("fused") for g in optimizer.param_groups)


def training_step(trainer: Any, base_compute_loss: Any, model: Any, inputs: Any,
                  num_items_in_batch: Any = None) -> torch.Tensor:
    """Forward (under autocast), the loss as its share of the step, backward; returns the detached loss."""
    model.train()
    inputs = trainer._prepare_inputs(inputs)
    user_fn = type(trainer).compute_loss
    trainer._normalised_by_base = False  # set by the base compute_loss when it divides by num_items_in_batch
    with trainer.precision.autocast():
        if user_fn is base_compute_loss or takes_num_items(user_fn):
            loss = trainer.compute_loss(model, inputs, num_items_in_batch=num_items_in_batch)
        else:  # an override written before num_items_in_batch existed
            loss = trainer.compute_loss(model, inputs)
    if num_items_in_batch is not None and \
            not user_loss_is_normalised(trainer, base_compute_loss, trainer._normalised_by_base):
        items = getattr(trainer, "_micro_batch_items", None)  # a per-micro-batch mean: its share of the step
        items = count_items(inputs, trainer.label_names) if items is None else items
        loss = loss * (items / num_items_in_batch) if items else zero_loss(unwrap_model(model))
    if trainer.dist.enabled and trainer.args.average_tokens_across_devices and num_items_in_batch is not None:
        loss = loss * trainer.dist.world_size  # normalised by the global count; DDP / FSDP2 average over ranks
    trainer.precision.backward(loss)
    return loss.detach()  # as transformers: its mean over the ranks is the global batch's loss


def compute_loss(trainer: Any, model: Any, inputs: Any, return_outputs: bool = False,
                 num_items_in_batch: Any = None) -> Any:
    """The model's loss over this micro-batch; given ``num_items_in_batch`` (the step's loss items), its share of
    the step's mean: ``sum / num_items_in_batch``. Label smoothing and ``compute_loss_func`` as in transformers."""
    if uses_chunked_loss(trainer, model, inputs):  # causal LM, training step: no logits tensor (chunked_loss.py)
        trainer._normalised_by_base = num_items_in_batch is not None
        return compute_chunked_loss(trainer, model, inputs, return_outputs, num_items_in_batch)
    labels = None
    if (trainer._label_smoothing_factor > 0 or trainer.compute_loss_func is not None) and "labels" in inputs:
        labels = inputs["labels"]
        inputs = {k: v for k, v in inputs.items() if k != "labels"}
    passed = num_items_in_batch is not None and model_takes_num_items(unwrap_model(model))
    trainer._normalised_by_base = num_items_in_batch is not None
    outputs = model(**inputs, num_items_in_batch=num_items_in_batch) if passed else model(**inputs)
    if trainer.compute_loss_func is not None:
        loss = trainer.compute_loss_func(outputs, labels, num_items_in_batch=num_items_in_batch)
        return (loss, outputs) if return_outputs else loss
    shift = shifts_labels(unwrap_model(model))
    if labels is not None:
        loss = label_smoothed_loss(outputs, labels, trainer._label_smoothing_factor, shift)
    else:
        loss = _model_loss(outputs, trainer.label_names)
    if num_items_in_batch is not None and (labels is not None or not passed):  # a mean: weight it
        items = getattr(trainer, "_micro_batch_items", None)
        if items is None:  # called outside the training loop
            items = count_items({**inputs, "labels": labels} if labels is not None else inputs, trainer.label_names,
                                shift)
        loss = weighted(loss, outputs, items, num_items_in_batch)
    return (loss, outputs) if return_outputs else loss


def _model_loss(outputs, label_names) -> torch.Tensor:
    if isinstance(outputs, Mapping) and outputs.get("loss") is None or \
            not isinstance(outputs, Mapping) and not isinstance(outputs, (tuple, list)):
        present = list(outputs.keys()) if isinstance(outputs, Mapping) else type(outputs).__name__
        raise ModelError(
            f"The model did not return a loss (its outputs: {present}). Give the batches a 'labels' "
            f"column (or {label_names}), or subclass Trainer and override compute_loss.")
    return outputs["loss"] if isinstance(outputs, Mapping) else outputs[0]


def label_smoothing_factor(args: Any, model: Any) -> float:
    """``args.label_smoothing_factor``, or 0 with a warning for a multi-label model (as transformers)."""
    if args.label_smoothing_factor != 0 and \
            getattr(getattr(model, "config", None), "problem_type", None) == "multi_label_classification":
        warnings.warn("Label smoothing is not compatible with multi-label classification. "
                      "Disabling label smoothing for this training run.", UserWarning, stacklevel=3)
        return 0.0
    return args.label_smoothing_factor


def label_smoothed_loss(outputs: Any, labels: Any, epsilon: float, shift: bool) -> torch.Tensor:
    logits = outputs["logits"] if isinstance(outputs, Mapping) else outputs[0]
    if shift:
        logits = logits[..., :-1, :].contiguous()
        labels = labels[..., 1:].contiguous()
    if labels.is_floating_point():
        raise ConfigError("label_smoothing_factor applies to classification labels; these labels are floats "
                          "(regression). Set label_smoothing_factor=0.")
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1),
                                             ignore_index=-100, label_smoothing=epsilon)


def prepare_inputs(inputs: Any, device: torch.device) -> Any:
    """The batch's tensors on ``device`` (a collator's own list/tuple structure kept, for an overridden
    compute_loss, as transformers)."""
    non_blocking = device.type == "cuda"
    if isinstance(inputs, (list, tuple)):
        return type(inputs)(prepare_inputs(v, device) if isinstance(v, (Mapping, list, tuple)) else
                            v.to(device, non_blocking=non_blocking) if isinstance(v, torch.Tensor) else v
                            for v in inputs)
    return {k: v.to(device, non_blocking=non_blocking) if isinstance(v, torch.Tensor) else v
            for k, v in inputs.items()}
