"""Reading a checkpoint safely: the directory is first scanned for anything that could carry a pickle (by name
and by content) or that is not a regular file, and refused if found; then every file is checked against the manifest
(size and sha256), the model fingerprint is compared, every file is parsed, and only then is anything applied.
"""
from __future__ import annotations

import json
import os
import warnings
import zipfile

from ..errors import CheckpointError, CorruptCheckpointError
from . import safe_fs
from .format import (
    _CHECKPOINT_RE,
    _TEMP_RE,
    FORMAT_VERSION,
    MANIFEST_NAME,
    MODEL_WEIGHTS_NAME,
    PICKLE_SUFFIXES,
    _decode,
    _exists,
    _few,
    _fingerprint,
    _param_signature,
    _safe_rel,
    _sha256,
    _signature_diff,
    _unwrap_model,
)


def _verify(path: str, model, *, strict_model: bool) -> dict:
    if not os.path.isdir(path):
        raise CheckpointError(f"checkpoint {path} does not exist")
    _refuse_pickles(path)
    manifest = _read_manifest(path, check_sizes=True)
    for entry in manifest["files"]:
        full = os.path.join(path, entry["path"])
        if _sha256(full) != entry["sha256"]:
            raise CorruptCheckpointError(
                f"checkpoint {path} is corrupt: {entry['path']} does not match its sha256 in {MANIFEST_NAME}; "
                "use an earlier checkpoint"
            )
    if model is not None:
        signature = _param_signature(model)
        if _fingerprint(signature) != manifest.get("model_fingerprint"):
            diff = _signature_diff(manifest.get("model_parameters") or {}, signature)
            msg = (f"checkpoint {path} is from a different model: {diff}. Build the same architecture "
                   "(config) the checkpoint was saved from")
            if strict_model:
                raise CheckpointError(msg)
            warnings.warn(msg, stacklevel=3)
    return manifest


def _read_manifest(path: str, *, check_sizes: bool) -> dict:
    if not os.path.isdir(path):
        raise CheckpointError(f"{path} does not exist or is not a directory")
    full = os.path.join(path, MANIFEST_NAME)
    if not os.path.lexists(full):
        raise CorruptCheckpointError(
            f"checkpoint {path} is incomplete: no manifest, the write was interrupted; use an earlier checkpoint"
        )
    _refuse_non_regular(path, MANIFEST_NAME)
    try:
        with safe_fs.open_regular(full) as f:
            manifest = json.loads(f.read().decode("utf-8"))
    except (OSError, ValueError) as e:
        raise CorruptCheckpointError(f"checkpoint {path} is corrupt: its manifest cannot be read ({e})") from e
    if not isinstance(manifest, dict) or manifest.get("format") != "trainwright-checkpoint" or not isinstance(
        manifest.get("files"), list
    ):
        raise CorruptCheckpointError(f"checkpoint {path} is corrupt: {MANIFEST_NAME} is not a trainwright manifest")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {manifest.get('format_version')}, newer than this trainwright "
            f"reads ({FORMAT_VERSION}); upgrade trainwright"
        )
    for entry in manifest["files"]:
        rel = entry.get("path") if isinstance(entry, dict) else None
        if not isinstance(rel, str) or not _safe_rel(rel):
            raise CorruptCheckpointError(f"checkpoint {path} is corrupt: bad file entry {entry!r} in {MANIFEST_NAME}")
        if not check_sizes:
            continue
        full = os.path.join(path, rel)
        if not os.path.lexists(full):
            raise CorruptCheckpointError(f"checkpoint {path} is corrupt: {rel} is missing; use an earlier checkpoint")
        _refuse_non_regular(path, rel)
        size = os.path.getsize(full)
        if size != entry.get("size"):
            raise CorruptCheckpointError(
                f"checkpoint {path} is corrupt: {rel} has {size} bytes, the manifest says {entry.get('size')}; "
                "use an earlier checkpoint"
            )
    return manifest


def _refuse_non_regular(path: str, rel: str, kind: str | None = None) -> None:
    """A FIFO, socket or device in a checkpoint is refused by name, never opened (reading it would block or never
    end)."""
    kind = kind or safe_fs.non_regular(os.path.join(path, rel))
    if kind is not None:
        raise CheckpointError(
            f"checkpoint {path}: {rel} is {kind}, not a regular file; a checkpoint holds regular files only and "
            f"trainwright does not open anything else. Remove {os.path.join(path, rel)} (or resume from another "
            "checkpoint)"
        )


def _refuse_pickles(path: str) -> None:
    """Refuse a directory holding anything that could carry a pickle, or anything that is not a regular file.
    Never unpickles anything, and opens regular files only."""
    def skip(name):
        return bool(_CHECKPOINT_RE.match(name) or _TEMP_RE.match(name))

    def refuse(rel, kind):
        _refuse_non_regular(path, rel, kind)

    for rel in safe_fs.regular_files(path, skip_dir=skip, refuse=refuse):
        reason = _pickle_reason(os.path.join(path, rel))
        if reason:
            raise CheckpointError(
                f"checkpoint {path}: {rel} {reason}; trainwright refuses to unpickle anything (pickles can run "
                "arbitrary code). Re-save the weights as safetensors, or remove the file if it is not needed"
            )


def _pickle_reason(full: str) -> str | None:
    if full.lower().endswith(PICKLE_SUFFIXES):
        return "has a pickle file extension"
    try:
        with safe_fs.open_regular(full) as f:
            head = f.read(4)
    except OSError:
        return None
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "is a pickle (starts with a pickle protocol header)"
    if head == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(full) as z:
                if any(n.endswith(".pkl") for n in z.namelist()):
                    return "is a torch.save zip archive containing a pickle"
        except (zipfile.BadZipFile, OSError, ValueError):
            return None
    return None


def _read_json(path: str, rel: str):
    try:
        with safe_fs.open_regular(os.path.join(path, rel)) as f:
            return json.loads(f.read().decode("utf-8"))
    except (OSError, ValueError) as e:
        raise CorruptCheckpointError(f"checkpoint {path}: {rel} is not valid JSON ({e})") from e


def _read_tensors(path: str, rel: str) -> dict:
    from safetensors.torch import load_file

    try:
        return load_file(os.path.join(path, rel), device="cpu")
    except Exception as e:  # safetensors raises its own error types for bad headers
        raise CorruptCheckpointError(f"checkpoint {path}: {rel} is not a valid safetensors file ({e})") from e


def _read_state_dict(path: str, stem: str) -> dict:
    doc = _read_json(path, stem + ".json")
    tensors = _read_tensors(path, stem + ".safetensors") if _exists(path, stem + ".safetensors") else {}
    if not isinstance(doc, dict) or "state_dict" not in doc:
        raise CorruptCheckpointError(f"checkpoint {path}: {stem}.json has no state_dict")
    try:
        doc["state_dict"] = _decode(doc["state_dict"], tensors)
    except (KeyError, TypeError, ValueError) as e:
        raise CorruptCheckpointError(f"checkpoint {path}: {stem}.json does not match {stem}.safetensors ({e})") from e
    return doc


def _read_model_state(path: str, manifest: dict) -> tuple[dict, dict]:
    info = manifest.get("model") or {}
    if info.get("format") == "peft":  # an adapter: its files name the tensors peft's way (adapters.py)
        from .adapters import read_adapter_state

        return read_adapter_state(path, info, _read_tensors)
    files = info.get("weight_files") or []
    if not files:
        raise CheckpointError(f"checkpoint {path} has no model weights (safetensors)")
    state: dict = {}
    for rel in files:
        state.update(_read_tensors(path, rel))
    return state, dict(info.get("aliases") or {})


def _find_weight_files(path: str) -> list[str]:
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.isfile(index):
        return sorted(set(_read_json(path, "model.safetensors.index.json").get("weight_map", {}).values()))
    if _exists(path, MODEL_WEIGHTS_NAME):
        return [MODEL_WEIGHTS_NAME]
    raise CheckpointError(f"{path} has no model.safetensors (or safetensors shards with an index)")


def _apply_model_state(model, state: dict, aliases: dict, *, strict: bool, where: str,
                       adapter: bool = False) -> None:
    """Loads ``state`` into ``model``; with ``adapter`` (a PEFT adapter's tensors) the frozen base is the model's own
    and only the trainable parameters must all be given."""
    m = _unwrap_model(model)
    for alias, canonical in aliases.items():
        if canonical in state:
            state[alias] = state[canonical]
    problems, mismatched = [], []
    if not strict:  # partial load: skip tensors whose shape differs instead of failing
        own = m.state_dict()
        mismatched = [k for k, t in state.items() if k in own and own[k].shape != t.shape]
        state = {k: t for k, t in state.items() if k not in mismatched}
        if mismatched:
            problems.append(f"skipped weights of another shape {_few(mismatched)}")
    try:
        result = m.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {where} does not fit the model: {e}") from e
    missing = [k for k in result.missing_keys if k not in mismatched]
    if adapter:
        from .adapters import trainable_names

        trainable = set(trainable_names(m))
        missing = [k for k in missing if k in trainable]
    missing = _untied_missing(m, state, missing)
    if missing and callable(getattr(m, "tie_weights", None)):
        m.tie_weights()  # weights that save_pretrained dropped because they are tied
        missing = _untied_missing(m, state, missing)
    if missing:
        problems.append(f"missing weights {_few(missing)}")
    if result.unexpected_keys:
        problems.append(f"unexpected weights {_few(result.unexpected_keys)}")
    if problems:
        msg = f"checkpoint {where} does not fit the model: {'; '.join(problems)}"
        if strict:
            raise CheckpointError(msg)
        warnings.warn(msg, stacklevel=3)


def _untied_missing(m, state: dict, missing: list[str]) -> list[str]:
    """Missing keys whose tensor is not shared with a tensor that was loaded (tied weights are fine)."""
    own = m.state_dict(keep_vars=True)
    loaded = {own[k].data_ptr() for k in state if k in own and own[k].numel() > 0}
    ignore = set(getattr(m, "_keys_to_ignore_on_save", None) or ())
    return [k for k in missing if k not in ignore and not (own[k].numel() > 0 and own[k].data_ptr() in loaded)]


def _apply(path: str, what: str, fn) -> None:
    try:
        fn()
    except CheckpointError:
        raise
    except Exception as e:
        raise CheckpointError(f"checkpoint {path}: the saved {what} state does not fit the {what} given ({e})") from e
