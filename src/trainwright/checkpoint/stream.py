"""Writing a file while hashing it: every byte goes to the disk and into a sha256 as it is written, so the
completion manifest needs no second read of the file.

* :class:`HashingFile`: a new file (``O_EXCL``, never through a symlink); ``write`` hashes and writes, ``close``
  fsyncs and returns ``(size, sha256)``.
* :func:`write_safetensors`: a safetensors file streamed straight from the tensors' memory (no serialised copy of
  the file is built first). The layout is the format's: an 8-byte little-endian header length, the JSON header
  (padded with spaces to a multiple of 8), then the tensors' bytes back to back, the widest dtypes first so that
  every tensor stays aligned. A dtype this writer does not know goes through ``safetensors.torch.save_file``
  and the file is hashed after it is written.

Large buffers are hashed and written in chunks: ``hashlib`` and ``os.write`` release the GIL for them, so a
background writer leaves the training thread free.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import sys

import torch

_CHUNK = 8 << 20
_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
           torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
           torch.bool: "BOOL"}
for _name, _code in (("float8_e4m3fn", "F8_E4M3"), ("float8_e5m2", "F8_E5M2"), ("uint16", "U16"),
                     ("uint32", "U32"), ("uint64", "U64")):
    if hasattr(torch, _name):
        _DTYPES[getattr(torch, _name)] = _code


class HashingFile:
    """A new file written in order, hashed as it is written; ``close()`` fsyncs it and returns (size, sha256)."""

    def __init__(self, path: str) -> None:
        self.path = path
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
        self._fd: int | None = os.open(path, flags, 0o644)
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        for start in range(0, len(view), _CHUNK):
            chunk = view[start:start + _CHUNK]
            self._hash.update(chunk)
            while chunk:
                n = os.write(self._fd, chunk)
                chunk = chunk[n:]
        self.size += len(view)

    def close(self, fsync: bool = True) -> tuple[int, str]:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                if fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
        return self.size, self._hash.hexdigest()

    def __enter__(self) -> HashingFile:
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def write_bytes(path: str, data: bytes) -> tuple[int, str]:
    """``data`` to a new file ``path``, fsynced; returns (size, sha256)."""
    with HashingFile(path) as f:
        f.write(data)
        return f.close()


def streamable(tensors: dict) -> bool:
    """Whether :func:`write_safetensors` writes these tensors itself (plain CPU tensors of a known dtype)."""
    return sys.byteorder == "little" and all(
        isinstance(t, torch.Tensor) and t.device.type == "cpu" and t.layout == torch.strided and t.dtype in _DTYPES
        and type(t) is torch.Tensor for t in tensors.values())


def write_safetensors(path: str, tensors: dict, metadata: dict | None = None) -> tuple[int, str] | None:
    """``tensors`` (name -> contiguous CPU tensor, no two sharing memory) as a new safetensors file at ``path``,
    fsynced; returns (size, sha256), or None when it was written by ``safetensors.torch.save_file`` (a dtype
    this writer does not know) and still has to be hashed."""
    if not streamable(tensors):
        from safetensors.torch import save_file

        save_file(tensors, path, metadata=metadata)
        return None
    order = sorted(tensors, key=lambda name: (-tensors[name].element_size(), name))
    header: dict = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for name in order:
        t = tensors[name]
        nbytes = t.numel() * t.element_size()
        header[name] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-(len(text) + 8) % 8)  # the data starts 8-byte aligned
    with HashingFile(path) as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for name in order:
            t = tensors[name]
            if t.numel():
                f.write(_raw_bytes(t))
        return f.close()


def _raw_bytes(t: torch.Tensor) -> memoryview:
    """The bytes of a contiguous tensor, without a copy."""
    flat = t.contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy())
