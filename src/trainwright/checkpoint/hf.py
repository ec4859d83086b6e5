"""Resuming from a checkpoint written by ``transformers.Trainer``, without unpickling anything.

transformers writes ``checkpoint-N/`` as::

    model.safetensors (or shards + model.safetensors.index.json), config.json, tokenizer files
    optimizer.pt, scheduler.pt, scaler.pt     torch.save of the state dicts
    rng_state.pth / rng_state_<rank>.pth      python, numpy, torch CPU/CUDA generator states
    trainer_state.json                        global_step, epoch, best_metric, log_history, ...
    training_args.bin                         torch.save of the TrainingArguments object: a full pickle

The weights are read from safetensors. ``optimizer.pt``, ``scheduler.pt``, ``scaler.pt`` and ``rng_state*.pth``
are read only through ``torch.load(weights_only=True)`` (torch's restricted unpickler: tensors, numbers, strings,
containers and numpy arrays only; it never imports or calls anything else). ``training_args.bin`` needs a full
unpickle and is skipped with a notice: the arguments given to this Trainer apply. A file that the restricted
reader refuses is named, with the user's choices (move it aside and continue from the rest, or start a new run
from the weights). Nothing in the directory is opened unless it is a regular file.

The optimizer state is placed by parameter, not by index: transformers numbers the parameters in its own groups
(those with weight decay, then those without, each in ``named_parameters`` order); each saved entry is mapped to
its parameter and then to that parameter's index in this Trainer's optimizer, and every moment's shape is checked
against its parameter.
"""
from __future__ import annotations

import contextlib
import logging
import os
import warnings
from typing import Any

import torch

from ..errors import CheckpointError
from . import safe_fs
from .format import MANIFEST_NAME, _unwrap_model, _unwrap_optimizer
from .reader import _apply, _apply_model_state, _read_json, _read_tensors, _refuse_non_regular

logger = logging.getLogger("trainwright")

HF_TRAINER_STATE = "trainer_state.json"
HF_TRAINING_ARGS = "training_args.bin"
HF_OPTIMIZER = "optimizer.pt"
HF_SCHEDULER = "scheduler.pt"
HF_SCALER = "scaler.pt"
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json",
            "adapter_model.safetensors")  # (the last: a PEFT model's checkpoint holds its adapter)
_TRAINWRIGHT_ONLY = ("optimizer.json", "rng_state.json", "training_args.json", "scheduler.json")
_IMPLEMENTATION_KEYS = ("fused", "foreach", "capturable", "differentiable")


def is_hf_checkpoint(path: Any) -> bool:
    """A directory transformers.Trainer wrote: trainer_state.json and model weights, no trainwright manifest and
    none of the files only trainwright writes."""
    path = os.fspath(path)
    if not os.path.isdir(path) or os.path.lexists(os.path.join(path, MANIFEST_NAME)):
        return False
    if any(os.path.lexists(os.path.join(path, n)) for n in _TRAINWRIGHT_ONLY):
        return False
    return os.path.lexists(os.path.join(path, HF_TRAINER_STATE)) and \
        any(os.path.lexists(os.path.join(path, n)) for n in _WEIGHTS)


def _choices(path: str, rel: str) -> str:
    return (f"Your choices: move {os.path.join(path, rel)} aside and resume again (the rest of the checkpoint is "
            f"used and that part starts fresh), or continue from the weights only: build the model with "
            f"from_pretrained({path!r}) and call train() without resume_from_checkpoint")


@contextlib.contextmanager
def _numpy_allowed():
    """numpy arrays (the numpy RNG state) for torch's restricted unpickler; nothing that runs code."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    allowed = [core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]
    with torch.serialization.safe_globals(allowed):
        yield


def _torch_load(path: str, rel: str):
    """torch.load(weights_only=True) of a regular file; anything it refuses becomes a CheckpointError."""
    full = os.path.join(path, rel)
    _refuse_non_regular(path, rel)
    try:
        with _numpy_allowed(), safe_fs.open_regular(full) as f:
            return torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"checkpoint {path}: {rel} cannot be read without unpickling arbitrary objects "
            f"(torch.load(weights_only=True) refused it: {first[:200]}); trainwright never unpickles. "
            + _choices(path, rel)) from e


# ------------------------------------------------------------------------------------------------- reading
def _weights(path: str, model: Any = None) -> dict:
    from .adapters import foreign_adapter_state, has_adapter_files, is_adapter_model

    if model is not None and is_adapter_model(model) and has_adapter_files(path):
        return foreign_adapter_state(path, _unwrap_model(model), _read_tensors)
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if os.path.lexists(os.path.join(path, index_name)):
            _refuse_non_regular(path, index_name)
            index = _read_json(path, index_name)
            files = sorted(set((index.get("weight_map") or {}).values())) if isinstance(index, dict) else []
            if not files or not all(isinstance(f, str) and "/" not in f and f not in ("..", ".") for f in files):
                raise CheckpointError(f"checkpoint {path}: {index_name} has no valid weight_map")
            break
    else:
        files = ["model.safetensors"] if os.path.lexists(os.path.join(path, "model.safetensors")) else \
            ["pytorch_model.bin"]
    state: dict = {}
    for rel in files:
        _refuse_non_regular(path, rel)
        if rel.endswith(".safetensors"):
            state.update(_read_tensors(path, rel))
        else:  # transformers' old format: tensors only, through the restricted reader
            loaded = _torch_load(path, rel)
            if not isinstance(loaded, dict):
                raise CheckpointError(f"checkpoint {path}: {rel} does not hold a state dict")
            state.update(loaded)
    return state


def read_hf_model_state(path: Any, model: Any = None) -> dict:
    """The model weights of a transformers checkpoint (or any save_pretrained directory); for a PEFT ``model``, its
    adapter's tensors."""
    return _weights(os.path.abspath(os.fspath(path)), model)


def _hf_groups(model) -> list[list[tuple[str, torch.nn.Parameter]]]:
    """transformers.Trainer's optimizer groups: trainable parameters with weight decay, then those without."""
    from ..optim import named_parameter_groups

    try:
        from transformers import Trainer as HFTrainer

        decay = set(HFTrainer.get_decay_parameter_names(None, model))  # transformers' own rule (no self needed)
    except Exception:
        decay = None  # trainwright's rule, the same as transformers'
    return list(named_parameter_groups(model, decay))


def _place_optimizer_state(path: str, saved: dict, optimizer, model) -> tuple[dict, list[int]]:
    """``saved`` (transformers' optimizer.state_dict()) re-keyed by parameter onto ``optimizer``'s own layout;
    and for each of its groups, the index of the saved group its hyper-parameters come from."""
    if not isinstance(saved, dict) or not isinstance(saved.get("param_groups"), list) or \
            not isinstance(saved.get("state"), dict):
        raise CheckpointError(f"checkpoint {path}: {HF_OPTIMIZER} does not hold an optimizer state dict. "
                              + _choices(path, HF_OPTIMIZER))
    inner = _unwrap_optimizer(optimizer)
    ours = [p for g in inner.param_groups for p in g["params"]]
    our_index = {id(p): i for i, p in enumerate(ours)}
    saved_sizes = [len(g.get("params") or []) for g in saved["param_groups"]]

    def fits(layout) -> bool:
        sizes = [len(g) for g in layout]
        if [s for s in sizes if s] != [s for s in saved_sizes if s]:
            return False
        flat = [p for g in layout for _, p in g]
        for i, p in enumerate(flat):
            for v in (saved["state"].get(i) or {}).values():
                if isinstance(v, torch.Tensor) and v.dim() > 0 and tuple(v.shape) != tuple(p.shape):
                    return False
        return True

    named = dict((id(p), n) for n, p in model.named_parameters())
    candidates = [_hf_groups(model), [[(named.get(id(p), "?"), p) for p in g["params"]] for g in inner.param_groups]]
    layout = next((c for c in candidates if fits(c)), None)
    if layout is None:
        raise CheckpointError(
            f"checkpoint {path}: {HF_OPTIMIZER} holds parameter groups of {saved_sizes} parameters, which do not "
            f"match this model's trainable parameters as transformers groups them "
            f"({[len(g) for g in candidates[0]]}); its state cannot be put on the right parameters. "
            + _choices(path, HF_OPTIMIZER))
    saved_groups = [g for g in saved["param_groups"] if g.get("params")]
    layout = [g for g in layout if g]
    state, owner = {}, {}
    for group_no, (group, saved_group) in enumerate(zip(layout, saved_groups)):
        for (name, p), saved_id in zip(group, saved_group["params"]):
            if id(p) not in our_index:
                raise CheckpointError(f"checkpoint {path}: parameter {name} is in {HF_OPTIMIZER} but not in this "
                                      f"Trainer's optimizer. " + _choices(path, HF_OPTIMIZER))
            if saved_id in saved["state"]:
                state[our_index[id(p)]] = saved["state"][saved_id]
            owner[id(p)] = group_no
    groups, sources = [], []
    nonempty = [i for i, g in enumerate(saved["param_groups"]) if g.get("params")]
    for g in inner.param_groups:
        number = owner.get(id(g["params"][0]), 0) if g["params"] else 0
        source = saved_groups[number]
        sources.append(nonempty[number])
        merged = {k: v for k, v in source.items() if k != "params" and k not in _IMPLEMENTATION_KEYS}
        merged.update({k: g[k] for k in _IMPLEMENTATION_KEYS if k in g})
        for k, v in g.items():
            merged.setdefault(k, v)
        merged["params"] = [our_index[id(p)] for p in g["params"]]
        groups.append(merged)
    return {"state": state, "param_groups": groups}, sources


def _regroup_scheduler(state, sources: list[int], saved_groups: int):
    """The per-group lists of a scheduler state (base_lrs, _last_lr, lr_lambdas, ...) in the optimizer's groups."""
    if not isinstance(state, dict) or sources == list(range(saved_groups)):
        return state
    return {k: [v[i] for i in sources] if isinstance(v, list) and len(v) == saved_groups else v
            for k, v in state.items()}


def _rng_file(path: str, rank: int, world_size: int) -> str | None:
    names = ([f"rng_state_{rank}.pth"] if world_size > 1 else []) + ["rng_state.pth", f"rng_state_{rank}.pth"]
    return next((n for n in names if os.path.lexists(os.path.join(path, n))), None)


def _set_hf_rng_state(state: dict) -> None:
    import random

    import numpy as np

    if "python" in state:
        random.setstate(state["python"])
    if "numpy" in state:
        np.random.set_state(state["numpy"])
    if "cpu" in state:
        torch.random.set_rng_state(state["cpu"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available():
        if isinstance(cuda, torch.Tensor):
            torch.cuda.set_rng_state(cuda)
        elif len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


def load_hf_checkpoint(checkpoint_dir: Any, *, model: Any = None, optimizer: Any = None, lr_scheduler: Any = None,
                       scaler: Any = None,
                       restore_rng: bool = True, rank: int = 0, world_size: int = 1, param_model: Any = None) -> dict:
    """Verify and parse everything first, then restore into the objects given. Returns the same dict as
    ``checkpoint.load_checkpoint`` (``training_args`` and ``extra`` are empty: nothing pickled is read)."""
    from ..state import check_trainer_state

    path = os.path.abspath(os.fspath(checkpoint_dir))
    if not is_hf_checkpoint(path):
        raise CheckpointError(f"{path} is not a checkpoint written by transformers.Trainer")
    safe_fs.regular_files(path, refuse=lambda rel, kind: _refuse_non_regular(path, rel, kind))
    if os.path.lexists(os.path.join(path, HF_TRAINING_ARGS)):
        logger.warning("Resuming from %s, written by transformers.Trainer: %s skipped (a pickle of transformers' "
                       "TrainingArguments; trainwright never unpickles); this Trainer's arguments apply.",
                       path, HF_TRAINING_ARGS)
    # Phase 1: read and check everything.
    _refuse_non_regular(path, HF_TRAINER_STATE)
    trainer_state = _read_json(path, HF_TRAINER_STATE)
    check_trainer_state(trainer_state, os.path.join(path, HF_TRAINER_STATE))
    weights = _weights(path, model) if model is not None else None
    parsed = {}
    for key, obj, rel in (("optimizer", optimizer, HF_OPTIMIZER), ("lr_scheduler", lr_scheduler, HF_SCHEDULER),
                          ("scaler", scaler, HF_SCALER)):
        if obj is None:
            continue
        if not os.path.lexists(os.path.join(path, rel)):
            if key != "scaler":
                warnings.warn(f"checkpoint {path} has no {rel}; the {key} starts fresh", stacklevel=2)
            continue
        parsed[key] = _torch_load(path, rel)
    if "optimizer" in parsed:
        saved_groups = len(parsed["optimizer"].get("param_groups") or []) if isinstance(parsed["optimizer"], dict) \
            else 0
        parsed["optimizer"], sources = _place_optimizer_state(
            path, parsed["optimizer"], optimizer, _unwrap_model(param_model if param_model is not None else model))
        if "lr_scheduler" in parsed:
            parsed["lr_scheduler"] = _regroup_scheduler(parsed["lr_scheduler"], sources, saved_groups)
    rng = None
    if restore_rng:
        rel = _rng_file(path, rank, world_size)
        rng = _torch_load(path, rel) if rel else None
        if rng is not None and not isinstance(rng, dict):
            raise CheckpointError(f"checkpoint {path}: {rel} does not hold RNG states")
    # Phase 2: apply.
    if weights is not None:
        from .adapters import is_adapter_model

        _apply_model_state(model, weights, {}, strict=True, where=path, adapter=is_adapter_model(model))
    if "optimizer" in parsed:
        _apply(path, "optimizer", lambda: optimizer.load_state_dict(parsed["optimizer"]))
    if "lr_scheduler" in parsed:
        _apply(path, "lr_scheduler", lambda: lr_scheduler.load_state_dict(parsed["lr_scheduler"]))
    if "scaler" in parsed:
        _apply(path, "scaler", lambda: scaler.load_state_dict(parsed["scaler"]))
    if rng is not None:
        _apply(path, "rng_state", lambda: _set_hf_rng_state(rng))
    return {"trainer_state": trainer_state, "training_args": {}, "extra": {}, "path": path,
            "manifest": {"format": "transformers"}}

