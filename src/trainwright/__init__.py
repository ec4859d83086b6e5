"""trainwright: a drop-in replacement for transformers.Trainer that is faster, crash-safe,
pickle-free, and explains mistakes. ``from trainwright import Trainer, TrainingArguments, ...``.

Importing this package is light: torch, transformers and datasets load on first use of a name.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "Trainer": "trainer",
    "TrainingArguments": "args",
    "TrainerState": "state",
    "TrainerCallback": "callbacks",
    "TrainerControl": "callbacks",
    "CallbackHandler": "callbacks",
    "DefaultFlowCallback": "callbacks",
    "ProgressCallback": "callbacks",
    "PrinterCallback": "callbacks",
    "EarlyStoppingCallback": "callbacks",
    "EvalPrediction": "outputs",
    "PredictionOutput": "outputs",
    "TrainOutput": "outputs",
    "set_seed": "outputs",
    "DataCollatorWithPadding": "data.collator",
    "default_data_collator": "data.collator",
    "DataCollatorForTokenClassification": "data.token_classification",
    "DataCollatorForLanguageModeling": "data.language_modeling",
    "DataCollatorForSeq2Seq": "data.seq2seq",
    "DataCollatorWithFlattening": "data.packing",
    "Seq2SeqTrainer": "seq2seq",
    "Seq2SeqTrainingArguments": "seq2seq",
    "TrainwrightError": "errors",
    "ConfigError": "errors",
    "DataError": "errors",
    "ModelError": "errors",
    "CheckpointError": "errors",
    "NonFiniteLossError": "errors",
    "HubError": "errors",
    "BatchSizeSearchError": "errors",
}

__all__ = sorted(_EXPORTS) + ["metrics", "__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
        value = getattr(module, name)
        globals()[name] = value
        return value
    if name == "metrics":
        return importlib.import_module(".metrics", __name__)
    raise AttributeError(f"module 'trainwright' has no attribute {name!r}")


def __dir__():
    return __all__
