"""trainwright's exceptions. Each message names the argument or column, what was wrong, and the fix."""


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


class CorruptCheckpointError(CheckpointError):
    """A checkpoint's files are incomplete or do not match its manifest (nothing was loaded from it)."""
