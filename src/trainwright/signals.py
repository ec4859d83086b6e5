"""SIGTERM / SIGINT during ``train()``: the trainer's handler only sets a flag, the loop finishes the step, writes a
checkpoint and exits with ``128 + signum`` (a second signal leaves at once).

The handlers live exactly as long as the training loop: ``train()`` installs them (main thread only) and
:func:`signal_scope` puts the previous handlers back and clears the stop flag when ``train()`` returns or raises,
whatever the exception, so a later SIGTERM behaves as it did before ``train()`` and a retried ``train()`` runs all
its steps.
"""
from __future__ import annotations

import contextlib
import functools
import signal
import threading

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class SignalHandlers:
    """Installs one handler for SIGTERM and SIGINT and remembers the handlers it replaced."""

    def __init__(self):
        self.saved: dict = {}

    def install(self, handler) -> None:
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


@contextlib.contextmanager
def signal_scope(trainer):
    """Around ``train()``: no stop flag left from an earlier call on entry; on exit (return or exception) the
    original handlers are back and the flag is cleared."""
    trainer._signal_received = None
    try:
        yield
    finally:
        trainer._restore_signal_handlers()
        trainer._signal_received = None


def restores_signal_handlers(train):
    """Decorator for ``Trainer.train``: runs it inside :func:`signal_scope`."""
    @functools.wraps(train)
    def wrapper(trainer, *args, **kwargs):
        with signal_scope(trainer):
            return train(trainer, *args, **kwargs)
    return wrapper
