"""Crash-safe, pickle-free checkpoints.

Nothing is ever pickled: tensors go to safetensors files, everything else to JSON.

Writing: every file goes into a temporary sibling directory (``.checkpoint-N.trainwright-tmp-<host>-<pid>-<rand>``),
each file is fsynced, then the completion manifest (``trainwright_checkpoint.json``: every file with its size and
sha256, plus a fingerprint of the model's parameters) is written LAST, the directory is fsynced and atomically
renamed into place. A directory without a valid manifest is never used to resume.

Reading: the directory is first scanned for anything that could carry a pickle (by name and by content) and refused
if found; then every file is checked against the manifest, the model fingerprint is compared, every file is parsed,
and only then is anything loaded into the model, optimizer, scheduler, scaler and RNGs.

Layout of ``checkpoint-N/``::

    model.safetensors (or shards + index), config.json   model (save_pretrained, or state_dict for plain modules)
    tokenizer files                                      processing_class.save_pretrained
    optimizer.safetensors + optimizer.json               optimizer state tensors / param_groups and the rest
    scheduler.json (+ scheduler.safetensors)             lr_scheduler.state_dict()
    scaler.json                                          GradScaler.state_dict()
    rng_state.json + rng_state.safetensors               python, numpy, torch CPU/CUDA/MPS generators
    trainer_state.json, training_args.json               dicts given by the Trainer
    trainwright_checkpoint.json                          the completion manifest, written last
"""
from __future__ import annotations

import contextlib
import datetime
import errno
import hashlib
import json
import os
import random
import re
import socket
import sys
import time
import uuid
import warnings
import zipfile

import torch

from . import safe_fs
from .errors import CheckpointError, CorruptCheckpointError

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

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
_CHECKPOINT_RE = re.compile(rf"^{re.escape(PREFIX_CHECKPOINT_DIR)}-(\d+)$")
_TEMP_RE = re.compile(r"^\.(?P<final>.+)\.trainwright-(?P<kind>tmp|old|del)-(?P<host>\w*)-(?P<pid>\d+)-[0-9a-f]{8}$")
_FOREIGN_STALE_SECONDS = 24 * 3600  # a temp dir of another host is considered abandoned after this long
_SLOW_ENV = "TRAINWRIGHT_TEST_SLOW_CHECKPOINT_SECONDS"
_FAIL_ENV = "TRAINWRIGHT_TEST_FAIL_CHECKPOINT_WRITE"


# --------------------------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------------------------


def save_checkpoint(
    checkpoint_dir,
    *,
    model,
    optimizer=None,
    lr_scheduler=None,
    scaler=None,
    trainer_state: dict | None = None,
    training_args: dict | None = None,
    processing_class=None,
    save_only_model: bool = False,
    rng_state: bool = True,
    extra: dict | None = None,
) -> str:
    """Write a complete checkpoint atomically to ``checkpoint_dir`` and return its path.

    On any failure the temporary directory is removed, an existing checkpoint at the same path is left intact, and
    a CheckpointError naming the directory and the underlying error is raised (chained).
    """
    final = os.path.abspath(os.fspath(checkpoint_dir))
    parent = os.path.dirname(final)
    tmp = None
    try:
        os.makedirs(parent, exist_ok=True)
        tmp = os.path.join(parent, _temp_name(os.path.basename(final), "tmp"))
        os.mkdir(tmp)
        w = _Writer(tmp)
        model_info = _save_model(w, model, checkpoint=True)
        if processing_class is not None and hasattr(processing_class, "save_pretrained"):
            w.run_external(lambda: processing_class.save_pretrained(tmp))
        components = {}
        if not save_only_model:
            if optimizer is not None:
                _save_optimizer(w, optimizer)
                components["optimizer"] = type(_unwrap_optimizer(optimizer)).__name__
            if lr_scheduler is not None:
                _save_state_dict(w, SCHEDULER_STATE, lr_scheduler.state_dict(), strict=False,
                                 cls=type(lr_scheduler).__name__)
                components["lr_scheduler"] = type(lr_scheduler).__name__
            if scaler is not None:
                _save_state_dict(w, SCALER_STATE, scaler.state_dict(), strict=True, cls=type(scaler).__name__)
                components["scaler"] = type(scaler).__name__
            if rng_state:
                _save_state_dict(w, RNG_STATE, _get_rng_state(), strict=True, cls="rng", always_tensors=True)
                components["rng_state"] = True
        if trainer_state is not None:
            w.write_json(TRAINER_STATE_NAME, trainer_state)
        if training_args is not None:
            w.write_json(TRAINING_ARGS_NAME, training_args, default=_lenient_json_default)
        manifest = {
            "kind": "checkpoint",
            "save_only_model": bool(save_only_model),
            "components": components,
            "global_step": (trainer_state or {}).get("global_step"),
            "extra": _encode(extra or {}, None, "extra", strict=True),
        }
        _finish(w, model, model_info, manifest)
        _publish(tmp, final)
        return final
    except BaseException as e:
        if tmp is not None:
            safe_fs.remove_tree(tmp)
        if not isinstance(e, Exception):
            raise
        hint = ""
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            hint = "; free disk space or lower save_total_limit"
        raise CheckpointError(
            f"could not write checkpoint {final}: {_describe(e)}{hint}. "
            "Nothing was written there; any earlier checkpoint is intact."
        ) from e


def load_checkpoint(
    checkpoint_dir,
    *,
    model=None,
    optimizer=None,
    lr_scheduler=None,
    scaler=None,
    restore_rng: bool = True,
    strict_model: bool = True,
) -> dict:
    """Verify ``checkpoint_dir`` completely, then restore into the objects given.

    Returns ``{"trainer_state": dict, "training_args": dict, "extra": dict, "path": str, "manifest": dict}``
    (empty dicts for parts that were not saved).
    """
    path = os.path.abspath(os.fspath(checkpoint_dir))
    manifest = _verify(path, model, strict_model=strict_model)
    # Phase 1: read and parse everything; nothing is modified if any of it fails.
    model_state = _read_model_state(path, manifest) if model is not None else None
    parsed = {}
    wanted = {"optimizer": (optimizer, OPTIMIZER_STATE), "lr_scheduler": (lr_scheduler, SCHEDULER_STATE),
              "scaler": (scaler, SCALER_STATE), "rng_state": (restore_rng or None, RNG_STATE)}
    for key, (obj, stem) in wanted.items():
        if obj is None:
            continue
        if not os.path.isfile(os.path.join(path, stem + ".json")):
            if manifest.get("save_only_model") and key != "rng_state":
                raise CheckpointError(
                    f"checkpoint {path} was saved with save_only_model=True and has no {key} state; "
                    "resume from a full checkpoint or start a new run from these weights"
                )
            if key != "rng_state":  # saved with rng_state=False: nothing to restore, nothing to warn about
                warnings.warn(f"checkpoint {path} has no {key} state; the {key} starts fresh", stacklevel=2)
            continue
        parsed[key] = _read_state_dict(path, stem)
    if "optimizer" in parsed:
        saved_cls, given_cls = parsed["optimizer"]["class"], type(_unwrap_optimizer(optimizer)).__name__
        if saved_cls != given_cls:
            raise CheckpointError(
                f"checkpoint {path} holds {saved_cls} state but the optimizer is {given_cls}; "
                "use the same optimizer to resume"
            )
    trainer_state = _read_json(path, TRAINER_STATE_NAME) if _exists(path, TRAINER_STATE_NAME) else {}
    if trainer_state:
        from .state import check_trainer_state

        check_trainer_state(trainer_state, os.path.join(path, TRAINER_STATE_NAME))
    training_args = _read_json(path, TRAINING_ARGS_NAME) if _exists(path, TRAINING_ARGS_NAME) else {}
    extra = _decode(manifest.get("extra") or {}, {})
    # Phase 2: apply.
    if model is not None:
        _apply_model_state(model, *model_state, strict=strict_model, where=path)
    if "optimizer" in parsed:
        _apply(path, "optimizer", lambda: optimizer.load_state_dict(parsed["optimizer"]["state_dict"]))
    if "lr_scheduler" in parsed:
        _apply(path, "lr_scheduler", lambda: lr_scheduler.load_state_dict(parsed["lr_scheduler"]["state_dict"]))
    if "scaler" in parsed:
        _apply(path, "scaler", lambda: scaler.load_state_dict(parsed["scaler"]["state_dict"]))
    if "rng_state" in parsed:
        _apply(path, "rng_state", lambda: _set_rng_state(parsed["rng_state"]["state_dict"]))
    return {"trainer_state": trainer_state, "training_args": training_args, "extra": extra, "path": path,
            "manifest": manifest}


def checkpoint_status(path) -> tuple[bool, str]:
    """(True, "") if ``path`` holds a valid manifest and every file it lists exists with the listed size.

    Cheap: hashes are checked by load_checkpoint, not here.
    """
    try:
        _read_manifest(os.fspath(path), check_sizes=True)
    except CheckpointError as e:
        return False, str(e)
    return True, ""


def list_checkpoints(output_dir) -> list[str]:
    """Every ``checkpoint-<N>`` directory in ``output_dir`` (complete or not), sorted by N; temp dirs are ignored."""
    output_dir = os.fspath(output_dir)
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        m = _CHECKPOINT_RE.match(name)
        if m and os.path.isdir(os.path.join(output_dir, name)):
            found.append((int(m.group(1)), os.path.join(output_dir, name)))
    return [p for _, p in sorted(found)]


def latest_checkpoint(output_dir, before=None) -> str | None:
    """The newest complete checkpoint in ``output_dir`` (older than the checkpoint ``before`` when given); each
    newer incomplete one is skipped with a warning. A checkpoint written by transformers.Trainer (it has no
    manifest to check) counts as complete, as transformers' own resume takes the newest one."""
    from .hf_checkpoint import is_hf_checkpoint

    limit = _step_of(before) if before is not None else None
    for path in reversed(list_checkpoints(output_dir)):
        if limit is not None and _step_of(path) >= limit:
            continue
        ok, reason = checkpoint_status(path)
        if ok or is_hf_checkpoint(path):
            return path
        warnings.warn(f"{reason} (skipped; falling back to an earlier checkpoint)", stacklevel=2)
    return None


def _step_of(path) -> int:
    m = _CHECKPOINT_RE.match(os.path.basename(os.path.normpath(os.fspath(path))))
    return int(m.group(1)) if m else -1


def rotate_checkpoints(output_dir, save_total_limit, best_model_checkpoint=None) -> list[str]:
    """Delete the oldest complete checkpoints beyond ``save_total_limit``; return the deleted paths.

    The newest and the best checkpoint are always kept (with a limit of 1 and a best that is not the newest, both
    stay, like transformers.Trainer). Incomplete ``checkpoint-N`` dirs are neither counted nor deleted. Temp dirs
    of a write in progress are kept; temp dirs left by a dead process are removed (and a complete checkpoint that
    was set aside while being replaced is put back if its replacement never arrived).
    """
    output_dir = os.fspath(output_dir)
    deleted = _clean_stale_temp_dirs(output_dir)
    if not save_total_limit or save_total_limit <= 0:
        return deleted
    complete = [p for p in list_checkpoints(output_dir) if checkpoint_status(p)[0]]
    best = os.path.realpath(best_model_checkpoint) if best_model_checkpoint else None
    real = [os.path.realpath(p) for p in complete]
    limit = save_total_limit
    if best in real and real.index(best) < len(real) - 1:
        # like transformers.Trainer: move the best just before the newest so it is among the last deleted
        complete.insert(len(complete) - 1, complete.pop(real.index(best)))
        if save_total_limit == 1:
            limit = 2
    for path in complete[: max(0, len(complete) - limit)]:
        _remove_dir(path)
        deleted.append(path)
    return deleted


def save_model_dir(output_dir, model, processing_class=None) -> str:
    """Write the final model (+ tokenizer) to ``output_dir`` so that ``from_pretrained`` can load it.

    If ``output_dir`` does not exist or is empty, it is written as a temp sibling and renamed into place. Otherwise
    (e.g. it already holds checkpoints) the files are staged in a temp dir inside it, the old manifest is removed,
    the files are renamed in one by one, and the new manifest is written last. Returns the path.
    """
    final = os.path.abspath(os.fspath(output_dir))
    parent = os.path.dirname(final)
    in_place = os.path.isdir(final) and bool(os.listdir(final))
    tmp = None
    try:
        os.makedirs(final if in_place else parent, exist_ok=True)
        stage_parent = final if in_place else parent
        tmp = os.path.join(stage_parent, _temp_name("model" if in_place else os.path.basename(final), "tmp"))
        os.mkdir(tmp)
        w = _Writer(tmp)
        model_info = _save_model(w, model, checkpoint=False)
        if processing_class is not None and hasattr(processing_class, "save_pretrained"):
            w.run_external(lambda: processing_class.save_pretrained(tmp))
        if not in_place:
            _finish(w, model, model_info, {"kind": "model"})
            _publish(tmp, final)
            return final
        manifest = _finish(w, model, model_info, {"kind": "model"}, write=False)
        _move_files_in(tmp, final, manifest)
        return final
    except BaseException as e:
        if tmp is not None:
            safe_fs.remove_tree(tmp)
        if not isinstance(e, Exception):
            raise
        raise CheckpointError(f"could not save the model to {final}: {_describe(e)}") from e


def load_model_weights(path, model) -> None:
    """Load model weights from a checkpoint dir or a model dir (save_model_dir / save_pretrained output)."""
    from .hf_checkpoint import is_hf_checkpoint, read_hf_model_state

    path = os.path.abspath(os.fspath(path))
    if is_hf_checkpoint(path):  # transformers.Trainer's checkpoint: its safetensors weights, nothing else is read
        safe_fs.regular_files(path, refuse=lambda rel, kind: _refuse_non_regular(path, rel, kind))
        state = (read_hf_model_state(path), {})
    elif _exists(path, MANIFEST_NAME) or _CHECKPOINT_RE.match(os.path.basename(path)):
        manifest = _verify(path, model, strict_model=True)
        state = _read_model_state(path, manifest)
    else:  # a model directory written by something else: no integrity check possible, but still no pickles.
        if not os.path.isdir(path):
            raise CheckpointError(f"model directory {path} does not exist")
        _refuse_pickles(path)
        warnings.warn(f"{path} has no {MANIFEST_NAME}; loading its safetensors weights unverified", stacklevel=2)
        state = _read_model_state(path, {"model": {"weight_files": _find_weight_files(path), "aliases": {}}})
    _apply_model_state(model, *state, strict=True, where=path)


# --------------------------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------------------------


class _Writer:
    """Writes files into the temp dir, fsyncs each, and applies the test hooks (read at call time)."""

    def __init__(self, root: str):
        self.root = root
        self.count = 0
        self.slow = float(os.environ.get(_SLOW_ENV) or 0)
        self.fail = (os.environ.get(_FAIL_ENV) or "").strip().upper()

    def wrote(self, rel: str, *, last: bool = False) -> None:
        full = os.path.join(self.root, rel)
        _fsync_file(full)
        self.count += 1
        if self.fail and (self.count >= 2 or last):
            code = getattr(errno, self.fail, None)
            if isinstance(code, int):
                raise OSError(code, f"{os.strerror(code)} (simulated by {_FAIL_ENV})", full)
        if self.slow > 0:
            time.sleep(self.slow)

    def run_external(self, fn) -> list[str]:
        """Run a save_pretrained-like callable that writes into root; register the new files."""
        before = set(_walk_files(self.root))
        with _quiet_hf_progress():
            fn()
        new = sorted(set(_walk_files(self.root)) - before)
        for rel in new:
            self.wrote(rel)
        return new

    def write_bytes(self, rel: str, data: bytes, *, last: bool = False) -> None:
        with open(os.path.join(self.root, rel), "wb") as f:
            f.write(data)
        self.wrote(rel, last=last)

    def write_json(self, rel: str, obj, *, default=None, last: bool = False) -> None:
        text = json.dumps(obj, indent=2, sort_keys=True, default=default or _json_default) + "\n"
        self.write_bytes(rel, text.encode("utf-8"), last=last)

    def write_tensors(self, rel: str, tensors: dict, metadata: dict | None = None) -> dict[str, str]:
        from safetensors.torch import save_file

        unique, aliases = _dedupe_tensors(tensors)
        save_file(unique, os.path.join(self.root, rel), metadata=metadata or {"format": "pt"})
        self.wrote(rel)
        return aliases


def _save_model(w: _Writer, model, *, checkpoint: bool) -> dict:
    m = _unwrap_model(model)
    if callable(getattr(m, "save_pretrained", None)):
        kwargs = {"safe_serialization": True}
        # transformers >= 5 may rename weights back to an "original" layout on save; checkpoints keep the
        # state_dict names so that resuming maps every tensor 1:1.
        if checkpoint and _accepts(m.save_pretrained, "save_original_format"):
            kwargs["save_original_format"] = False
        new = w.run_external(lambda: m.save_pretrained(w.root, **kwargs))
        pickled = [f for f in new if _pickle_reason(os.path.join(w.root, f))]
        weights = [f for f in new if f.endswith(".safetensors")]
        if not pickled and weights:
            return {"format": "save_pretrained", "class": type(m).__name__, "weight_files": weights, "aliases": {}}
        warnings.warn(f"{type(m).__name__}.save_pretrained wrote {pickled or 'no safetensors'}; "
                      "saving the state_dict as model.safetensors instead", stacklevel=3)
        for f in pickled + weights:
            os.remove(os.path.join(w.root, f))
    aliases = w.write_tensors(MODEL_WEIGHTS_NAME, m.state_dict())
    return {"format": "state_dict", "class": type(m).__name__, "weight_files": [MODEL_WEIGHTS_NAME],
            "aliases": aliases}


def _save_optimizer(w: _Writer, optimizer) -> None:
    tensors: dict = {}
    encoded = _encode(optimizer.state_dict(), tensors, "", strict=True)
    w.write_tensors(OPTIMIZER_STATE + ".safetensors", tensors)
    w.write_json(OPTIMIZER_STATE + ".json", {"class": type(_unwrap_optimizer(optimizer)).__name__,
                                             "state_dict": encoded, "skipped": []})


def _save_state_dict(w: _Writer, stem: str, state: dict, *, strict: bool, cls: str, always_tensors=False) -> None:
    tensors: dict = {}
    skipped: list = []
    encoded = _encode(state, tensors, "", strict=strict, skipped=skipped)
    if tensors or always_tensors:
        w.write_tensors(stem + ".safetensors", tensors)
    w.write_json(stem + ".json", {"class": cls, "state_dict": encoded, "skipped": skipped})


def _finish(w: _Writer, model, model_info: dict, manifest: dict, *, write: bool = True) -> dict:
    """fsync the tree, then write the manifest last (unless write=False: returned for the caller to place)."""
    for d, _, _ in os.walk(w.root, topdown=False):
        _fsync_dir(d)
    signature = _param_signature(model)
    files = []
    for rel in sorted(_walk_files(w.root)):
        full = os.path.join(w.root, rel)
        files.append({"path": rel, "size": os.path.getsize(full), "sha256": _sha256(full)})
    now = time.time()
    manifest = {
        "format": "trainwright-checkpoint",
        "format_version": FORMAT_VERSION,
        "created": datetime.datetime.fromtimestamp(now, datetime.timezone.utc).isoformat(),
        "created_unix": now,
        "torch_version": torch.__version__,
        "model": model_info,
        "model_fingerprint": _fingerprint(signature),
        "model_parameters": signature,
        **manifest,
        "files": files,
    }
    if write:
        w.write_json(MANIFEST_NAME, manifest, last=True)
        _fsync_dir(w.root)
    return manifest


def _publish(tmp: str, final: str) -> None:
    """Atomically rename tmp to final; an existing final is set aside first and deleted once replaced."""
    parent = os.path.dirname(final)
    if os.path.lexists(final):
        old = os.path.join(parent, _temp_name(os.path.basename(final), "old"))
        os.rename(final, old)
        try:
            os.rename(tmp, final)
        except BaseException:
            os.rename(old, final)
            raise
        _fsync_dir(parent)
        safe_fs.remove_tree(old)
    else:
        os.rename(tmp, final)
        _fsync_dir(parent)


def _move_files_in(tmp: str, final: str, manifest: dict) -> None:
    """save_model_dir into a non-empty dir: drop the old manifest, move files in, write the manifest last."""
    old_files = []
    if _exists(final, MANIFEST_NAME):
        try:
            old_files = [f["path"] for f in _read_json(final, MANIFEST_NAME).get("files", [])]
        except CheckpointError:
            pass
        os.remove(os.path.join(final, MANIFEST_NAME))
        _fsync_dir(final)
    new_files = [f["path"] for f in manifest["files"]]
    for rel in new_files:
        os.replace(os.path.join(tmp, rel), _real_dir_path(final, rel))
    for rel in sorted(set(old_files) - set(new_files)):  # e.g. shards of a bigger previous save
        # only inside final, never through a symlink (an old manifest may name "link/file" with link -> elsewhere)
        safe_fs.remove_in(final, rel)
    _fsync_dir(final)
    w = _Writer(tmp)
    w.write_json(MANIFEST_NAME, manifest, last=True)
    os.replace(os.path.join(tmp, MANIFEST_NAME), os.path.join(final, MANIFEST_NAME))
    _fsync_dir(final)
    safe_fs.remove_tree(tmp)


def _real_dir_path(root: str, rel: str) -> str:
    """root/rel with every parent directory a real directory inside root: a symlink (or file) standing where a
    parent directory goes is removed (the link itself, never its target) and replaced by a directory."""
    parts = [p for p in rel.split("/") if p]
    current = root
    for part in parts[:-1]:
        current = os.path.join(current, part)
        if os.path.islink(current) or (os.path.lexists(current) and not os.path.isdir(current)):
            os.unlink(current)
        os.makedirs(current, exist_ok=True)
    return os.path.join(current, parts[-1])


# --------------------------------------------------------------------------------------------------------------------
# Reading and verifying
# --------------------------------------------------------------------------------------------------------------------


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


def _apply_model_state(model, state: dict, aliases: dict, *, strict: bool, where: str) -> None:
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
    missing = _untied_missing(m, state, [k for k in result.missing_keys if k not in mismatched])
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


# --------------------------------------------------------------------------------------------------------------------
# Pickle-free encoding of state dicts: JSON with {"__tensor__": name} placeholders for safetensors entries
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
# Small helpers
# --------------------------------------------------------------------------------------------------------------------


def _unwrap_model(model):
    """Strip torch.compile, (Distributed)DataParallel and other ``.module`` wrappers."""
    from .distributed import unwrap_model

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


def _accepts(fn, name: str) -> bool:
    import inspect

    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


@contextlib.contextmanager
def _quiet_hf_progress():
    """Hide transformers' "Writing model shards" progress bar during checkpoint writes."""
    hf_logging = sys.modules.get("transformers.utils.logging")
    enabled = hf_logging is not None and hf_logging.is_progress_bar_enabled()
    if enabled:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


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


def _fsync_file(full: str) -> None:
    with open(full, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: str) -> None:
    if os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _host() -> str:
    return re.sub(r"\W", "_", socket.gethostname())[:40]


def _temp_name(final_name: str, kind: str) -> str:
    return f".{final_name}.trainwright-{kind}-{_host()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _is_stale(full: str, host: str, pid: int) -> bool:
    if host == _host() and os.name != "nt":
        return not _pid_alive(pid)
    try:
        return time.time() - os.path.getmtime(full) > _FOREIGN_STALE_SECONDS
    except OSError:
        return False


def _clean_stale_temp_dirs(output_dir: str) -> list[str]:
    removed = []
    if not os.path.isdir(output_dir):
        return removed
    for name in sorted(os.listdir(output_dir)):
        m = _TEMP_RE.match(name)
        full = os.path.join(output_dir, name)
        if not m or os.path.islink(full) or not os.path.isdir(full) or \
                not _is_stale(full, m.group("host"), int(m.group("pid"))):
            continue
        final = os.path.join(output_dir, m.group("final"))
        if m.group("kind") == "old" and not os.path.lexists(final) and checkpoint_status(full)[0]:
            os.rename(full, final)  # the replacement never arrived: put the complete checkpoint back
            _fsync_dir(output_dir)
            continue
        safe_fs.remove_tree(full)
        removed.append(full)
    return removed


def _remove_dir(path: str) -> None:
    """Make a checkpoint disappear atomically (rename aside), then delete it."""
    aside = os.path.join(os.path.dirname(path), _temp_name(os.path.basename(path), "del"))
    os.rename(path, aside)  # a symlinked checkpoint-N: the link moves, its target stays
    _fsync_dir(os.path.dirname(path))
    safe_fs.remove_tree(aside)
