"""Reading a task's own file formats (CoNLL, plain text, parallel text files) into a ``datasets.Dataset``
whose fingerprint comes from the file(s) (path, size, mtime) and the reading options, so the tokenization
cache recognises an unchanged file."""
from __future__ import annotations

import hashlib
import json
import os
from typing import TYPE_CHECKING, Any

from ...errors import ConfigError, DataError

if TYPE_CHECKING:
    from ..config import RunConfig


def where(split: str, value: Any) -> str:
    """How messages name a split: ``data.train (path/to/file)``."""
    return f"data.{split} ({value})"


def existing_file(cfg: RunConfig, split: str, value: Any, what: str = "") -> str:
    """The path of ``data.<split><what>``, looked up as RunConfig.resolve_path does; DataError when missing."""
    if not isinstance(value, (str, os.PathLike)):
        raise ConfigError(f"data.{split}{what} must be a file path; got {value!r}.")
    value = os.fspath(value)
    path = cfg.resolve_path(value)
    if not os.path.isfile(path):
        beside = "" if os.path.isabs(value) else f" and {os.path.join(cfg.config_dir, value)}"
        kind = "a directory, not a file" if os.path.isdir(path) else "no such file"
        raise DataError(f"data.{split}{what} ({value}): {kind} (looked for {path}{beside}).")
    return path


def in_memory_dataset(columns: dict[str, list], *identity: Any) -> Any:
    """A ``datasets.Dataset`` of ``columns`` with a fingerprint from ``identity`` (the file states and the
    reading options)."""
    import datasets
    fingerprint = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]
    ds = datasets.Dataset.from_dict(columns)
    return datasets.Dataset(ds.data, info=ds.info, fingerprint=fingerprint)


def file_state(path: str) -> list:
    st = os.stat(path)
    return [os.path.abspath(path), st.st_size, st.st_mtime_ns]
