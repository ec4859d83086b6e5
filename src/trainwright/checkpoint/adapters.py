"""PEFT adapters in checkpoints and saved models: a ``peft.PeftModel`` (LoRA, IA3, prompt / prefix tuning, ...) or a
transformers model with an adapter added (``model.add_adapter``) is saved as its adapter, never its frozen base.

What is written is what the model's own ``save_pretrained`` writes -- ``adapter_model.safetensors`` and
``adapter_config.json`` for each adapter (in ``<name>/`` for a ``PeftModel``'s adapters other than ``default``) --
so that ``PeftModel.from_pretrained(base, "checkpoint-N")`` loads a checkpoint as it loads a transformers one. peft
names the tensors of these files its own way (``...q_proj.lora_A.weight`` for the model's
``...q_proj.lora_A.default.weight``); the manifest keeps, for each file, which tensor of the model each saved tensor
is (found by identity in the state dict peft saved from), so that resuming and ``load_best_model_at_end`` put every
tensor back where it came from. A trainable parameter that peft does not save as it is (prefix tuning's projection,
a prompt encoder whose embeddings peft saves computed, a base parameter unfrozen by hand) goes to
``trainwright_trainable.safetensors``: resuming restores every trainable tensor exactly.

Loading checks that every saved tensor has its place in the model and that every trainable parameter of the model
was restored; the frozen base is the model's own (build it from the same weights to resume).
"""
from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable
from typing import Any

from ..errors import CheckpointError
from .format import _few

ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
ADAPTER_CONFIG_NAME = "adapter_config.json"
TRAINABLE_NAME = "trainwright_trainable.safetensors"  # trainable tensors the adapter files do not hold as they are


def _inner(model: Any) -> Any:
    """The model itself under the FSDP2 full-state view (``checkpoint`` code sees that view in its place)."""
    return getattr(model, "_model", model)


def is_adapter_model(model: Any) -> bool:
    """A ``peft.PeftModel`` (peft is imported by then), or a transformers model with an adapter added."""
    m = _inner(model)
    peft = sys.modules.get("peft")
    if peft is not None and isinstance(m, peft.PeftModel):
        return True
    return bool(getattr(m, "_hf_peft_config_loaded", False)) and isinstance(getattr(m, "peft_config", None), dict)


def trainable_names(model: Any) -> list[str]:
    """The names of the parameters with ``requires_grad`` (what a checkpoint must give back)."""
    return [n for n, p in _inner(model).named_parameters() if p.requires_grad]


def _files(model: Any) -> dict[str, tuple[str, str]]:
    """{adapter file: (adapter name, prefix of its tensor names)} of what ``save_pretrained`` writes."""
    m = _inner(model)
    if isinstance(m, sys.modules["peft"].PeftModel):
        return {(ADAPTER_WEIGHTS_NAME if name == "default" else f"{name}/{ADAPTER_WEIGHTS_NAME}"): (name, "")
                for name in m.peft_config}
    active = m.active_adapters()  # transformers' adapter integration: the active adapter, its keys prefixed
    return {ADAPTER_WEIGHTS_NAME: (active[0] if active else "default", "base_model.model.")}


def _adapter_files(model: Any, state: dict) -> dict[str, dict[str, str]]:
    """For each adapter file ``save_pretrained`` writes: {saved tensor name: the model's tensor name}, found by
    identity in ``state`` (what peft selects from the state dict is its tensors, renamed)."""
    from peft import get_peft_model_state_dict

    m = _inner(model)
    by_id = {id(t): k for k, t in state.items()}
    maps = {}
    for rel, (name, prefix) in _files(model).items():
        with warnings.catch_warnings():  # (embedding-layer notices: the map takes them all)
            warnings.simplefilter("ignore")
            selected = get_peft_model_state_dict(m, state_dict=state, adapter_name=name,
                                                 save_embedding_layers=hasattr(m, "get_input_embeddings"))
        maps[rel] = {prefix + k: by_id[id(t)] for k, t in selected.items() if id(t) in by_id}
    return maps


def save_adapter(w: Any, model: Any, *, checkpoint: bool) -> dict:
    """Writes ``model``'s adapter with its ``save_pretrained`` into the writer's directory (plus the trainable
    tensors the adapter files do not hold as they are); returns the manifest's ``model`` entry."""
    from safetensors import safe_open

    state = model.state_dict()  # the FSDP2 view: the gathered full state
    maps = _adapter_files(model, state)
    new = w.run_external(lambda: model.save_pretrained(w.root, safe_serialization=True))
    adapters, derived = {}, {}
    for rel in sorted(f for f in new if f.endswith(".safetensors")):
        key_map = maps.get(rel, {})
        with safe_open(os.path.join(w.root, rel), framework="pt") as f:
            keys = list(f.keys())
            # a tensor peft computes to save (prompt tuning's prompt_embeddings): placed where it equals a trainable
            # tensor exactly (the prompt embedding's weight), else kept in TRAINABLE_NAME below
            derived[rel] = {k: f.get_tensor(k) for k in keys if k not in key_map}
        adapters[rel] = {k: key_map[k] for k in keys if k in key_map}
    if not adapters:
        raise CheckpointError(f"{type(_inner(model)).__name__}.save_pretrained wrote no adapter safetensors file "
                              f"(wrote: {', '.join(sorted(new)) or 'nothing'})")
    covered = {n for key_map in adapters.values() for n in key_map.values()}
    extra = [n for n in trainable_names(model) if n not in covered]
    for rel, tensors in derived.items():
        for key, tensor in list(tensors.items()):
            twin = next((n for n in extra if _equal(state.get(n), tensor)), None)
            if twin is not None:
                adapters[rel][key] = twin
                extra.remove(twin)
                del tensors[key]
    files, aliases = sorted(adapters), {}
    if extra:
        aliases = w.write_tensors(TRAINABLE_NAME, {n: state[n] for n in extra})
        files.append(TRAINABLE_NAME)
        if not checkpoint:
            warnings.warn(f"{len(extra)} trainable tensor(s) are not part of the PEFT adapter ({_few(extra)}): "
                          f"they are saved in {TRAINABLE_NAME}, which PeftModel.from_pretrained does not read. "
                          "To have peft save a module, name it in the config's modules_to_save.", stacklevel=4)
    return {"format": "peft", "class": type(model).__name__, "weight_files": files, "adapters": adapters,
            "derived": {rel: sorted(t) for rel, t in derived.items() if t}, "trainable": extra, "aliases": aliases}


def _equal(a: Any, b: Any) -> bool:
    import torch

    return isinstance(a, torch.Tensor) and a.shape == b.shape and a.dtype == b.dtype and \
        torch.equal(a.detach().cpu(), b)


def read_adapter_state(path: str, info: dict, read_tensors: Callable[[str, str], dict]) -> tuple[dict, dict]:
    """(the state by the model's tensor names, aliases) from an adapter checkpoint's files (``read_tensors(path,
    rel)`` reads one safetensors file)."""
    state: dict = {}
    for rel, key_map in (info.get("adapters") or {}).items():
        skip = set((info.get("derived") or {}).get(rel, ()))
        for key, tensor in read_tensors(path, rel).items():
            if key in key_map:
                state[key_map[key]] = tensor
            elif key not in skip:
                raise CheckpointError(f"checkpoint {path}: {rel} holds {key!r}, which its manifest does not place")
    if TRAINABLE_NAME in (info.get("weight_files") or ()):
        state.update(read_tensors(path, TRAINABLE_NAME))
    return state, dict(info.get("aliases") or {})


def foreign_adapter_state(path: str, model: Any, read_tensors: Callable[[str, str], dict]) -> dict:
    """The state of an adapter directory written by peft or transformers (no trainwright manifest), placed by the
    names ``model``'s own ``save_pretrained`` would give its tensors."""
    state = model.state_dict()
    maps = _adapter_files(model, state)
    for rel, (name, _) in _files(model).items():  # peft loads prompt_embeddings into the prompt embedding
        config = _inner(model).peft_config[name]
        target = f"prompt_encoder.{name}.embedding.weight"
        if str(getattr(config, "peft_type", "")).endswith(("PROMPT_TUNING", "PREFIX_TUNING")) and \
                "MULTITASK" not in str(config.peft_type) and not getattr(config, "prefix_projection", False) \
                and target in state:
            maps[rel]["prompt_embeddings"] = target
    state = {}
    for rel, key_map in maps.items():
        if not os.path.isfile(os.path.join(path, rel)):
            continue
        tensors = read_tensors(path, rel)
        unknown = [k for k in tensors if k not in key_map]
        if unknown:
            raise CheckpointError(f"{path}: {rel} does not fit the model's adapter: unexpected weights "
                                  f"{_few(unknown)}")
        state.update({key_map[k]: t for k, t in tensors.items() if k in key_map})
    return state


def has_adapter_files(path: str) -> bool:
    return os.path.isfile(os.path.join(path, ADAPTER_WEIGHTS_NAME))
