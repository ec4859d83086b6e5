"""Optimizers and learning-rate schedules named as in transformers (``optim=``, ``lr_scheduler_type=``)."""
from __future__ import annotations

import warnings
from typing import Any

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


def named_parameter_groups(model: torch.nn.Module, decay: set[str] | None = None) -> tuple[list, list]:
    """The trainable ``(name, parameter)`` pairs split as transformers does: those with weight decay, then those
    without (``decay``: the names with weight decay; default :func:`decay_parameter_names`)."""
    decay = decay_parameter_names(model) if decay is None else decay
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [(n, p) for n, p in named if n in decay], [(n, p) for n, p in named if n not in decay]


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """The optimizer's param groups: ``weight_decay`` for the weights, none for biases and normalisation weights
    (empty groups left out)."""
    with_decay, without = named_parameter_groups(model)
    groups = [{"params": [p for _, p in with_decay], "weight_decay": weight_decay},
              {"params": [p for _, p in without], "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def fused_supported(device: torch.device) -> bool:
    return device.type in ("cuda", "cpu", "mps", "xpu")


def create_optimizer(model: torch.nn.Module, args: Any, device: torch.device) -> torch.optim.Optimizer:
    """The optimizer ``args.optim`` names, over :func:`parameter_groups`, with transformers' hyper-parameters."""
    groups = parameter_groups(model, args.weight_decay)
    if not groups:
        raise ConfigError("The model has no parameter with requires_grad=True: nothing to train. "
                          "Unfreeze some parameters (param.requires_grad_(True)).")
    cls, kwargs = optimizer_cls_and_kwargs(args, device)
    return cls(groups, **kwargs)


def optimizer_cls_and_kwargs(args: Any, device: torch.device | None) -> tuple[type, dict]:
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
def create_scheduler(name: str, optimizer: Any, num_warmup_steps: int, num_training_steps: int,
                     kwargs: dict | None = None) -> Any:
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


def current_learning_rate(scheduler: Any, optimizer: Any) -> float:
    """The learning rate to log: the schedule's last one (a metric-stepped schedule: the first group's)."""
    if steps_on_metric(scheduler):
        return float(optimizer.param_groups[0]["lr"])
    return float(scheduler.get_last_lr()[0])


def step_on_metric(scheduler: Any, metrics: dict, metric_for_best_model: str | None) -> None:
    """After an evaluation: a metric-stepped schedule steps with the best-model metric (default the loss), as
    transformers; one the evaluation did not produce raises naming the metrics it did."""
    key = metric_for_best_model or "loss"
    key = key if key.startswith("eval_") else f"eval_{key}"
    if key not in metrics:
        raise ConfigError(f"The learning-rate scheduler ({type(scheduler).__name__}) is stepped with "
                          f"{key!r} (metric_for_best_model), which the evaluation did not produce; it produced "
                          f"{', '.join(sorted(metrics))}. Set metric_for_best_model to one of those.")
    scheduler.step(metrics[key])


_METRIC_STEPPED: dict[type, bool] = {}


def steps_on_metric(scheduler: Any) -> bool:
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
