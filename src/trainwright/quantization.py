"""Quantized bases (bitsandbytes 4-bit / 8-bit, transformers' other quantizers): the checks made when the Trainer is
built, and where the model goes.

A bitsandbytes model trains only on a CUDA GPU with the ``bitsandbytes`` package; on any other machine it fails
deep in its first forward pass (or at ``.to()``), so the Trainer says so when it is built. Quantized weights
cannot be trained themselves: as transformers, a quantized model needs trainable adapters (a PEFT model). A
bitsandbytes model is already placed by ``from_pretrained`` and refuses ``.to()``: it is left where it is, as
transformers does.
"""
from __future__ import annotations

import importlib.util
from typing import Any

import torch

from .errors import ModelError


def _settings(model: Any) -> list:
    """The quantization configs the model carries (its quantizer's, its config's), dicts or objects."""
    found = []
    for config in (getattr(getattr(model, "hf_quantizer", None), "quantization_config", None),
                   getattr(getattr(model, "config", None), "quantization_config", None)):
        if config is not None:
            found.append(config)
    return found


def _get(config: Any, key: str) -> Any:
    value = config.get(key) if isinstance(config, dict) else getattr(config, key, None)
    return getattr(value, "value", value)  # an enum (QuantizationMethod.BITS_AND_BYTES) as its string


def bitsandbytes_bits(model: Any) -> int | None:
    """4 or 8 for a model quantized with bitsandbytes, else None."""
    if getattr(model, "is_loaded_in_4bit", False):
        return 4
    if getattr(model, "is_loaded_in_8bit", False):
        return 8
    for config in _settings(model):
        if _get(config, "load_in_4bit"):
            return 4
        if _get(config, "load_in_8bit"):
            return 8
        if _get(config, "quant_method") == "bitsandbytes":
            return 4 if _get(config, "_load_in_4bit") else 8
    return None


def quantization_method(model: Any) -> str | None:
    """The quantization method of a quantized model (``"bitsandbytes"``, ``"gptq"``, ...), else None."""
    if bitsandbytes_bits(model) is not None:
        return "bitsandbytes"
    for config in _settings(model):
        if _get(config, "quant_method"):
            return str(_get(config, "quant_method"))
    return "quantized" if getattr(model, "is_quantized", False) is True else None


def check_quantized_model(model: Any, device: torch.device) -> None:
    """Raises ModelError for a bitsandbytes model on a machine that cannot train it (naming what it needs), and
    for a quantized model without trainable adapters."""
    bits = bitsandbytes_bits(model)
    if bits is not None:
        missing = []
        if device.type != "cuda":
            missing.append("this machine has no CUDA GPU" if not torch.cuda.is_available()
                           else f"the Trainer runs on {device.type} (use_cpu=True)")
        if importlib.util.find_spec("bitsandbytes") is None:
            missing.append("the bitsandbytes package is not installed")
        if missing:
            raise ModelError(
                f"The model is quantized to {bits}-bit with bitsandbytes (is_loaded_in_{bits}bit / "
                f"quantization_config): training it needs a CUDA GPU and the bitsandbytes package, but "
                f"{' and '.join(missing)}. Train on a machine with a CUDA GPU (pip install bitsandbytes), or load "
                f"the model here without quantization_config (e.g. from_pretrained(..., dtype=torch.bfloat16)) and "
                f"train a LoRA adapter on it.")
    method = quantization_method(model)
    if method is None:
        return
    from .checkpoint.adapters import is_adapter_model
    quantizer = getattr(model, "hf_quantizer", None)
    if not is_adapter_model(model) and not getattr(quantizer, "is_qat_trainable", False):
        raise ModelError(
            f"The model is quantized ({method}) and has no trainable adapter: quantized weights cannot be trained "
            "(transformers refuses this too). Attach an adapter first, e.g. model = peft.get_peft_model("
            "peft.prepare_model_for_kbit_training(model), peft.LoraConfig(r=8, target_modules='all-linear')).")


def place_model(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The model on ``device`` after the checks above; a bitsandbytes model stays where from_pretrained put it."""
    check_quantized_model(model, device)
    return model if bitsandbytes_bits(model) is not None else model.to(device)
