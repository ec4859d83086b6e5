"""An optimizer passed as ``Trainer(optimizers=(optimizer, scheduler))`` must update the model being trained.

The usual mistake is an optimizer built over another instance of the model (a second ``from_pretrained``, a
``copy.deepcopy``, a ``model_init()`` call of its own): training then computes gradients for the model and steps
parameters nobody uses, and the run "trains" without changing the model. That is refused before the first step.
Partial mismatches have legitimate uses (a frozen part left out of the optimizer while it still has
``requires_grad``; extra parameters a custom ``compute_loss`` learns), so they only warn, naming what is left out.
"""
from __future__ import annotations

import warnings
from typing import Any

import torch

from .errors import ConfigError


def optimizer_parameters(optimizer: Any) -> list:
    params = []
    for group in getattr(optimizer, "param_groups", []) or []:
        values = group.get("params", []) if isinstance(group, dict) else []
        params.extend(p for p in values if isinstance(p, torch.Tensor))
    return params


def check_optimizer_parameters(optimizer: Any, model: Any, custom_loss: bool) -> None:
    """ConfigError when the optimizer holds none of the model's trainable parameters; a warning when it leaves some
    out, or (with the Trainer's own loss) holds parameters that are not the model's."""
    if optimizer is None or not hasattr(optimizer, "param_groups"):
        return
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        return
    held = {id(p) for p in optimizer_parameters(optimizer)}
    if not held:
        return  # an optimizer that manages its parameters its own way: nothing to compare
    own = {id(p) for _, p in model.named_parameters()}
    missing = [n for n, p in named if id(p) not in held]
    foreign = [p for p in optimizer_parameters(optimizer) if id(p) not in own]
    name = type(optimizer).__name__
    if len(missing) == len(named):
        shapes = ", ".join(str(tuple(p.shape)) for p in foreign[:3])
        raise ConfigError(
            f"Trainer(optimizers=(optimizer, ...)): the {name} holds none of the model's {len(named)} trainable "
            f"parameters ({len(foreign)} other tensors{', shapes ' + shapes if shapes else ''}...), so training would "
            f"never change the model. It was probably built over another instance of the model (a second "
            f"from_pretrained, a copy, a model_init() call). Build it from the model you pass: "
            f"{name}(model.parameters(), ...) after any model.to(...), or let the Trainer build it "
            f"(optimizers=(None, None), or optimizer_cls_and_kwargs=({name}, {{...}})).")
    if missing:
        warnings.warn(
            f"Trainer(optimizers=(optimizer, ...)): the {name} leaves out {len(missing)} of the model's "
            f"{len(named)} trainable parameters (e.g. {missing[0]!r}); they get gradients but are never updated. "
            f"If that is meant, freeze them (param.requires_grad = False) to save the memory and time.",
            UserWarning, stacklevel=3)
    if foreign and not custom_loss:
        warnings.warn(
            f"Trainer(optimizers=(optimizer, ...)): the {name} holds {len(foreign)} tensors that are not parameters "
            f"of the model; the Trainer's loss gives them no gradient, so they are never updated.",
            UserWarning, stacklevel=3)
