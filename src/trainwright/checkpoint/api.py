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

import errno
import os
import time
import warnings
from collections.abc import Mapping
from typing import Any

from ..errors import CheckpointError
from . import safe_fs, snapshot
from .format import (
    _CHECKPOINT_RE,
    _TEMP_RE,
    MANIFEST_NAME,
    OPTIMIZER_STATE,
    RNG_STATE,
    SCALER_STATE,
    SCHEDULER_STATE,
    STATES_DIR,
    TRAINER_STATE_NAME,
    TRAINING_ARGS_NAME,
    _decode,
    _describe,
    _exists,
    _param_signature,
    _set_rng_state,
    _step_of,
    _unwrap_optimizer,
)
from .host_copy import HostCopies
from .reader import (
    _apply,
    _apply_model_state,
    _find_weight_files,
    _read_json,
    _read_manifest,
    _read_model_state,
    _read_state_dict,
    _read_tensors,
    _refuse_non_regular,
    _refuse_pickles,
    _verify,
)
from .snapshot import Snapshot
from .writer import (
    _finish,
    _fsync_dir,
    _host,
    _move_files_in,
    _publish,
    _save_model,
    _temp_name,
    _Writer,
)

_FOREIGN_STALE_SECONDS = 24 * 3600  # a temp dir of another host is considered abandoned after this long


def save_checkpoint(checkpoint_dir: Any, *, model: Any, optimizer: Any = None, lr_scheduler: Any = None,
                    scaler: Any = None, trainer_state: dict | None = None, training_args: dict | None = None,
                    processing_class: Any = None, save_only_model: bool = False, rng_state: bool = True,
                    states: Mapping[str, Any] | None = None, extra: dict | None = None) -> str:
    """Write a complete checkpoint atomically to ``checkpoint_dir`` and return its path.

    Args:
        checkpoint_dir: the directory to write (``output_dir/checkpoint-<step>``); an existing one is replaced only
            once the new one is complete.
        model: the model (``save_pretrained`` when it has one, else its ``state_dict``), unwrapped first.
        optimizer, lr_scheduler, scaler: their ``state_dict()`` (tensors to safetensors, the rest to JSON).
        trainer_state, training_args: JSON-able dicts (``trainer_state.json``, ``training_args.json``).
        processing_class: saved with its ``save_pretrained`` (a tokenizer).
        save_only_model: only the model, the processing class and the two dicts (no exact resume).
        rng_state: also save the python / numpy / torch generators.
        states: the run's stateful components by name (objects with ``state_dict()`` / ``load_state_dict()``),
            each written to ``trainwright_states/<name>.json`` (+ ``.safetensors`` for its tensors).
        extra: the caller's own JSON-able metadata, kept in the manifest (the Trainer writes none).

    On any failure the temporary directory is removed, an existing checkpoint at the same path is left intact, and
    a CheckpointError naming the directory and the underlying error is raised (chained).
    """
    return write_snapshot(take_snapshot(
        checkpoint_dir, model=model, optimizer=optimizer, lr_scheduler=lr_scheduler, scaler=scaler,
        trainer_state=trainer_state, training_args=training_args, processing_class=processing_class,
        save_only_model=save_only_model, rng_state=rng_state, states=states, extra=extra))


def take_snapshot(checkpoint_dir: Any, *, copies: HostCopies | None = None, **state: Any) -> Snapshot:
    """The first half of :func:`save_checkpoint` (same arguments): the temp dir made and everything the checkpoint
    holds captured as of now; with ``copies`` every tensor is copied to host memory, so that training may go on
    while :func:`write_snapshot` runs (in another thread). Raises CheckpointError as save_checkpoint does."""
    final = os.path.abspath(os.fspath(checkpoint_dir))
    parent = os.path.dirname(final)
    tmp = None
    try:
        os.makedirs(parent, exist_ok=True)
        tmp = os.path.join(parent, _temp_name(os.path.basename(final), "tmp"))
        os.mkdir(tmp)
        return snapshot.capture(final, _Writer(tmp), copies=copies, **state)
    except BaseException as e:
        _discard_and_raise(tmp, e, _not_written(final, e))


def write_snapshot(snap: Snapshot, copied: Any = None) -> str:
    """The second half of :func:`save_checkpoint`: the deferred copies made (then ``copied()`` is called, also if
    they failed), every file written, fsynced and hashed as it is written, the manifest last, the directory renamed
    into place. Returns the checkpoint's path."""
    try:
        try:
            snapshot.make_copies(snap)
        finally:
            if copied is not None:
                copied()
        snapshot.write(snap)
        _publish(snap.tmp, snap.final)
        return snap.final
    except BaseException as e:
        _discard_and_raise(snap.tmp, e, _not_written(snap.final, e))


def _not_written(final: str, e: BaseException) -> str:
    hint = "; free disk space or lower save_total_limit" if isinstance(e, OSError) and e.errno == errno.ENOSPC else ""
    return f"could not write checkpoint {final}: {_describe(e)}{hint}. Nothing was written there; any earlier " \
           "checkpoint is intact."


def _discard_and_raise(tmp: str | None, e: BaseException, message: str):
    """After a failed write: the temporary directory removed, then CheckpointError(message) chained to ``e`` (a
    KeyboardInterrupt or SystemExit passes through as it is)."""
    if tmp is not None:
        safe_fs.remove_tree(tmp)
    if not isinstance(e, Exception):
        raise e
    raise CheckpointError(message) from e


def load_checkpoint(
    checkpoint_dir: Any,
    *,
    model: Any = None,
    optimizer: Any = None,
    lr_scheduler: Any = None,
    scaler: Any = None,
    restore_rng: bool = True,
    strict_model: bool = True,
    states: Mapping[str, Any] | None = None,
) -> dict:
    """Verify ``checkpoint_dir`` completely, then restore into the objects given.

    Args:
        checkpoint_dir: a directory written by :func:`save_checkpoint`.
        model, optimizer, lr_scheduler, scaler: restored when given (None: not read).
        restore_rng: restore the python / numpy / torch generators.
        strict_model: a checkpoint of another architecture raises (False: loads what fits, with a warning).
        states: the run's stateful components by name; each one the checkpoint holds is restored with
            ``load_state_dict`` (the returned ``"states"`` lists them; a checkpoint of an earlier trainwright holds
            none and keeps its run state in ``"extra"``).

    Returns ``{"trainer_state": dict, "training_args": dict, "extra": dict, "states": list, "path": str,
    "manifest": dict}`` (empty for parts that were not saved). Nothing is changed unless everything verified.
    """
    path = os.path.abspath(os.fspath(checkpoint_dir))
    manifest = _verify(path, model, strict_model=strict_model)
    # Phase 1: read and parse everything; nothing is modified if any of it fails.
    model_state = _read_model_state(path, manifest) if model is not None else None
    objects = {"optimizer": optimizer, "lr_scheduler": lr_scheduler, "scaler": scaler}
    parsed = _read_run_state(path, manifest, objects, restore_rng)
    found = {name: _read_state_dict(path, f"{STATES_DIR}/{name}") for name in (states or {})
             if _exists(path, f"{STATES_DIR}/{name}.json")}
    trainer_state = _read_json(path, TRAINER_STATE_NAME) if _exists(path, TRAINER_STATE_NAME) else {}
    if trainer_state:
        from ..state import check_trainer_state

        check_trainer_state(trainer_state, os.path.join(path, TRAINER_STATE_NAME))
    training_args = _read_json(path, TRAINING_ARGS_NAME) if _exists(path, TRAINING_ARGS_NAME) else {}
    extra = _decode(manifest.get("extra") or {}, {})
    # Phase 2: apply.
    if model is not None:
        _apply_model_state(model, *model_state, strict=strict_model, where=path, adapter=_is_adapter(manifest))
    for key, doc in parsed.items():
        load = _set_rng_state if key == "rng_state" else objects[key].load_state_dict
        _apply(path, key, lambda load=load, doc=doc: load(doc["state_dict"]))
    for name, doc in found.items():
        _apply(path, name, lambda name=name, doc=doc: states[name].load_state_dict(doc["state_dict"]))
    return {"trainer_state": trainer_state, "training_args": training_args, "extra": extra, "states": sorted(found),
            "path": path, "manifest": manifest}


def _read_run_state(path: str, manifest: dict, objects: dict, restore_rng: bool) -> dict:
    """The parsed optimizer / scheduler / scaler / RNG files for the objects given (a missing one warns, or raises
    for a save_only_model checkpoint); the optimizer's class must match."""
    parsed = {}
    stems = {"optimizer": OPTIMIZER_STATE, "lr_scheduler": SCHEDULER_STATE, "scaler": SCALER_STATE,
             "rng_state": RNG_STATE}
    for key, stem in stems.items():
        if (objects.get(key) if key != "rng_state" else restore_rng or None) is None:
            continue
        if not os.path.isfile(os.path.join(path, stem + ".json")):
            if manifest.get("save_only_model") and key != "rng_state":
                raise CheckpointError(
                    f"checkpoint {path} was saved with save_only_model=True and has no {key} state; "
                    "resume from a full checkpoint or start a new run from these weights"
                )
            if key != "rng_state":  # saved with rng_state=False: nothing to restore, nothing to warn about
                warnings.warn(f"checkpoint {path} has no {key} state; the {key} starts fresh", stacklevel=3)
            continue
        parsed[key] = _read_state_dict(path, stem)
    if "optimizer" in parsed:
        saved_cls, given_cls = parsed["optimizer"]["class"], type(_unwrap_optimizer(objects["optimizer"])).__name__
        if saved_cls != given_cls:
            raise CheckpointError(
                f"checkpoint {path} holds {saved_cls} state but the optimizer is {given_cls}; "
                "use the same optimizer to resume"
            )
    return parsed


def checkpoint_status(path: Any) -> tuple[bool, str]:
    """(True, "") if ``path`` holds a valid manifest and every file it lists exists with the listed size.

    Cheap: hashes are checked by load_checkpoint, not here.
    """
    try:
        _read_manifest(os.fspath(path), check_sizes=True)
    except CheckpointError as e:
        return False, str(e)
    return True, ""


def list_checkpoints(output_dir: Any) -> list[str]:
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


def latest_checkpoint(output_dir: Any, before: Any = None) -> str | None:
    """The newest complete checkpoint in ``output_dir`` (older than the checkpoint ``before`` when given); each
    newer incomplete one is skipped with a warning. A checkpoint written by transformers.Trainer (it has no
    manifest to check) counts as complete, as transformers' own resume takes the newest one."""
    from .hf import is_hf_checkpoint

    limit = _step_of(before) if before is not None else None
    for path in reversed(list_checkpoints(output_dir)):
        if limit is not None and _step_of(path) >= limit:
            continue
        ok, reason = checkpoint_status(path)
        if ok or is_hf_checkpoint(path):
            return path
        warnings.warn(f"{reason} (skipped; falling back to an earlier checkpoint)", stacklevel=2)
    return None


def rotate_checkpoints(output_dir: Any, save_total_limit: int | None,
                       best_model_checkpoint: str | None = None) -> list[str]:
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


def save_model_dir(output_dir: Any, model: Any, processing_class: Any = None) -> str:
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
            _finish(w, _param_signature(model), model_info, {"kind": "model"})
            _publish(tmp, final)
            return final
        manifest = _finish(w, _param_signature(model), model_info, {"kind": "model"}, write=False)
        _move_files_in(tmp, final, manifest)
        return final
    except BaseException as e:
        _discard_and_raise(tmp, e, f"could not save the model to {final}: {_describe(e)}")


def load_model_weights(path: Any, model: Any) -> None:
    """Load model weights from a checkpoint dir or a model dir (save_model_dir / save_pretrained output)."""
    from .adapters import foreign_adapter_state, has_adapter_files, is_adapter_model
    from .hf import is_hf_checkpoint, read_hf_model_state

    path = os.path.abspath(os.fspath(path))
    adapter = is_adapter_model(model)
    if is_hf_checkpoint(path):  # transformers.Trainer's checkpoint: its safetensors weights, nothing else is read
        safe_fs.regular_files(path, refuse=lambda rel, kind: _refuse_non_regular(path, rel, kind))
        state = (read_hf_model_state(path, model), {})
    elif _exists(path, MANIFEST_NAME) or _CHECKPOINT_RE.match(os.path.basename(path)):
        manifest = _verify(path, model, strict_model=True)
        state = _read_model_state(path, manifest)
        adapter = _is_adapter(manifest)
    else:  # a model directory written by something else: no integrity check possible, but still no pickles.
        if not os.path.isdir(path):
            raise CheckpointError(f"model directory {path} does not exist")
        _refuse_pickles(path)
        warnings.warn(f"{path} has no {MANIFEST_NAME}; loading its safetensors weights unverified", stacklevel=2)
        if adapter and has_adapter_files(path):  # an adapter saved by peft or transformers
            state = (foreign_adapter_state(path, model, _read_tensors), {})
        else:
            state = _read_model_state(path, {"model": {"weight_files": _find_weight_files(path), "aliases": {}}})
    _apply_model_state(model, *state, strict=True, where=path, adapter=adapter)


def _is_adapter(manifest: dict) -> bool:
    """Whether a checkpoint holds a PEFT adapter (``checkpoint/adapters.py``) rather than the whole model."""
    return (manifest.get("model") or {}).get("format") == "peft"


# --------------------------------------------------------------------------------------------------------------------
# Temporary directories left by dead processes
# --------------------------------------------------------------------------------------------------------------------


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
