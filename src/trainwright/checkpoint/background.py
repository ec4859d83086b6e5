"""Checkpoint writes that run while training goes on.

A save is taken at the save point (:func:`.api.take_snapshot`: host copies of every tensor) and written by a
:class:`BackgroundWrite`: one thread (not a daemon: the interpreter waits for it at exit, so a write in flight is
finished rather than cut off) that serialises, hashes, fsyncs, publishes the directory and rotates old checkpoints.
``hashlib``, ``os.write`` and ``os.fsync`` release the GIL, so the training thread keeps running.

A :class:`PendingSave` is the checkpoint between its save point and the moment the Trainer learns that it is
complete; the Trainer keeps at most one (see :class:`~.manager.CheckpointManager`).
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class BackgroundWrite:
    """``fn()`` running in its own thread; :meth:`wait` returns the exception it raised (None when it worked)."""

    def __init__(self, fn: Callable[[], Any], name: str = "trainwright-checkpoint-writer") -> None:
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn,), name=name, daemon=False)
        self._thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            fn()
        except BaseException as e:  # reported where the Trainer waits for the write
            self.error = e

    def done(self) -> bool:
        return not self._thread.is_alive()

    def wait(self) -> BaseException | None:
        self._thread.join()
        return self.error


class PendingSave:
    """One checkpoint from its save point until it is settled, on every rank (the writing rank also holds the
    write): ``path``, ``step``, the trainer state as saved, and the best-model values it makes current once
    complete (``best``: ``(best_metric, best_global_step, best_model_checkpoint)`` or None)."""

    def __init__(self, path: str, step: int, state: dict, best: tuple | None) -> None:
        self.path, self.step, self.state, self.best = path, step, state, best
        self.write: BackgroundWrite | None = None
        self.error: BaseException | None = None  # a failure at the save point, or of a write made there

    def run(self, fn: Callable[[], Any], background: bool) -> None:
        """``fn`` (the write) in a background thread, or here and now."""
        if background:
            self.write = BackgroundWrite(fn)
            return
        try:
            fn()
        except Exception as e:
            self.error = e

    def done(self) -> bool:
        return self.write is None or self.write.done()

    def wait(self) -> BaseException | None:
        """Waits for the write (this process only); its error, if any."""
        if self.write is not None:
            self.error = self.write.wait() or self.error
            self.write = None
        return self.error
