"""Optimizers and learning-rate schedules named as in transformers (``optim=``, ``lr_scheduler_type=``)."""
from __future__ import annotations

import warnings

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
    cls, kwargs = optimizer_cls_and_kwargs(args, device)
    return cls(groups, **kwargs)


def optimizer_cls_and_kwargs(args, device: torch.device | None) -> tuple[type, dict]:
    """(class, keyword arguments) of the optimizer ``args.optim`` names (Trainer.get_optimizer_cls_and_kwargs)."""
    extra = _parse_optim_args(args.optim_args)
    name = args.optim
    lr = args.learning_rate
    if name in ("adamw_torch", "adamw_torch_fused", "adamw_torch_foreach", "adamw"):
        kwargs = dict(lr=lr, betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon)
        if name in ("adamw_torch_fused", "adamw") and device is not None and fused_supported(device):
            kwargs["fused"] = True
        elif name == "adamw_torch_foreach":
            kwargs["foreach"] = True
        return torch.optim.AdamW, {**kwargs, **extra}
    simple = {"sgd": torch.optim.SGD, "adagrad": torch.optim.Adagrad, "rmsprop": torch.optim.RMSprop,
              "adafactor": torch.optim.Adafactor}
    if name in simple:
        return simple[name], {"lr": lr, **extra}
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


# ---------------------------------------------------------------- schedules
def create_scheduler(name: str, optimizer, num_warmup_steps: int, num_training_steps: int, kwargs: dict | None = None):
    """Any transformers ``lr_scheduler_type``, built by transformers' own ``get_scheduler`` with
    ``lr_scheduler_kwargs`` passed through. A wrong keyword raises ``ConfigError`` naming lr_scheduler_kwargs."""
    from transformers.optimization import get_scheduler
    if kwargs is not None and not isinstance(kwargs, dict):
        raise ConfigError(f"lr_scheduler_kwargs={kwargs!r} must be a dict (or a JSON object string), "
                          'e.g. {"num_cycles": 0.5}.')
    kwargs = dict(kwargs or {})
    if name in ("constant", "constant_with_warmup") and kwargs:  # transformers drops them without a word
        warnings.warn(f"lr_scheduler_kwargs={kwargs!r} is not used by lr_scheduler_type={name!r} and is ignored "
                      "(as in transformers); remove it.", stacklevel=3)
    try:
        return get_scheduler(name, optimizer, num_warmup_steps=num_warmup_steps,
                             num_training_steps=num_training_steps, scheduler_specific_kwargs=kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"lr_scheduler_type={name!r} with lr_scheduler_kwargs={kwargs!r}: {e}. Fix or remove "
                          "lr_scheduler_kwargs (see the documentation of that schedule in transformers.optimization)."
                          ) from e


_METRIC_STEPPED: dict[type, bool] = {}


def steps_on_metric(scheduler) -> bool:
    """True for a scheduler stepped with the evaluation metric after each evaluation rather than after each
    optimizer step: torch's ``ReduceLROnPlateau``, transformers' ``GreedyLR``, or any scheduler whose
    ``step`` needs a value. The answer is cached per class (this is asked every optimizer step)."""
    cls = type(scheduler)
    known = _METRIC_STEPPED.get(cls)
    if known is None:
        known = _needs_metric(cls)
        _METRIC_STEPPED[cls] = known
    return known


def _needs_metric(cls) -> bool:
    if issubclass(cls, torch.optim.lr_scheduler.ReduceLROnPlateau):
        return True
    if any(c.__name__ == "GreedyLR" for c in cls.__mro__):
        return True
    import inspect
    try:
        params = list(inspect.signature(cls.step).parameters.values())[1:]
    except (TypeError, ValueError, AttributeError):
        return False
    return bool(params) and params[0].default is inspect.Parameter.empty and \
        params[0].kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
