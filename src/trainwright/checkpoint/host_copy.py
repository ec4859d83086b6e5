"""The consistent snapshot a background checkpoint write starts from: copies of the state's tensors in host memory.

:class:`HostCopies` copies tensors into host buffers that are kept from one checkpoint to the next, so only the
first save of a run allocates them (and pays the page faults); later saves copy into memory that is already
mapped. A CUDA tensor goes to pinned memory with a non-blocking copy and one stream synchronisation at the end of
the snapshot; a CPU tensor is a plain ``copy_``.

Copies are made per *storage*: tensors that share memory in the source (tied weights, views) share it in the copy
with the same offsets and strides, so aliases are found and written exactly as they would be from the source.
Parameters that do not train (``requires_grad=False``, e.g. the frozen base of a LoRA model) are not copied on the
CPU (nothing changes them); on an accelerator they are copied once and reused while their version counter is
unchanged.

The caller guarantees that a buffer is not overwritten while a write still reads it: at most one save is in
flight, and the next snapshot is taken only after it completed.

Deferred copies (``defer``): CPU tensors that only the optimizer's step changes (trainable parameters and the
optimizer state) need not be copied at the save point. Their buffers are set up there (so the snapshot already
holds the tensors that will carry the values) but the copy itself is returned by :meth:`HostCopies.end` as a job
list, which the background writer runs first, while the next step's forward and backward run;
:class:`~.background.CopyGate` makes the optimizer's next ``step()`` wait until the jobs are done.
"""
from __future__ import annotations

from typing import Any

import torch


class _Buffer:
    __slots__ = ("data", "source")

    def __init__(self, data: torch.Tensor) -> None:
        self.data = data
        self.source: tuple | None = None  # (storage pointer, version) of the frozen tensor copied into it


class HostCopies:
    """Host copies of tensors in buffers reused from one snapshot to the next (see the module docstring)."""

    def __init__(self) -> None:
        self._buffers: dict[str, _Buffer] = {}
        self._used: dict[str, _Buffer] = {}
        self._memo: dict[tuple, torch.Tensor] = {}
        self._devices: set = set()
        self._jobs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def begin(self) -> None:
        self._used, self._memo, self._devices, self._jobs = {}, {}, set(), []

    def end(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Waits for the device copies, forgets the buffers this snapshot did not use, and returns the deferred
        copies still to make: ``(buffer, source)`` pairs (see the module docstring)."""
        for device in self._devices:
            torch.cuda.current_stream(device).synchronize()
        jobs = self._jobs
        self._buffers, self._used, self._memo, self._devices, self._jobs = self._used, {}, {}, set(), []
        return jobs

    def release(self) -> None:
        """Frees the buffers (the next snapshot allocates them again)."""
        self._buffers, self._used, self._memo = {}, {}, {}

    def copy_dict(self, prefix: str, tensors: dict, frozen: frozenset = frozenset(),
                  defer: bool | frozenset = False) -> dict:
        """``tensors`` with every tensor replaced by its host copy (other values as they are). ``frozen``: storage
        pointers of parameters that do not train; ``defer``: True (every CPU tensor) or the storage pointers of
        the CPU tensors whose copy may be deferred."""
        return {name: self.copy(prefix + str(name), t, frozen, defer) for name, t in tensors.items()}

    def copy(self, key: str, t: Any, frozen: frozenset = frozenset(), defer: bool | frozenset = False) -> Any:
        if not isinstance(t, torch.Tensor):
            return t
        t = t.detach()
        if type(t) is not torch.Tensor or t.layout != torch.strided or t.device.type == "meta":
            return t if t.device.type == "meta" else t.to("cpu", copy=True)
        if t.numel() == 0:
            return torch.empty(t.shape, dtype=t.dtype)
        storage = t.untyped_storage()
        ident = (t.device, storage.data_ptr())
        is_frozen = storage.data_ptr() in frozen
        if is_frozen and t.device.type == "cpu":
            return t  # a parameter nothing trains: the source itself
        data = self._memo.get(ident)
        if data is None:
            later = t.device.type == "cpu" and (defer is True or (bool(defer) and storage.data_ptr() in defer))
            data = self._memo[ident] = self._copy_storage(key, t, storage, is_frozen, later)
        return torch.empty(0, dtype=t.dtype).set_(data.untyped_storage(), t.storage_offset(), t.shape, t.stride())

    def _copy_storage(self, key: str, t: torch.Tensor, storage, frozen: bool, later: bool = False) -> torch.Tensor:
        nbytes = storage.nbytes()
        pinned = t.device.type == "cuda"
        buf = self._buffers.get(key)
        if buf is None or buf.data.numel() != nbytes or buf.data.is_pinned() != pinned or key in self._used:
            buf = _Buffer(torch.empty(nbytes, dtype=torch.uint8, pin_memory=pinned))
        self._used[key] = buf
        source = (storage.data_ptr(), t._version)
        if frozen and buf.source == source:
            return buf.data  # copied at an earlier save and unchanged since
        whole = torch.empty(0, dtype=torch.uint8, device=t.device).set_(storage)
        if later:
            self._jobs.append((buf.data, whole))
            buf.source = None
            return buf.data
        buf.data.copy_(whole, non_blocking=pinned)
        buf.source = source if frozen else None
        if pinned:
            self._devices.add(t.device)
        return buf.data


def run_copies(jobs: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """The deferred copies returned by :meth:`HostCopies.end`."""
    for buffer, source in jobs:
        buffer.copy_(source)


def trained_storages(model: Any) -> frozenset:
    """Storage pointers of the model's parameters that train (only the optimizer's step changes them)."""
    parameters = getattr(model, "parameters", None)
    if not callable(parameters):
        return frozenset()
    return frozenset(p.untyped_storage().data_ptr() for p in parameters()
                     if type(p.data) is torch.Tensor and p.numel() and p.requires_grad)


def frozen_storages(model: Any) -> frozenset:
    """Storage pointers of the model's parameters that do not train (and share no memory with one that does)."""
    parameters = getattr(model, "parameters", None)
    if not callable(parameters):
        return frozenset()
    frozen, trained = set(), set()
    for p in parameters():
        if type(p.data) is torch.Tensor and p.numel():
            (trained if p.requires_grad else frozen).add(p.untyped_storage().data_ptr())
    return frozenset(frozen - trained)
