"""Optimizers and learning-rate schedules named as in transformers (``optim=``, ``lr_scheduler_type=``)."""
from __future__ import annotations

import functools
import math

import torch

from .errors import ConfigError

_NORM_CLASSES = (torch.nn.LayerNorm, torch.nn.GroupNorm, torch.nn.BatchNorm1d, torch.nn.BatchNorm2d,
                 torch.nn.InstanceNorm1d, torch.nn.RMSNorm)


def decay_parameter_names(model: torch.nn.Module) -> set[str]:
    """Parameters that get weight decay: everything but biases and normalisation weights (as HF)."""
    no_decay = set()
    for module_name, module in model.named_modules():
        is_norm = isinstance(module, _NORM_CLASSES) or "norm" in type(module).__name__.lower()
        for name, _ in module.named_parameters(recurse=False):
            full = f"{module_name}.{name}" if module_name else name
            if is_norm or name == "bias" or name.endswith("_bias"):
                no_decay.add(full)
    return {n for n, _ in model.named_parameters()} - no_decay


def fused_supported(device: torch.device) -> bool:
    return device.type in ("cuda", "cpu", "mps", "xpu")


def create_optimizer(model: torch.nn.Module, args, device: torch.device) -> torch.optim.Optimizer:
    decay = decay_parameter_names(model)
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not params:
        raise ConfigError("The model has no parameter with requires_grad=True: nothing to train. "
                          "Unfreeze some parameters (param.requires_grad_(True)).")
    groups = [
        {"params": [p for n, p in params if n in decay], "weight_decay": args.weight_decay},
        {"params": [p for n, p in params if n not in decay], "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    extra = _parse_optim_args(args.optim_args)
    name = args.optim
    lr = args.learning_rate
    if name in ("adamw_torch", "adamw_torch_fused", "adamw_torch_foreach", "adamw"):
        kwargs = dict(lr=lr, betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon)
        if name in ("adamw_torch_fused", "adamw") and fused_supported(device):
            kwargs["fused"] = True
        elif name == "adamw_torch_foreach":
            kwargs["foreach"] = True
        return torch.optim.AdamW(groups, **kwargs, **extra)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, **extra)
    if name == "adagrad":
        return torch.optim.Adagrad(groups, lr=lr, **extra)
    if name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=lr, **extra)
    if name == "adafactor":
        return torch.optim.Adafactor(groups, lr=lr, **extra)
    raise ConfigError(f"optim={name!r} is not supported.")


def _parse_optim_args(optim_args: str | None) -> dict:
    if not optim_args:
        return {}
    out = {}
    for item in optim_args.replace(" ", "").split(","):
        if not item:
            continue
        if "=" not in item:
            raise ConfigError(f"optim_args={optim_args!r}: each item must look like key=value, e.g. 'momentum=0.9'.")
        key, value = item.split("=", 1)
        try:
            out[key] = float(value) if any(c in value for c in ".e") else int(value)
        except ValueError:
            out[key] = {"True": True, "False": False}.get(value, value)
    return out


# ---------------------------------------------------------------- schedules (module-level, so state_dict is JSON-able)
def _constant(step):
    return 1.0


def _constant_with_warmup(step, *, num_warmup_steps):
    return step / max(1, num_warmup_steps) if step < num_warmup_steps else 1.0


def _linear(step, *, num_warmup_steps, num_training_steps):
    if step < num_warmup_steps:
        return step / max(1, num_warmup_steps)
    return max(0.0, (num_training_steps - step) / max(1, num_training_steps - num_warmup_steps))


def _cosine(step, *, num_warmup_steps, num_training_steps, num_cycles=0.5, min_lr_rate=0.0):
    if step < num_warmup_steps:
        return step / max(1, num_warmup_steps)
    progress = (step - num_warmup_steps) / max(1, num_training_steps - num_warmup_steps)
    factor = 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress))
    return max(0.0, factor * (1 - min_lr_rate) + min_lr_rate)


def _cosine_with_restarts(step, *, num_warmup_steps, num_training_steps, num_cycles=1):
    if step < num_warmup_steps:
        return step / max(1, num_warmup_steps)
    progress = (step - num_warmup_steps) / max(1, num_training_steps - num_warmup_steps)
    if progress >= 1.0:
        return 0.0
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * ((float(num_cycles) * progress) % 1.0))))


def _polynomial(step, *, num_warmup_steps, num_training_steps, lr_end=1e-7, power=1.0, lr_init=1.0):
    if step < num_warmup_steps:
        return step / max(1, num_warmup_steps)
    if step > num_training_steps:
        return lr_end / lr_init
    decay_steps = num_training_steps - num_warmup_steps
    remaining = 1 - (step - num_warmup_steps) / max(1, decay_steps)
    return ((lr_init - lr_end) * remaining ** power + lr_end) / lr_init


def _inverse_sqrt(step, *, num_warmup_steps, timescale=None):
    timescale = timescale or (num_warmup_steps or 10_000)
    if step < num_warmup_steps:
        return step / max(1, num_warmup_steps)
    shift = timescale - num_warmup_steps
    return 1.0 / math.sqrt((step + shift) / timescale)


def _warmup_stable_decay(step, *, num_warmup_steps, num_training_steps, num_decay_steps=None, min_lr_ratio=0.0):
    num_decay_steps = num_decay_steps if num_decay_steps is not None else int(0.1 * num_training_steps)
    stable_end = num_training_steps - num_decay_steps
    if step < num_warmup_steps:
        return step / max(1, num_warmup_steps)
    if step < stable_end:
        return 1.0
    progress = (step - stable_end) / max(1, num_decay_steps)
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def create_scheduler(name: str, optimizer, num_warmup_steps: int, num_training_steps: int, kwargs: dict | None = None):
    kwargs = dict(kwargs or {})
    w, t = num_warmup_steps, num_training_steps
    if name == "reduce_lr_on_plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, **kwargs)
    if name == "polynomial":
        kwargs.setdefault("lr_init", optimizer.defaults["lr"])
    if name == "cosine_with_min_lr":
        if "min_lr" in kwargs:
            kwargs["min_lr_rate"] = kwargs.pop("min_lr") / optimizer.defaults["lr"]
        name = "cosine"
    table = {
        "constant": functools.partial(_constant),
        "constant_with_warmup": functools.partial(_constant_with_warmup, num_warmup_steps=w),
        "linear": functools.partial(_linear, num_warmup_steps=w, num_training_steps=t),
        "cosine": functools.partial(_cosine, num_warmup_steps=w, num_training_steps=t, **kwargs),
        "cosine_with_restarts": functools.partial(_cosine_with_restarts, num_warmup_steps=w, num_training_steps=t, **kwargs),
        "polynomial": functools.partial(_polynomial, num_warmup_steps=w, num_training_steps=t, **kwargs),
        "inverse_sqrt": functools.partial(_inverse_sqrt, num_warmup_steps=w, **kwargs),
        "warmup_stable_decay": functools.partial(_warmup_stable_decay, num_warmup_steps=w, num_training_steps=t, **kwargs),
    }
    if name not in table:
        raise ConfigError(f"lr_scheduler_type={name!r} is not supported; choose one of {sorted(table)}.")
    if kwargs and name in ("linear", "constant", "constant_with_warmup"):
        raise ConfigError(f"lr_scheduler_kwargs={kwargs!r} is not used by lr_scheduler_type={name!r}; remove it.")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, table[name])
