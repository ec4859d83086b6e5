"""SIGTERM / SIGINT during ``train()``: the trainer's handler only sets a flag, the loop finishes the step, writes a
checkpoint and exits with ``128 + signum`` (a second signal leaves at once).

:class:`StopSignal` is the Trainer's component for it. Its handlers live exactly as long as the training loop:
``train()`` runs inside :meth:`StopSignal.scope` and installs them (main thread only) just before the first step;
when ``train()`` returns or raises, whatever the exception, the scope puts the previous handlers back and clears the
stop flag, so a later SIGTERM behaves as it did before ``train()`` and a retried ``train()`` runs all its steps.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class SignalHandlers:
    """Installs one handler for SIGTERM and SIGINT and remembers the handlers it replaced."""

    def __init__(self) -> None:
        self.saved: dict = {}

    def install(self, handler: Any) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal.signal works only in the main thread: leave the process's handlers alone
        for sig in SIGNALS:
            previous = signal.signal(sig, handler)
            self.saved.setdefault(sig, previous)  # installed twice: keep the original

    def restore(self) -> None:
        saved, self.saved = self.saved, {}
        for sig, handler in saved.items():
            # None: a handler not installed from Python; the default is the closest we can put back
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)


class StopSignal:
    """The stop flag of one Trainer (``received``: the signal number, or None) and its handlers."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._handlers = SignalHandlers()

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        """Around ``train()``: no flag left from an earlier call on entry; on exit (return or exception) the original
        handlers are back and the flag is cleared."""
        self.received = None
        try:
            yield
        finally:
            self._handlers.restore()
            self.received = None

    def install(self) -> None:
        """The trainer's handlers for SIGTERM and SIGINT (main thread only), until the scope ends."""
        self._handlers.install(self._on_signal)

    def restore_handlers(self) -> None:
        """The handlers that were there before ``train()`` (from now on a signal acts as it did then)."""
        self._handlers.restore()

    def _on_signal(self, signum, frame) -> None:
        if self.received is not None:  # second signal: leave at once
            self._handlers.restore()
            raise KeyboardInterrupt
        self.received = signum
        print(f"\n{signal.Signals(signum).name} received: finishing the current step and writing a checkpoint "
              "(send it again to exit at once).", file=sys.stderr, flush=True)


def stop_on_signal(trainer: Any) -> None:
    """After the step the signal arrived in (every rank at the same step): write a checkpoint, put the handlers back,
    tell the user how to resume, and exit with ``128 + signum``."""
    signum = trainer.stop_signal.received
    saves = trainer.checkpoints.saves
    trainer._save_checkpoint()
    trainer.stop_signal.restore_handlers()
    if trainer.checkpoints.saves == saves:  # a subclass's _save_checkpoint saved by itself
        trainer.callback_handler.on_save(trainer.args, trainer.state, trainer.control)
    trainer.checkpoints.settle()  # the checkpoint written completely (in the background) before exiting
    if trainer.dist.is_main_process:
        path = os.path.join(trainer.args.output_dir, f"checkpoint-{trainer.state.global_step}")
        print(f"Checkpoint written to {path}. Resume with: trainer.train(resume_from_checkpoint=True)  (CLI: "
              f"trainwright train CONFIG --resume)", file=sys.stderr, flush=True)
    raise SystemExit(128 + signum)
