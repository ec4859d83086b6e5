"""Memory features: activation (gradient) checkpointing and the chunked-loss checks, set up before training, and
emptying the device's cache of free blocks (``torch_empty_cache_steps``, the ``auto_find_batch_size`` retries).

``activation_checkpointing`` (transformers 5.x) and its older name ``gradient_checkpointing`` both turn
checkpointing on; the new name wins when both are given, as in transformers. ``*_kwargs`` go to the model's
``activation_checkpointing_enable``: ``every_n_layers`` and ``offload`` are its own arguments, the other keys go to
``torch.utils.checkpoint.checkpoint`` (``{"use_reentrant": False}`` when none are given, transformers' default).
"""
from __future__ import annotations

from typing import Any

import torch

from .errors import ConfigError, ModelError


def checkpointing_settings(args: Any) -> tuple[bool, dict]:
    """(on, kwargs) from ``activation_checkpointing[_kwargs]``, falling back on the ``gradient_checkpointing``
    names when the new ones are unset."""
    on = args.activation_checkpointing if args.activation_checkpointing is not None else args.gradient_checkpointing
    kwargs = args.activation_checkpointing_kwargs if args.activation_checkpointing_kwargs is not None \
        else args.gradient_checkpointing_kwargs
    if kwargs is not None and not isinstance(kwargs, dict):
        name = "activation_checkpointing_kwargs" if args.activation_checkpointing_kwargs is not None \
            else "gradient_checkpointing_kwargs"
        raise ConfigError(f"{name}={kwargs!r} must be a dict, e.g. {{'use_reentrant': False}}.")
    return bool(on), dict(kwargs or {})


def enable_activation_checkpointing(model: torch.nn.Module, args: Any) -> bool:
    """Turns on activation checkpointing as transformers.Trainer does (a no-op when it is off). When the input
    embeddings are frozen (a PEFT adapter, a frozen base) their output is made to require grad, so the
    gradient reaches the checkpointed layers. Returns whether checkpointing was turned on."""
    on, kwargs = checkpointing_settings(args)
    if not on:
        return False
    name = "activation_checkpointing" if args.activation_checkpointing is not None else "gradient_checkpointing"
    every_n_layers = kwargs.pop("every_n_layers", 1)
    offload = kwargs.pop("offload", False)
    enable = getattr(model, "activation_checkpointing_enable", None)
    try:
        if callable(enable):
            enable(activation_checkpointing_kwargs=kwargs or None, every_n_layers=every_n_layers, offload=offload)
        elif callable(getattr(model, "gradient_checkpointing_enable", None)):
            extra = {} if every_n_layers == 1 and not offload else {"every_n_layers": every_n_layers,
                                                                    "offload": offload}
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs or None, **extra)
        else:
            raise ModelError(f"{name}=True but {type(model).__name__} has no activation_checkpointing_enable() (it is "
                             "not a transformers PreTrainedModel): checkpoint its layers with "
                             f"torch.utils.checkpoint yourself, or drop {name}.")
    except ValueError as e:
        if isinstance(e, ModelError):
            raise
        raise ModelError(f"{name}=True: {type(model).__name__} cannot use activation checkpointing ({e}). "
                         f"Drop {name} for this model.") from e
    _require_input_grads_if_frozen(model)
    return True


def _require_input_grads_if_frozen(model) -> None:
    """transformers enables input grads for text models itself; this covers the other frozen-embedding cases."""
    get = getattr(model, "get_input_embeddings", None)
    try:
        embeddings = get() if callable(get) else None
    except NotImplementedError:
        embeddings = None
    if embeddings is None:
        return
    params = list(embeddings.parameters())
    frozen = params and not any(p.requires_grad for p in params)
    hooked = getattr(model, "_require_grads_hooks", None) or getattr(model, "_require_grads_hook", None)
    if frozen and not hooked and callable(getattr(model, "enable_input_require_grads", None)):
        model.enable_input_require_grads()


def prepare_model_for_training(trainer: Any, model: torch.nn.Module) -> None:
    """Called by ``Trainer._set_up_model_for_training`` before the model is wrapped (DDP/FSDP2/compile)."""
    enable_activation_checkpointing(model, trainer.args)
    setting = getattr(trainer.args, "chunked_cross_entropy", False)
    if setting is not False and setting is not None:  # 0 is checked (and refused), not taken for False
        from .chunked_loss import check_chunked_loss
        check_chunked_loss(trainer, model)


def empty_device_cache(device: torch.device) -> None:
    """``torch.<device>.empty_cache()`` (CUDA, XPU, MPS): the allocator's cached free blocks go back to the device
    (nothing on the CPU, as transformers' ``clear_device_cache``)."""
    module = getattr(torch, device.type, None) if device.type != "cpu" else None
    empty_cache = getattr(module, "empty_cache", None)
    is_available = getattr(module, "is_available", None)
    if empty_cache is not None and (is_available is None or is_available()):
        empty_cache()
