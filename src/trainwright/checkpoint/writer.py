"""Writing a checkpoint or model directory: every file goes into a temporary directory and is fsynced, the
manifest (every file with its size and sha256, plus the model's parameter fingerprint) is written last, then the
directory is renamed into place (or, for a model saved into a non-empty directory, the files are moved in one by one
and the manifest comes last). Test hooks: ``TRAINWRIGHT_TEST_SLOW_CHECKPOINT_SECONDS`` and
``TRAINWRIGHT_TEST_FAIL_CHECKPOINT_WRITE`` (read at call time).
"""
from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import re
import socket
import sys
import time
import uuid
import warnings

import torch

from ..errors import CheckpointError
from . import safe_fs, stream
from .format import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    MODEL_WEIGHTS_NAME,
    _dedupe_tensors,
    _exists,
    _fingerprint,
    _json_default,
    _sha256,
    _unwrap_model,
    _walk_files,
)
from .reader import _pickle_reason, _read_json

_SLOW_ENV = "TRAINWRIGHT_TEST_SLOW_CHECKPOINT_SECONDS"
_FAIL_ENV = "TRAINWRIGHT_TEST_FAIL_CHECKPOINT_WRITE"


class _Writer:
    """Writes files into the temp dir, fsyncs each, hashes what it writes itself as it writes it (``hashes``:
    relative path -> (size, sha256)), and applies the test hooks (read when the writer is made: at the save point)."""

    def __init__(self, root: str):
        self.root = root
        self.count = 0
        self.hashes: dict[str, tuple[int, str]] = {}
        self.slow = float(os.environ.get(_SLOW_ENV) or 0)
        self.fail = (os.environ.get(_FAIL_ENV) or "").strip().upper()

    def wrote(self, rel: str, *, last: bool = False, synced: bool = False) -> None:
        full = os.path.join(self.root, rel)
        if not synced:
            _fsync_file(full)
        self.count += 1
        if self.fail and (self.count >= 2 or last):
            code = getattr(errno, self.fail, None)
            if isinstance(code, int):
                raise OSError(code, f"{os.strerror(code)} (simulated by {_FAIL_ENV})", full)
        if self.slow > 0:
            time.sleep(self.slow)

    def run_external(self, fn, register: bool = True) -> list[str]:
        """Run a save_pretrained-like callable that writes into root; register the new files (hashed later; with
        ``register=False`` the caller registers them with :meth:`wrote` later, e.g. in a background write)."""
        before = set(_walk_files(self.root))
        with _quiet_hf_progress():
            fn()
        new = sorted(set(_walk_files(self.root)) - before)
        for rel in new if register else ():
            self.wrote(rel)
        return new

    def write_bytes(self, rel: str, data: bytes, *, last: bool = False) -> None:
        self.hashes[rel] = stream.write_bytes(os.path.join(self.root, rel), data)
        self.wrote(rel, last=last, synced=True)

    def write_json(self, rel: str, obj, *, default=None, last: bool = False) -> None:
        text = json.dumps(obj, indent=2, sort_keys=True, default=default or _json_default) + "\n"
        self.write_bytes(rel, text.encode("utf-8"), last=last)

    def write_tensors(self, rel: str, tensors: dict, metadata: dict | None = None) -> dict[str, str]:
        unique, aliases = _dedupe_tensors(tensors)
        written = stream.write_safetensors(os.path.join(self.root, rel), unique, metadata or {"format": "pt"})
        if written is not None:
            self.hashes[rel] = written
        self.wrote(rel, synced=written is not None)
        return aliases


def _save_model(w: _Writer, model, *, checkpoint: bool, state: dict | None = None) -> dict:
    """The model's weights (and config): ``save_pretrained`` when it has one, else its state dict. ``state``: a
    copy of the state dict taken earlier, written instead of the model's current one."""
    m = _unwrap_model(model)
    from .adapters import is_adapter_model, save_adapter

    if is_adapter_model(m):  # a PEFT model: its adapter, never the frozen base (adapters.py)
        return save_adapter(w, m, checkpoint=checkpoint)
    if callable(getattr(m, "save_pretrained", None)):
        kwargs = {"safe_serialization": True}
        # transformers >= 5 may rename weights back to an "original" layout on save; checkpoints keep the
        # state_dict names so that resuming maps every tensor 1:1.
        if checkpoint and _accepts(m.save_pretrained, "save_original_format"):
            kwargs["save_original_format"] = False
        if state is not None:
            kwargs["state_dict"] = dict(state)  # save_pretrained pops from it
        new = w.run_external(lambda: m.save_pretrained(w.root, **kwargs))
        pickled = [f for f in new if _pickle_reason(os.path.join(w.root, f))]
        weights = [f for f in new if f.endswith(".safetensors")]
        if not pickled and weights:
            return {"format": "save_pretrained", "class": type(m).__name__, "weight_files": weights, "aliases": {}}
        warnings.warn(f"{type(m).__name__}.save_pretrained wrote {pickled or 'no safetensors'}; "
                      "saving the state_dict as model.safetensors instead", stacklevel=3)
        for f in pickled + weights:
            os.remove(os.path.join(w.root, f))
    aliases = w.write_tensors(MODEL_WEIGHTS_NAME, m.state_dict() if state is None else state)
    return {"format": "state_dict", "class": type(m).__name__, "weight_files": [MODEL_WEIGHTS_NAME],
            "aliases": aliases}


def _finish(w: _Writer, signature: dict, model_info: dict, manifest: dict, *, write: bool = True) -> dict:
    """fsync the tree, then write the manifest last (unless write=False: returned for the caller to place). Files
    the writer wrote itself were hashed as they were written; the others (``save_pretrained``'s) are read here."""
    for d, _, _ in os.walk(w.root, topdown=False):
        _fsync_dir(d)
    files = []
    for rel in sorted(_walk_files(w.root)):
        full = os.path.join(w.root, rel)
        size, sha = w.hashes.get(rel) or (os.path.getsize(full), _sha256(full))
        files.append({"path": rel, "size": size, "sha256": sha})
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
