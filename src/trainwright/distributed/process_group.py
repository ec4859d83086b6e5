"""The default process group under ``torchrun``: started once (``ddp_backend``, else nccl on CUDA and gloo on the
CPU), destroyed at exit when trainwright started it; an uncaught exception on any rank is reported with the rank and
host and recorded in torchrun's error file; the group's key-value store for the every-rank check.
"""
from __future__ import annotations

import atexit
import json
import os
import socket
import sys
from typing import Any

import torch

_OWN_GROUP = False  # True once trainwright started the default process group (it destroys it at exit)


def ensure_process_group(args: Any, device: torch.device) -> bool:
    """Start the default process group under torchrun unless it is running: ``ddp_backend``, else nccl on
    CUDA and gloo on the CPU, with ``ddp_timeout``. Used by :class:`Distributed` and by
    ``TrainingArguments.main_process_first``, so both use the same group. A group started by the user's
    own script is used as it is. Returns True when the group is trainwright's."""
    global _OWN_GROUP
    import torch.distributed as dist
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if dist.is_initialized():
        return _OWN_GROUP
    backend = args.ddp_backend or ("nccl" if device.type == "cuda" else "gloo")
    kwargs = {"device_id": device} if backend == "nccl" else {}
    dist.init_process_group(backend=backend, timeout=args.ddp_timeout_delta, **kwargs)
    _OWN_GROUP = True
    atexit.register(_destroy_own_group)
    return True


def _destroy_own_group():
    if _FAILED:  # after an error the peers may be gone: do not wait for them
        return
    try:
        import torch.distributed as dist
        if dist.is_initialized():
            dist.destroy_process_group()
    except Exception:
        pass


# ====================================================================== failures
_FAILED = False


def install_failure_report(rank: int, local_rank: int, world_size: int) -> None:
    """An uncaught exception on any rank is announced with the rank and host, and recorded in torchrun's
    error file (so its summary shows the traceback and picks the first failing rank as the root cause).
    torchrun then stops the other ranks; collectives cannot wait longer than ddp_timeout."""
    previous = sys.excepthook
    if getattr(previous, "_trainwright", False):
        return

    def hook(exc_type, exc, tb):
        global _FAILED
        _FAILED = True
        if not issubclass(exc_type, KeyboardInterrupt):
            print(f"[trainwright] rank {rank} of {world_size} (local rank {local_rank} on {socket.gethostname()}, "
                  f"pid {os.getpid()}) failed: {exc_type.__name__}: {exc}", file=sys.stderr, flush=True)
            _record_torchrun_error(exc_type, exc, tb)
        previous(exc_type, exc, tb)

    hook._trainwright = True
    sys.excepthook = hook


def _record_torchrun_error(exc_type, exc, tb) -> None:
    """Write torchrun's per-worker error file (the format of torch.distributed.elastic's @record), with
    this exception's traceback, unless the user's entry point already wrote it with @record."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path or os.path.exists(path):
        return
    import time
    import traceback
    data = {"message": {"message": f"{exc_type.__name__}: {exc}",
                        "extraInfo": {"py_callstack": "".join(traceback.format_exception(exc_type, exc, tb)),
                                      "timestamp": str(int(time.time()))}}}
    try:
        with open(path, "w") as f:
            json.dump(data, f)
    except OSError:
        pass


def default_store() -> Any:
    """The default process group's c10d store (None if torch does not expose it)."""
    try:
        from torch.distributed.distributed_c10d import _get_default_store
        return _get_default_store()
    except Exception:
        return None
