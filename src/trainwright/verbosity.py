"""The "trainwright" logger: what ``log_level`` / ``log_level_replica`` do, and where its lines go.

As in transformers, the Trainer's console lines (the ``***** Running training *****`` block, notices) are
``logging`` records, so ``log_level`` decides which are shown: ``"info"`` shows the training block,
``"warning"`` (transformers' default verbosity) keeps only warnings and errors, ``"passive"`` (the default)
leaves the levels as they are (for a script that sets none: WARNING, so no training block, as with
transformers; the ``trainwright`` CLI shows INFO). The level applies to the "trainwright" and "transformers" loggers, as
transformers' ``log_level`` applies to its own logger; the process that logs (rank 0) takes ``log_level``, the
other ranks ``log_level_replica``.

Where the lines go: to the handlers a script configured (``logging.basicConfig(...)``), by propagation;
a script that configured none gets them on stderr, as plain messages, from the handler added here (Python
would otherwise drop every record under WARNING).
"""
from __future__ import annotations

import logging
import sys
from typing import Any

LOGGER_NAME = "trainwright"
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR,
          "critical": logging.CRITICAL}


class _Stderr(logging.Handler):
    """Writes each record, as its plain message, to the current ``sys.stderr``."""

    def __init__(self):
        super().__init__()
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record):
        try:
            stream = sys.stderr
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:
            self.handleError(record)


class _StderrWhenUnhandled(_Stderr):
    """The library's handler: writes a record unless another handler on the way to the root logger will
    (the script's own logging configuration), so nothing is printed twice."""

    def _others_handle(self) -> bool:
        logger = logging.getLogger(LOGGER_NAME)
        while logger is not None:
            if any(h is not self for h in logger.handlers):
                return True
            if not logger.propagate:
                return False
            logger = logger.parent
        return False

    def emit(self, record):
        if not self._others_handle():
            super().emit(record)


def logger() -> logging.Logger:
    """The "trainwright" logger, with its stderr handler for scripts that configure no logging."""
    log = logging.getLogger(LOGGER_NAME)
    if not any(isinstance(h, _StderrWhenUnhandled) for h in log.handlers):
        log.addHandler(_StderrWhenUnhandled())
    return log


def level_value(name: str, argument: str = "log_level") -> int | None:
    """The ``logging`` level of a ``log_level`` value; None for ``"passive"``."""
    key = str(name).lower()
    if key == "passive":
        return None
    if key not in LEVELS:
        from .errors import ConfigError
        raise ConfigError(f"{argument}={name!r} is not a log level: use one of "
                          f"{', '.join(repr(k) for k in [*LEVELS, 'passive'])}.")
    return LEVELS[key]


def apply_log_level(args: Any, logs: bool) -> None:
    """Sets the level of the "trainwright" and "transformers" loggers from ``args.log_level`` (in the
    process that logs) or ``args.log_level_replica`` (the others), as transformers.Trainer does."""
    argument = "log_level" if logs else "log_level_replica"
    level = level_value(getattr(args, argument, "passive"), argument)
    logger()
    if level is None:
        return
    logging.getLogger(LOGGER_NAME).setLevel(level)
    if "transformers" in sys.modules:  # its own setter, so that its first configuration does not reset it
        from transformers.utils import logging as hf_logging
        hf_logging.set_verbosity(level)
    else:
        logging.getLogger("transformers").setLevel(level)


def show_info() -> Any:
    """For a program (the CLI): trainwright's lines go to stderr, INFO ones (the training block) included unless
    a level was chosen already; returns the function that undoes it. A config's ``log_level`` still decides
    inside the Trainer."""
    log = logger()
    before = log.level
    if before == logging.NOTSET:
        log.setLevel(logging.INFO)
    handler = _Stderr()
    log.addHandler(handler)

    def restore():
        log.removeHandler(handler)
        log.setLevel(before)
    return restore
