"""trainwright's exceptions, and the "did you mean" hint. Each message names the argument or column, what was
wrong, and the fix."""

from typing import Any


class TrainwrightError(Exception):
    """Base class of every error trainwright raises on purpose."""


class ConfigError(TrainwrightError, ValueError):
    """A TrainingArguments value, a Trainer argument or a config-file key is wrong."""


class DataError(TrainwrightError, ValueError):
    """A dataset, a column or a label is wrong."""


class ModelError(TrainwrightError, ValueError):
    """The model does not fit the data or the arguments."""


class CheckpointError(TrainwrightError, RuntimeError):
    """A checkpoint is missing, incomplete, corrupt, unsafe, or from another run."""


class NonFiniteLossError(TrainwrightError, RuntimeError):
    """Training stopped because the loss or the gradients kept being NaN or inf."""


class HubError(TrainwrightError, RuntimeError):
    """Pushing to the Hugging Face Hub failed (the endpoint, the error and how to push later are in the message)."""


class BatchSizeSearchError(TrainwrightError, RuntimeError):
    """auto_find_batch_size found no batch size that fits in memory, or an evaluation ran out of memory during it."""


class CorruptCheckpointError(CheckpointError):
    """A checkpoint's files are incomplete or do not match its manifest (nothing was loaded from it)."""


def did_you_mean(value: Any, choices: Any, *, n: int = 1, cutoff: float = 0.6, show: Any = repr) -> str:
    """The hint ending a message about an unknown name: ``" Did you mean 'epoch'?"`` naming the closest of
    ``choices`` to ``value`` (up to ``n``, joined by ", ", each written by ``show``), or ``""`` when none is close.

    Args:
        value: the name that was given (compared as a string).
        choices: the valid names.
        n: how many close names to offer at most.
        cutoff: how similar a name must be (0 to 1, ``difflib.get_close_matches``).
        show: how a close name is written in the message (default: quoted with ``repr``).
    """
    import difflib

    near = difflib.get_close_matches(str(value), list(choices), n=n, cutoff=cutoff)
    return f" Did you mean {', '.join(show(m) for m in near)}?" if near else ""
