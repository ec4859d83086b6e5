"""The protocol of a task preset: :class:`Task` and the values its hooks exchange with the command line.

The commands (:mod:`trainwright.cli.commands`) only load data and models and call these hooks, in this order:

1. config: ``check_data_config``, ``check_metrics`` (while the config is read, before anything is loaded);
2. data: ``read_split`` (a format of the task's own), ``required_columns`` (from ``input_columns`` and
   ``label_column``), ``label_info`` (the label space, from the training rows), ``check_labels``;
3. model: ``model_kwargs`` (head and labels), ``config_defaults`` (``model_config:``), ``prepare_tokenizer``,
   ``prepare_model``;
4. tokenization: ``tokenize_function``, ``cache_key`` (settings that change the tokenized rows), ``collator``;
5. training and prediction: ``arguments_class``, ``trainer_class``, ``training_defaults``, ``predict_overrides``,
   ``predict_kwargs``, ``compute_metrics``, ``prediction_rows``.

Every hook has a default here; a task overrides the ones it needs.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ...errors import ConfigError, did_you_mean
from ..keys import Key

if TYPE_CHECKING:
    from ...args import TrainingArguments
    from ...trainer import Trainer
    from ..config import RunConfig


# ====================================================================== labels
@dataclass
class LabelInfo:
    """The label space of a run: ``id2label`` / ``label2id`` go into the model config.

    ``names`` holds the label name of each id; a raw value from a data file (``"positive"``,
    ``0``, ``True``) is turned into a name by :meth:`name_of` and then into an id by ``label2id``.
    ``label_names`` (from ``data.label_names``) names integer labels: value ``i`` is ``label_names[i]``.
    """

    names: list[str] = field(default_factory=list)
    label_names: list[str] | None = None
    regression: bool = False

    @property
    def num_labels(self) -> int:
        return 1 if self.regression else len(self.names)

    @property
    def id2label(self) -> dict[int, str]:
        return {i: n for i, n in enumerate(self.names)}

    @property
    def label2id(self) -> dict[str, int]:
        return {n: i for i, n in enumerate(self.names)}

    def name_of(self, value: Any) -> str:
        if self.label_names and is_int(value):
            if 0 <= int(value) < len(self.label_names):
                return self.label_names[int(value)]
            return str(value)
        return str(value)

    def id_of(self, value: Any) -> int | None:
        return self.label2id.get(self.name_of(value))

    @classmethod
    def from_model_config(cls, config: Any, label_names: list[str] | None = None) -> LabelInfo:
        if getattr(config, "problem_type", None) == "regression":
            return cls(regression=True)
        id2label = getattr(config, "id2label", None) or {}
        names = [str(id2label.get(i, id2label.get(str(i), f"LABEL_{i}"))) for i in range(len(id2label))]
        return cls(names=names, label_names=label_names)


@dataclass
class PredictionInputs:
    """What :meth:`Task.prediction_rows` gets beside ``trainer.predict``'s predictions: the id of every row,
    the gold answers (None when the split has none), the label space, the tokenizer, the split before
    tokenization and the ``data:`` section."""

    ids: list
    gold: list | None
    info: LabelInfo
    tokenizer: Any
    dataset: Any
    data: dict


def is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def fmt_values(values: Iterable[Any], n: int = 10) -> str:
    values = list(values)
    shown = ", ".join(repr(v) for v in values[:n])
    return shown + (f", ... ({len(values)} in all)" if len(values) > n else "")


# ====================================================================== checks of data: values
def check_int(data: dict, key: str, minimum: int | None = None) -> None:
    v = data.get(key)
    if v is None:
        return
    if not isinstance(v, int) or isinstance(v, bool) or (minimum is not None and v < minimum):
        need = "an integer" if minimum is None else \
            ("a positive integer" if minimum == 1 else f"an integer >= {minimum}")
        raise ConfigError(f"data.{key} must be {need}; got {v!r}.")


def check_choice(data: dict, key: str, choices: Sequence[str]) -> None:
    v = data.get(key)
    if v is not None and v not in choices:
        hint = did_you_mean(v, choices, cutoff=0.5)
        raise ConfigError(f"data.{key}: {v!r} is not one of {', '.join(choices)}.{hint}")


def check_bool(data: dict, key: str) -> None:
    v = data.get(key)
    if v is not None and not isinstance(v, bool):
        raise ConfigError(f"data.{key} must be true or false; got {v!r}.")


def check_label_names(data: dict, example: str) -> None:
    ln = data.get("label_names")
    if ln is not None and (not isinstance(ln, list) or not ln or len(set(map(str, ln))) != len(ln)):
        raise ConfigError(f"data.label_names must be a list of distinct {example}; got {ln!r}.")


# ====================================================================== the protocol
class Task:
    """One ``task:`` preset. Subclasses set the class attributes and override the hooks they need."""

    name = "task"
    model_class = "AutoModelForSequenceClassification"
    default_metrics: tuple = ()
    #: extra keys this task accepts in the ``data:`` section (beyond keys.COMMON_DATA_KEYS)
    data_keys: tuple[Key, ...] = ()
    #: keys of keys.COMMON_DATA_KEYS this task has no use for (left out of its config template)
    unused_data_keys: tuple[str, ...] = ()

    # ---------------------------------------------------------------- config
    def check_data_config(self, data: dict) -> None:
        """Raise ConfigError for a ``data:`` section this task cannot use."""

    def check_metrics(self, metrics: list) -> None:
        """Raise ConfigError for a metric (a :class:`~trainwright.cli.tasks.metrics.MetricSpec`) this task
        cannot compute."""

    # ---------------------------------------------------------------- data
    def read_split(self, cfg: RunConfig, split: str, value: Any) -> tuple[Any, str] | None:
        """``(Dataset, where)`` for ``data.<split>`` when this task reads a format of its own (CoNLL, plain
        text, parallel files), else None: the CLI's CSV / JSON / Parquet / save_to_disk readers are used."""
        return None

    def input_columns(self, data: dict) -> list[str]:
        """The columns the model reads (part of the tokenization cache fingerprint)."""
        return []

    def label_column(self, data: dict) -> str | None:
        """The column holding the gold answer (written beside predictions); None when there is none."""
        return data.get("label_column") or "label"

    def required_columns(self, data: dict, with_labels: bool) -> list[tuple[str, str]]:
        """(column, config key) pairs a split must have."""
        key = "data.text_columns" if data.get("text_columns") else "data.text_column"
        cols = [(c, key) for c in self.input_columns(data)]
        label = self.label_column(data)
        if with_labels and label is not None:
            cols.append((label, "data.label_column"))
        return cols

    def label_info(self, train: Any, data: dict) -> LabelInfo:
        """The label space, from all the training rows (before ``train_limit``)."""
        return LabelInfo()

    def check_labels(self, dataset: Any, data: dict, info: LabelInfo, where: str, train_where: str) -> None:
        """Raise DataError when ``dataset`` holds a label the model does not know."""

    # ---------------------------------------------------------------- model
    def model_kwargs(self, info: LabelInfo) -> dict:
        """``from_pretrained`` keyword arguments: the head's size and the labels."""
        return {}

    def config_defaults(self, tokenizer: Any, info: LabelInfo) -> dict:
        """Model config values for ``model_config:`` (a model built from scratch) unless it sets them."""
        return {"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id, **self.model_kwargs(info)}

    def prepare_tokenizer(self, tokenizer: Any, predict: bool = False) -> Any:
        return tokenizer

    def prepare_model(self, model: Any, tokenizer: Any) -> Any:
        return model

    # ---------------------------------------------------------------- tokenization
    def tokenize_function(self, tokenizer: Any, data: dict, info: LabelInfo, with_labels: bool) -> Callable:
        """The ``Dataset.map(batched=True)`` function: a batch of rows → model inputs (and ``labels``)."""
        raise NotImplementedError

    def cache_key(self, data: dict) -> list | None:
        """Extra settings that change the tokenized rows (part of the tokenization cache fingerprint)."""
        return None

    def collator(self, tokenizer: Any, data: dict, model: Any = None, predict: bool = False) -> Callable:
        from ...data.collator import DataCollatorWithPadding
        return DataCollatorWithPadding(tokenizer)

    # ---------------------------------------------------------------- training, metrics and predictions
    def arguments_class(self) -> type[TrainingArguments]:
        from ...args import TrainingArguments
        return TrainingArguments

    def trainer_class(self) -> type[Trainer]:
        from ...trainer import Trainer
        return Trainer

    def training_defaults(self, data: dict) -> dict:
        """TrainingArguments values this task uses unless ``training:`` sets them."""
        return {}

    def predict_overrides(self, data: dict) -> dict:
        """TrainingArguments values forced for ``predict``."""
        return {}

    def predict_kwargs(self, data: dict) -> dict:
        """Keyword arguments of ``trainer.predict`` (generation settings)."""
        return {}

    def compute_metrics(self, metrics: list, info: LabelInfo, tokenizer: Any) -> Callable | None:
        """The Trainer's ``compute_metrics`` for the configured metrics; None for the loss only."""
        return None

    def prediction_rows(self, predictions: Any, inputs: PredictionInputs) -> list[dict]:
        """One dict per input row from ``trainer.predict(...).predictions`` (written as CSV or JSONL)."""
        raise NotImplementedError
