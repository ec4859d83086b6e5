"""The checkpoint format: file names, the pickle-free encoding of state dicts (JSON with ``{"__tensor__": name}``
placeholders for safetensors entries; tuples, int-keyed dicts and numpy arrays tagged so they come back exactly), the
RNG states, the model's parameter signature and fingerprint, and small path helpers shared by the writer and the
reader.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import re
import sys
import warnings

import torch

from ..errors import CheckpointError
from . import safe_fs

MANIFEST_NAME = "trainwright_checkpoint.json"
PREFIX_CHECKPOINT_DIR = "checkpoint"
FORMAT_VERSION = 1

OPTIMIZER_STATE = "optimizer"
SCHEDULER_STATE = "scheduler"
SCALER_STATE = "scaler"
RNG_STATE = "rng_state"
TRAINER_STATE_NAME = "trainer_state.json"
TRAINING_ARGS_NAME = "training_args.json"
MODEL_WEIGHTS_NAME = "model.safetensors"
STATES_DIR = "trainwright_states"  # one <name>.json (+ <name>.safetensors) per stateful run component

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
_CHECKPOINT_RE = re.compile(rf"^{re.escape(PREFIX_CHECKPOINT_DIR)}-(\d+)$")
_TEMP_RE = re.compile(r"^\.(?P<final>.+)\.trainwright-(?P<kind>tmp|old|del)-(?P<host>\w*)-(?P<pid>\d+)-[0-9a-f]{8}$")


# --------------------------------------------------------------------------------------------------------------------
# Pickle-free encoding of state dicts
# --------------------------------------------------------------------------------------------------------------------

_SKIP = object()


def _encode(obj, tensors: dict | None, path: str, *, strict: bool, skipped: list | None = None):
    """Turn a state dict into JSON-able data. Tensors go into ``tensors`` under their dotted path.

    Tuples, int-keyed dicts and numpy arrays are tagged so that _decode restores them exactly. Values that cannot
    be represented raise (strict) or are dropped and listed in ``skipped`` (not strict).
    """
    np = sys.modules.get("numpy")
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, torch.Tensor) and tensors is not None:
        name = path.strip(".") or "tensor"
        while name in tensors:
            name += "_"
        tensors[name] = obj
        return {"__tensor__": name}
    if np is not None and isinstance(obj, np.generic):
        return obj.item()
    if np is not None and isinstance(obj, np.ndarray):
        return {"__ndarray__": obj.tolist(), "dtype": str(obj.dtype)}
    if isinstance(obj, torch.dtype):
        return {"__torch_dtype__": str(obj).removeprefix("torch.")}

    def sub(value, key):
        return _encode(value, tensors, f"{path}.{key}", strict=strict, skipped=skipped)

    if isinstance(obj, (list, tuple)):
        items = [sub(v, i) for i, v in enumerate(obj)]
        items = [None if v is _SKIP else v for v in items]
        return {"__tuple__": items} if isinstance(obj, tuple) else items
    if isinstance(obj, dict):
        encoded = {k: sub(v, k) for k, v in obj.items()}
        encoded = {k: v for k, v in encoded.items() if v is not _SKIP}
        if all(isinstance(k, str) for k in encoded):
            return encoded
        if all(isinstance(k, int) and not isinstance(k, bool) for k in encoded):
            return {"__int_keys__": {str(k): v for k, v in encoded.items()}}
        return {"__items__": [[sub(k, "key"), v] for k, v in encoded.items()]}
    where = path.strip(".") or "value"
    if strict:
        raise CheckpointError(f"cannot save {where} of type {type(obj).__name__} without pickle")
    if skipped is not None:
        skipped.append(where)
    return _SKIP


def _decode(obj, tensors: dict):
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if len(obj) == 1:
        (tag, value), = obj.items()
        if tag == "__tensor__":
            return tensors[value]
        if tag == "__tuple__":
            return tuple(_decode(v, tensors) for v in value)
        if tag == "__int_keys__":
            return {int(k): _decode(value[k], tensors) for k in sorted(value, key=int)}
        if tag == "__items__":
            return {_decode(k, tensors): _decode(v, tensors) for k, v in value}
        if tag == "__torch_dtype__":
            return getattr(torch, value)
    if set(obj) == {"__ndarray__", "dtype"}:
        import numpy as np

        return np.asarray(obj["__ndarray__"], dtype=obj["dtype"])
    return {k: _decode(v, tensors) for k, v in obj.items()}


def _json_default(obj):
    np = sys.modules.get("numpy")
    if np is not None and isinstance(obj, np.generic):
        return obj.item()
    if np is not None and isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, torch.Tensor) and obj.numel() == 1:
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def _lenient_json_default(obj):
    try:
        return _json_default(obj)
    except TypeError:
        return getattr(obj, "value", None) if hasattr(obj, "value") and hasattr(obj, "name") else str(obj)


def _dedupe_tensors(tensors: dict) -> tuple[dict, dict]:
    """safetensors refuses tensors sharing memory: keep one of identical views (alias), copy partial overlaps."""
    unique: dict = {}
    aliases: dict = {}
    seen: dict = {}  # storage ptr -> list of (name, tensor)
    for name, t in tensors.items():
        t = t.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        if t.numel() == 0:
            unique[name] = t.contiguous()
            continue
        key = t.untyped_storage().data_ptr()
        twin = next((n for n, o in seen.get(key, []) if _same_view(o, t)), None)
        if twin is not None:
            aliases[name] = twin
            continue
        if key in seen:  # overlaps another tensor's storage differently: store an independent copy
            unique[name] = t.clone().contiguous()
        else:
            unique[name] = t if t.is_contiguous() and t.storage_offset() == 0 and \
                t.untyped_storage().nbytes() == t.numel() * t.element_size() else t.clone().contiguous()
        seen.setdefault(key, []).append((name, t))
    return unique, aliases


def _same_view(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (a.dtype == b.dtype and a.shape == b.shape and a.stride() == b.stride()
            and a.storage_offset() == b.storage_offset())


# --------------------------------------------------------------------------------------------------------------------
# RNG
# --------------------------------------------------------------------------------------------------------------------


def _get_rng_state() -> dict:
    state: dict = {"python": random.getstate(), "cpu": torch.get_rng_state()}
    try:
        import numpy as np

        state["numpy"] = np.random.get_state()
    except ImportError:
        pass
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        state["mps"] = torch.mps.get_rng_state()
    return state


def _set_rng_state(state: dict) -> None:
    if "python" in state:
        random.setstate(state["python"])
    if "numpy" in state:
        import numpy as np

        np.random.set_state(state["numpy"])
    if "cpu" in state:
        torch.set_rng_state(state["cpu"])
    if state.get("cuda") and torch.cuda.is_available():
        if len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])
        else:
            warnings.warn(
                f"the checkpoint has RNG states for {len(state['cuda'])} CUDA devices but "
                f"{torch.cuda.device_count()} are visible; CUDA RNG not restored", stacklevel=4
            )
    mps = getattr(torch.backends, "mps", None)
    if "mps" in state and mps is not None and mps.is_available():
        torch.mps.set_rng_state(state["mps"])


# --------------------------------------------------------------------------------------------------------------------
# The model's signature and small helpers
# --------------------------------------------------------------------------------------------------------------------


def _unwrap_model(model):
    """Strip torch.compile, (Distributed)DataParallel and other ``.module`` wrappers."""
    from ..distributed import unwrap_model

    return unwrap_model(model, any_module_wrapper=True)


def _unwrap_optimizer(optimizer):
    inner = getattr(optimizer, "optimizer", None)  # accelerate's AcceleratedOptimizer and similar wrappers
    return inner if isinstance(inner, torch.optim.Optimizer) else optimizer


def _param_signature(model) -> dict[str, list]:
    m = _unwrap_model(model)
    return {n: [list(p.shape), str(p.dtype).removeprefix("torch.")]
            for n, p in m.named_parameters(remove_duplicate=False)}


def _fingerprint(signature: dict) -> str:
    text = json.dumps(sorted(signature.items()), separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _signature_diff(saved: dict, current: dict) -> str:
    parts = []
    only_saved = [n for n in saved if n not in current]
    only_model = [n for n in current if n not in saved]
    changed = [f"{n} {_fmt(saved[n])} in the checkpoint vs {_fmt(current[n])} in the model"
               for n in saved if n in current and list(saved[n]) != list(current[n])]
    if changed:
        parts.append("different " + _few(changed))
    if only_saved:
        parts.append("only in the checkpoint: " + _few(only_saved))
    if only_model:
        parts.append("only in the model: " + _few(only_model))
    return "; ".join(parts) or "parameter fingerprint differs"


def _fmt(sig) -> str:
    shape, dtype = sig
    return f"{tuple(shape)} {dtype}"


def _few(items, n: int = 5) -> str:
    items = list(items)
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def _describe(e: BaseException) -> str:
    if isinstance(e, OSError) and e.errno is not None:
        name = errno.errorcode.get(e.errno, str(e.errno))
        where = f" ({e.filename})" if e.filename else ""
        return f"[{name}] {e.strerror}{where}"
    return f"{type(e).__name__}: {e}"


def _walk_files(root: str, skip_dirs: bool = False) -> list[str]:
    """Relative paths of every file under root; skip_dirs leaves out nested checkpoint-N and temp dirs."""
    out = []
    for d, subdirs, names in os.walk(root):
        if skip_dirs:
            subdirs[:] = [s for s in subdirs if not (_CHECKPOINT_RE.match(s) or _TEMP_RE.match(s))]
        for name in names:
            out.append(os.path.relpath(os.path.join(d, name), root).replace(os.sep, "/"))
    return out


def _exists(path: str, rel: str) -> bool:
    return os.path.isfile(os.path.join(path, rel))


def _safe_rel(rel: str) -> bool:
    return not os.path.isabs(rel) and ".." not in rel.replace("\\", "/").split("/")


def _sha256(full: str) -> str:
    h = hashlib.sha256()
    with safe_fs.open_regular(full) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _step_of(path) -> int:
    m = _CHECKPOINT_RE.match(os.path.basename(os.path.normpath(os.fspath(path))))
    return int(m.group(1)) if m else -1
