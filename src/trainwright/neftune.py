"""NEFTune (noisy embeddings for fine-tuning, https://arxiv.org/abs/2310.05914) as transformers implements it.

With ``neftune_noise_alpha=a``, during training the input embeddings' output (batch, seq_len, hidden) gets uniform
noise in ``[-m, m]``, ``m = a / sqrt(seq_len * hidden)``. The hook is a forward hook on the input embedding module
(for a PEFT model: the base model's), added when training begins and removed when it ends; it adds noise only
while the module is in training mode, so evaluation inside and outside ``train()`` sees the plain embeddings.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from .callbacks import TrainerCallback
from .errors import ConfigError, ModelError


def neftune_hook(module: Any, inputs: Any, output: Any) -> Any:
    """Forward hook: uniform noise of magnitude ``alpha / sqrt(seq_len * hidden)`` in training mode only."""
    if module.training:
        # the magnitude in float32, as transformers computes it (so the noise draws are the same)
        magnitude = float(module.neftune_noise_alpha / torch.tensor(float(output.size(1) * output.size(2))).sqrt())
        output = output + torch.zeros_like(output).uniform_(-magnitude, magnitude)
    return output


def input_embeddings(model: Any) -> torch.nn.Module:
    """The module NEFTune hooks: ``get_input_embeddings()`` of the model, or of the base model under PEFT."""
    target = model
    if hasattr(model, "peft_config") and hasattr(model, "base_model"):
        target = getattr(model.base_model, "model", model.base_model)
    get = getattr(target, "get_input_embeddings", None)
    embeddings = None
    if callable(get):
        try:
            embeddings = get()
        except NotImplementedError:
            embeddings = None
    if not isinstance(embeddings, torch.nn.Module):
        raise ModelError(f"neftune_noise_alpha needs the model's input embeddings, but {type(target).__name__}."
                         "get_input_embeddings() gives none. Drop neftune_noise_alpha for this model.")
    return embeddings


class NEFTuneCallback(TrainerCallback):
    """Adds the NEFTune hook at ``on_train_begin`` and removes it at ``on_train_end`` (the Trainer adds this
    callback when ``neftune_noise_alpha`` is set)."""

    def __init__(self, alpha: float) -> None:
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha < 0:
            raise ConfigError(f"neftune_noise_alpha={alpha!r} must be a number >= 0 (the NEFTune paper uses 5 to 15), "
                              "or None to turn NEFTune off.")
        self.alpha = float(alpha)
        self._handle = None
        self._module = None

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self.remove()  # a train() that ended with an exception left its hook: never two
        module = input_embeddings(model)
        module.neftune_noise_alpha = self.alpha
        self._handle = module.register_forward_hook(neftune_hook)
        self._module = module

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.remove()

    def remove(self) -> None:
        if self._handle is not None:
            self._handle.remove()
        if self._module is not None and hasattr(self._module, "neftune_noise_alpha"):
            del self._module.neftune_noise_alpha
        self._handle = self._module = None


def neftune_callbacks(args: Any) -> list:
    """The callback to add for ``args.neftune_noise_alpha`` (none when it is unset)."""
    alpha = getattr(args, "neftune_noise_alpha", None)
    return [] if alpha is None else [NEFTuneCallback(alpha)]
