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
from . import safe_fs
from .format import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    MODEL_WEIGHTS_NAME,
    OPTIMIZER_STATE,
    _dedupe_tensors,
    _encode,
    _exists,
    _fingerprint,
    _json_default,
    _param_signature,
    _sha256,
    _unwrap_model,
    _unwrap_optimizer,
    _walk_files,
)
from .reader import _pickle_reason, _read_json

_SLOW_ENV = "TRAINWRIGHT_TEST_SLOW_CHECKPOINT_SECONDS"
_FAIL_ENV = "TRAINWRIGHT_TEST_FAIL_CHECKPOINT_WRITE"


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
    from .adapters import is_adapter_model, save_adapter

    if is_adapter_model(m):  # a PEFT model: its adapter, never the frozen base (adapters.py)
        return save_adapter(w, m, checkpoint=checkpoint)
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
