"""Checkpoint writes that run while training goes on.

A save is taken at the save point (:func:`.api.take_snapshot`: host copies of every tensor) and written by a
:class:`BackgroundWrite`: one thread (not a daemon: the interpreter waits for it at exit, so a write in flight is
finished rather than cut off) that serialises, hashes, fsyncs, publishes the directory and rotates old checkpoints.
``hashlib``, ``os.write`` and ``os.fsync`` release the GIL, so the training thread keeps running.

A :class:`PendingSave` is the checkpoint between its save point and the moment the Trainer learns that it is
complete; the Trainer keeps at most one (see :class:`~.manager.CheckpointManager`).

A :class:`CopyGate` holds the optimizer's next ``step()`` until the writer has made the snapshot's deferred copies
(the trained parameters and the optimizer state, on the CPU: :mod:`.host_copy`), so that the save point itself
does not wait for them: they are made while the next forward and backward run.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any


class BackgroundWrite:
    """``fn()`` running in its own thread; :meth:`wait` returns the exception it raised (None when it worked)."""

    def __init__(self, fn: Callable[[], Any], name: str = "trainwright-checkpoint-writer") -> None:
        self.error: BaseException | None = None
        self.ended: float | None = None  # time.perf_counter() when fn returned or raised
        self._thread = threading.Thread(target=self._run, args=(fn,), name=name, daemon=False)
        self._thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            fn()
        except BaseException as e:  # reported where the Trainer waits for the write
            self.error = e
        finally:
            self.ended = time.perf_counter()

    def done(self) -> bool:
        return not self._thread.is_alive()

    def wait(self) -> BaseException | None:
        self._thread.join()
        return self.error


class CopyGate:
    """A pre-step hook on ``optimizer`` (a ``torch.optim.Optimizer``) that waits until :meth:`open` is called.
    ``waited``: the seconds the training thread spent waiting in it. The hook is removed by :meth:`close`, on the
    training thread (a hook cannot be removed while the optimizer iterates its hooks)."""

    def __init__(self, optimizer: Any) -> None:
        self._open = threading.Event()
        self.waited = 0.0
        self._handle = optimizer.register_step_pre_hook(self._wait)

    def _wait(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if not self._open.is_set():
            start = time.perf_counter()
            self._open.wait()
            self.waited += time.perf_counter() - start

    def open(self) -> None:
        self._open.set()

    def close(self) -> None:
        self._open.set()
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


class PendingSave:
    """One checkpoint from its save point until it is settled, on every rank (the writing rank also holds the
    write): ``path``, ``step``, the trainer state as saved, and the best-model values it makes current once
    complete (``best``: ``(best_metric, best_global_step, best_model_checkpoint)`` or None)."""

    def __init__(self, path: str, step: int, state: dict, best: tuple | None) -> None:
        self.path, self.step, self.state, self.best = path, step, state, best
        self.write: BackgroundWrite | None = None
        self.error: BaseException | None = None  # a failure at the save point, or of a write made there
        self.gate: CopyGate | None = None  # holds the optimizer's next step until the deferred copies are made
        self.blocked = 0.0  # seconds the save point held the training loop (plus gate.waited, once settled)
        self.started = time.perf_counter()
        self.ended: float | None = None  # when the write ended (complete or failed)

    def run(self, fn: Callable[[], Any], background: bool) -> None:
        """``fn`` (the write) in a background thread, or here and now."""
        if background:
            self.write = BackgroundWrite(fn)
            return
        try:
            fn()
        except Exception as e:
            self.error = e
        self.ended = time.perf_counter()

    def done(self) -> bool:
        return self.write is None or self.write.done()

    def wait(self) -> BaseException | None:
        """Waits for the write (this process only); its error, if any."""
        if self.write is not None:
            self.error = self.write.wait() or self.error
            self.ended = self.write.ended
            self.write = None
        if self.gate is not None:
            self.gate.close()
            self.blocked += self.gate.waited
            self.gate = None
        return self.error
