"""The ``peft:`` section of a config: train an adapter (LoRA, IA3, prompt tuning, ... -- any method of the ``peft``
package) instead of the whole model, and load a saved adapter back onto its base for ``evaluate`` / ``predict``.

``peft: {method: lora, r: 8, alpha: 16, dropout: 0.05, target_modules: [q_proj, v_proj]}`` becomes
``peft.LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=[...], task_type="CAUSAL_LM")`` (the
task type follows ``task:``), applied with ``peft.get_peft_model`` after the model is loaded. The short names of
:data:`~trainwright.cli.keys.PEFT_KEYS` (``alpha``, ``dropout``) stand for the method's own field; any other
field of the method's config class (``use_rslora``, ``bias``, ``init_lora_weights``, ...) is passed as it is.
Everything is checked (by building the peft config) when the config file is read, before any data is loaded.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, did_you_mean
from .keys import PEFT_KEYS, names

if TYPE_CHECKING:
    from .config import RunConfig
    from .tasks.base import Task

#: ``task:`` → peft's task type (by the task's model class), so get_peft_model wraps the right model kind
TASK_TYPES = {"AutoModelForCausalLM": "CAUSAL_LM", "AutoModelForSequenceClassification": "SEQ_CLS",
              "AutoModelForTokenClassification": "TOKEN_CLS", "AutoModelForSeq2SeqLM": "SEQ_2_SEQ_LM"}
#: short names of the section → the field of the method's config class they stand for (first one it has)
ALIASES = {"alpha": ("lora_alpha", "alpha"), "dropout": ("lora_dropout", "module_dropout", "dropout")}
BASE_CONFIG_NAME = "base_config.json"  # the base model's config, saved beside the adapter by `trainwright train`


def _peft(where: str):
    try:
        import peft
    except ImportError as e:
        raise ConfigError(f"{where}: the peft: section needs the peft package: pip install peft "
                          "(or pip install \"trainwright[peft]\").") from e
    return peft


def methods() -> dict[str, type]:
    """``method:`` name (lora, ia3, prompt_tuning, ...) → peft's config class, from peft's own registry."""
    peft = _peft("peft")
    return {str(getattr(k, "value", k)).lower(): v for k, v in peft.PEFT_TYPE_TO_CONFIG_MAPPING.items()}


def peft_config(section: Any, task: Task, where: str) -> Any:
    """The peft config object for ``peft:`` (None when the section is absent); ConfigError naming the key."""
    if section is None:
        return None
    if not isinstance(section, dict):
        raise ConfigError(f"{where}: peft: must be a mapping such as {{method: lora, r: 8, alpha: 16}}; "
                          f"got {section!r}.")
    method = str(section.get("method") or "lora").strip().lower().replace("-", "_")
    known = methods()
    if method not in known:
        hint = did_you_mean(method, list(known))
        raise ConfigError(f"{where}: peft.method: {section.get('method')!r} is not a peft method.{hint} Methods: "
                          f"{', '.join(sorted(known))}.")
    cls = known[method]
    fields = {f.name for f in dataclasses.fields(cls)} - {"peft_type", "task_type", "base_model_name_or_path"}
    kwargs = {}
    for key, value in section.items():
        if key == "method" or value is None:  # null: unset (peft's default), as in the init template
            continue
        if key in ALIASES:
            field = next((f for f in ALIASES[key] if f in fields), None)
            if field is None:
                raise ConfigError(f"{where}: peft.{key}: method {method} has no {key} "
                                  f"(its settings: {', '.join(sorted(fields))}).")
        elif key in fields:
            field = key
        else:
            valid = [k for k in names(PEFT_KEYS)
                     if k == "method" or k in fields or any(f in fields for f in ALIASES.get(k, ()))]
            hint = did_you_mean(key, valid + sorted(fields), show=lambda m: f"'peft.{m}'")
            raise ConfigError(f"{where}: unknown key 'peft.{key}' for method {method} ({cls.__name__}).{hint} "
                              f"Valid keys: {', '.join(valid)}, or any {cls.__name__} field.")
        _check_type(cls, field, key, value, where)
        kwargs[field] = value
    task_type = TASK_TYPES.get(task.model_class)
    if task_type is not None and "task_type" in {f.name for f in dataclasses.fields(cls)}:
        kwargs["task_type"] = task_type
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: peft: {cls.__name__}({_shown(kwargs)}) is not valid: {e}") from e


def _check_type(cls, field: str, key: str, value, where: str) -> None:
    """The value against the field's annotation where it is a plain int / float / bool or a Literal of names
    (peft itself does not check ``r: big`` or ``bias: some``)."""
    import ast
    annotation = str(next((f.type for f in dataclasses.fields(cls) if f.name == field), ""))
    if annotation == "bool":
        ok, need = isinstance(value, bool), "true or false"
    elif annotation == "int":
        ok, need = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif annotation == "float":
        ok, need = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    elif annotation.startswith("Literal[") and annotation.endswith("]"):
        try:
            choices = ast.literal_eval("(" + annotation[len("Literal["):-1] + ",)")
        except (ValueError, SyntaxError):
            return
        ok, need = value in choices, "one of " + ", ".join(map(str, choices))
    else:
        return
    if not ok:
        raise ConfigError(f"{where}: peft.{key} must be {need}; got {value!r}.")


def _shown(kwargs: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())


def apply_peft(model: Any, config: Any, where: str) -> Any:
    """``peft.get_peft_model(model, config)``; a target module the model does not have is named with the
    model's linear layers, so ``peft.target_modules`` can be fixed."""
    peft = _peft(where)
    try:
        model = peft.get_peft_model(model, config)
    except ValueError as e:
        import torch
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
        raise ConfigError(f"{where}: peft: {e} -- peft.target_modules must name modules of "
                          f"{type(model).__name__}; its linear layers are: {', '.join(linear)} "
                          "(or use target_modules: all-linear).") from e
    return model


def has_adapter(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "adapter_config.json"))


def save_base_config(model: Any, output_dir: str) -> None:
    """The base model's config (labels, ``is_decoder``, ...) beside the adapter, so evaluate / predict rebuild the
    same base; written as ``base_config.json`` (a ``config.json`` would make the directory look like a full model)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    if config is not None:
        config.to_json_file(os.path.join(output_dir, BASE_CONFIG_NAME))


def base_model_path(cfg: RunConfig, path: str) -> str:
    """Where the adapter in ``path`` has its base: the config's ``model:``, else what peft recorded."""
    from .models import resolve_model
    if cfg.model:
        return resolve_model(cfg.model, cfg)
    with open(os.path.join(path, "adapter_config.json"), encoding="utf-8") as f:
        recorded = json.load(f).get("base_model_name_or_path")
    if not recorded:
        raise ConfigError(f"the adapter in {path} does not say which model it was trained on: set model: in the "
                          "config to its base model.")
    return resolve_model(recorded, cfg)


def load_adapter_model(cfg: RunConfig, path: str) -> Any:
    """The model of ``trainwright evaluate/predict`` when ``path`` holds an adapter: the base model (with the
    config saved beside the adapter, so the same head and labels) and the adapter on it, ready to evaluate."""
    peft = _peft(cfg.path)
    import transformers

    from .models import from_pretrained
    base_path = base_model_path(cfg, path)
    cls = getattr(transformers, cfg.task.model_class)
    kwargs = {}
    # beside the adapter, else in the run directory above a checkpoint-N
    saved = next((p for p in (os.path.join(path, BASE_CONFIG_NAME),
                              os.path.join(os.path.dirname(os.path.abspath(path)), BASE_CONFIG_NAME))
                  if os.path.isfile(p)), "")
    if saved:
        config_class = type(transformers.AutoConfig.from_pretrained(base_path))
        kwargs["config"] = config_class.from_json_file(saved)
    elif cfg.task.model_class == "AutoModelForCausalLM":
        from .models import causal_lm_kwargs
        kwargs.update(causal_lm_kwargs(base_path))
    base = from_pretrained(lambda p: cls.from_pretrained(p, **kwargs), base_path, "base model")
    try:
        model = peft.PeftModel.from_pretrained(base, path)
    except (ValueError, RuntimeError, KeyError) as e:
        raise ConfigError(f"could not load the adapter in {path} onto {base_path}: {e}") from e
    model.eval()
    return model
