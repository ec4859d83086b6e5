"""Task presets for the command line: for each ``task:`` name, the model class, how rows are
tokenized, the collator, the labels, the default metrics and how predictions are written.

``trainwright.cli`` only loads data and calls these hooks, so a new task is one subclass of
:class:`Task` registered in :data:`TASKS` (plus any extra ``data:`` keys it needs in
:attr:`Task.data_keys`). Tasks that are recognised but not wired into the CLI yet are
:class:`NotAvailableTask` entries: they fail with a clear message before anything is loaded.
"""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .errors import ConfigError, DataError


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

    def name_of(self, value) -> str:
        if self.label_names and _is_int(value):
            if 0 <= int(value) < len(self.label_names):
                return self.label_names[int(value)]
            return str(value)
        return str(value)

    def id_of(self, value) -> int | None:
        return self.label2id.get(self.name_of(value))

    @classmethod
    def from_model_config(cls, config, label_names=None) -> "LabelInfo":
        if getattr(config, "problem_type", None) == "regression":
            return cls(regression=True)
        id2label = getattr(config, "id2label", None) or {}
        names = [str(id2label.get(i, id2label.get(str(i), f"LABEL_{i}"))) for i in range(len(id2label))]
        return cls(names=names, label_names=label_names)


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _fmt_values(values, n: int = 10) -> str:
    values = list(values)
    shown = ", ".join(repr(v) for v in values[:n])
    return shown + (f", ... ({len(values)} in all)" if len(values) > n else "")


# ====================================================================== metrics
@dataclass
class MetricSpec:
    name: str
    config: str | None
    kwargs: dict
    metric: Any  # trainwright.metrics.Metric


def load_metrics(specs) -> list[MetricSpec]:
    """``metrics:`` from the config: names (``accuracy``), ``glue/mrpc`` or mappings
    ``{name: f1, config: ..., average: macro}``. Unknown names fail here, before any data is loaded."""
    from . import metrics as metrics_module
    if specs is None:
        return []
    if isinstance(specs, (str, dict)):
        specs = [specs]
    if not isinstance(specs, list):
        raise ConfigError(f"metrics: must be a list of metric names, e.g. [accuracy, f1]; got {specs!r}.")
    out = []
    for spec in specs:
        if isinstance(spec, str):
            name, _, config = spec.partition("/")
            kwargs = {}
        elif isinstance(spec, dict):
            spec = dict(spec)
            if "name" not in spec:
                raise ConfigError(f"metrics: entry {spec!r} needs a 'name' key, e.g. {{name: f1, average: macro}}.")
            name, config = spec.pop("name"), spec.pop("config", None)
            kwargs = spec
        else:
            raise ConfigError(f"metrics: entry {spec!r} must be a metric name (e.g. accuracy) or a mapping with name:.")
        metric = metrics_module.load(name, config or None)
        out.append(MetricSpec(name=name, config=config or None, kwargs=kwargs, metric=metric))
    return out


def _merge_results(results: list[tuple[str, dict]]) -> dict[str, float]:
    merged: dict[str, float] = {}
    for name, result in results:
        for key, value in result.items():
            if isinstance(value, (list, tuple, np.ndarray)):
                continue  # per-class arrays are not logged as scalars
            out_key = key if key not in merged else f"{name}_{key}"
            merged[out_key] = float(value) if isinstance(value, (int, float, np.number)) else value
    return merged


def _logits(predictions):
    if isinstance(predictions, (tuple, list)):
        predictions = predictions[0]
    return np.asarray(predictions)


def softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float64)
    logits = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=-1, keepdims=True)


# ====================================================================== tasks
class Task:
    """One ``task:`` preset. Subclasses override the hooks they need."""

    name = "task"
    model_class = "AutoModelForSequenceClassification"
    default_metrics: tuple = ()
    #: extra keys this task accepts in the ``data:`` section (beyond cli.COMMON_DATA_KEYS)
    data_keys: tuple = ()
    available = True
    needs_label_column = True

    # ---------------------------------------------------------------- config
    def check_data_config(self, data: dict) -> None:
        """Raise ConfigError for a ``data:`` section this task cannot use."""

    def input_columns(self, data: dict) -> list[str]:
        return []

    # ---------------------------------------------------------------- labels
    def label_info(self, train, data: dict) -> LabelInfo:
        return LabelInfo()

    def check_labels(self, dataset, data: dict, info: LabelInfo, where: str, train_where: str) -> None:
        """Raise DataError when ``dataset`` holds a label the model does not know."""

    def model_kwargs(self, info: LabelInfo) -> dict:
        return {}

    def load_model(self, path: str, info: LabelInfo):
        import transformers
        cls = getattr(transformers, self.model_class)
        return cls.from_pretrained(path, **self.model_kwargs(info))

    # ---------------------------------------------------------------- tokenization
    def tokenize_function(self, tokenizer, data: dict, info: LabelInfo, with_labels: bool) -> Callable:
        raise NotImplementedError

    def data_collator(self, tokenizer, data: dict):
        from .data.collator import DataCollatorWithPadding
        return DataCollatorWithPadding(tokenizer)

    # ---------------------------------------------------------------- metrics and predictions
    def compute_metrics(self, metrics: list[MetricSpec], info: LabelInfo) -> Callable | None:
        return None

    def prediction_rows(self, predictions, ids: list, info: LabelInfo, gold: list | None) -> list[dict]:
        raise NotImplementedError


class TextClassification(Task):
    """One text column (``text_column``) or a pair (``text_columns: [a, b]``) → one label."""

    name = "text-classification"
    model_class = "AutoModelForSequenceClassification"
    default_metrics = ("accuracy", "f1")

    def check_data_config(self, data):
        if data.get("text_column") is not None and data.get("text_columns") is not None:
            raise ConfigError("data: set either text_column (one text) or text_columns: [a, b] (a pair), not both.")
        cols = data.get("text_columns")
        if cols is not None:
            if isinstance(cols, str):
                cols = [cols]
            if not isinstance(cols, list) or not 1 <= len(cols) <= 2 or not all(isinstance(c, str) for c in cols):
                raise ConfigError(f"data.text_columns must be a list of one or two column names, e.g. "
                                  f"[sentence1, sentence2]; got {data.get('text_columns')!r}.")
        if data.get("label_names") is not None:
            ln = data["label_names"]
            if not isinstance(ln, list) or not ln or len(set(map(str, ln))) != len(ln):
                raise ConfigError(f"data.label_names must be a list of distinct names, e.g. [negative, positive]; got {ln!r}.")

    def input_columns(self, data):
        cols = data.get("text_columns")
        if cols is not None:
            return [cols] if isinstance(cols, str) else list(cols)
        return [data.get("text_column") or "text"]

    def label_info(self, train, data):
        column = data.get("label_column") or "label"
        values = [v for v in train.unique(column)]
        if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in values):
            raise DataError(f"data.train has rows with an empty {column!r} label: fill them in or remove those rows.")
        label_names = [str(n) for n in data["label_names"]] if data.get("label_names") is not None else None
        if label_names is not None:
            info = LabelInfo(names=list(label_names), label_names=label_names)
            unknown = [v for v in values if info.id_of(v) is None]
            if unknown:
                raise DataError(f"data.train has labels {_fmt_values(sorted(unknown, key=str))} that data.label_names "
                                f"{label_names} does not name: integer labels must be 0..{len(label_names) - 1}, "
                                f"string labels must be listed in label_names.")
            return info
        try:
            values = sorted(values)
        except TypeError:  # mixed types
            values = sorted(values, key=str)
        names = [str(v) for v in values]
        if len(set(names)) != len(names):
            raise DataError(f"data.train labels {_fmt_values(values)} collide once written as text: use one type per label.")
        if len(names) < 2:
            raise DataError(f"data.train has only one label value ({_fmt_values(values)}) in column {column!r}: "
                            "classification needs at least two (or use task: regression for numbers).")
        return LabelInfo(names=names)

    def check_labels(self, dataset, data, info, where, train_where):
        column = data.get("label_column") or "label"
        unseen = []
        for v in dataset.unique(column):
            if v is None or (isinstance(v, float) and math.isnan(v)):
                raise DataError(f"{where} has rows with an empty {column!r} label: fill them in or remove those rows.")
            if info.id_of(v) is None:
                unseen.append(v)
        if unseen:
            raise DataError(f"{where} has label {_fmt_values(sorted(unseen, key=str))} in column {column!r} that "
                            f"{train_where} never has; known labels: {', '.join(info.names)}. Fix the file, "
                            "drop those rows, or list every label in data.label_names.")

    def model_kwargs(self, info):
        return {"num_labels": info.num_labels, "id2label": info.id2label, "label2id": info.label2id,
                "problem_type": "single_label_classification"}

    def tokenize_function(self, tokenizer, data, info, with_labels):
        columns = self.input_columns(data)
        label_column = data.get("label_column") or "label"
        max_length = data.get("max_length")
        id_of = info.id_of

        def tokenize(batch):
            texts = [["" if t is None else str(t) for t in batch[c]] for c in columns]
            enc = tokenizer(*texts, truncation=True, max_length=max_length)
            out = dict(enc)
            if with_labels:
                out["labels"] = [id_of(v) for v in batch[label_column]]
            return out

        return tokenize

    def compute_metrics(self, metrics, info):
        if not metrics:
            return None
        multiclass = info.num_labels > 2

        def compute(eval_pred):
            logits = _logits(eval_pred.predictions)
            preds = logits.argmax(-1)
            refs = np.asarray(eval_pred.label_ids)
            results = []
            for m in metrics:
                kwargs = dict(m.kwargs)
                if multiclass and m.metric.name in ("f1", "precision", "recall") and "average" not in kwargs:
                    kwargs["average"] = "macro"
                results.append((m.name, m.metric.compute(predictions=preds, references=refs, **kwargs)))
            return _merge_results(results)

        return compute

    def prediction_rows(self, predictions, ids, info, gold):
        probs = softmax(_logits(predictions))
        pred_ids = probs.argmax(-1)
        rows = []
        for i, row_id in enumerate(ids):
            row = {"id": row_id, "predicted_label": info.names[int(pred_ids[i])]}
            if gold is not None:
                row["label"] = info.name_of(gold[i])
            row["probabilities"] = {name: round(float(probs[i, j]), 6) for j, name in enumerate(info.names)}
            rows.append(row)
        return rows


class Regression(TextClassification):
    """One text or a pair → one number (``num_labels=1``, mean-squared-error loss)."""

    name = "regression"
    default_metrics = ("mse", "pearsonr", "spearmanr")

    def label_info(self, train, data):
        column = data.get("label_column") or "label"
        feature = train.features.get(column)
        dtype = getattr(feature, "dtype", None)
        if dtype is not None and not any(t in dtype for t in ("int", "float", "double", "bool")):
            raise DataError(f"task: regression needs numbers in the label column {column!r}, but data.train has "
                            f"{dtype} values. Use task: text-classification for label names.")
        return LabelInfo(regression=True)

    def check_labels(self, dataset, data, info, where, train_where):
        column = data.get("label_column") or "label"
        feature = dataset.features.get(column)
        dtype = getattr(feature, "dtype", None)
        if dtype is not None and not any(t in dtype for t in ("int", "float", "double", "bool")):
            raise DataError(f"{where} has non-numeric ({dtype}) values in the label column {column!r}; "
                            "task: regression needs numbers.")

    def model_kwargs(self, info):
        return {"num_labels": 1, "problem_type": "regression"}

    def tokenize_function(self, tokenizer, data, info, with_labels):
        columns = self.input_columns(data)
        label_column = data.get("label_column") or "label"
        max_length = data.get("max_length")

        def tokenize(batch):
            texts = [["" if t is None else str(t) for t in batch[c]] for c in columns]
            out = dict(tokenizer(*texts, truncation=True, max_length=max_length))
            if with_labels:
                out["labels"] = [float(v) for v in batch[label_column]]
            return out

        return tokenize

    def compute_metrics(self, metrics, info):
        if not metrics:
            return None

        def compute(eval_pred):
            preds = _logits(eval_pred.predictions).reshape(-1)
            refs = np.asarray(eval_pred.label_ids, dtype=np.float64).reshape(-1)
            return _merge_results([(m.name, m.metric.compute(predictions=preds, references=refs, **m.kwargs))
                                   for m in metrics])

        return compute

    def prediction_rows(self, predictions, ids, info, gold):
        values = _logits(predictions).reshape(len(ids), -1)[:, 0]
        rows = []
        for i, row_id in enumerate(ids):
            row = {"id": row_id, "prediction": float(values[i])}
            if gold is not None:
                row["label"] = gold[i]
            rows.append(row)
        return rows


class NotAvailableTask(Task):
    """A task name the CLI recognises but does not run yet (the Python API may already support it)."""

    available = False

    def __init__(self, name: str, hint: str):
        self.name = name
        self.hint = hint

    def error(self) -> ConfigError:
        return ConfigError(f"task: {self.name} is not available yet in the trainwright command line. {self.hint}")


TASKS: dict[str, Task] = {
    "text-classification": TextClassification(),
    "regression": Regression(),
    "token-classification": NotAvailableTask(
        "token-classification", "For now, use the Python API: Trainer with DataCollatorForTokenClassification "
        "and trainwright.data.token_classification.tokenize_and_align_labels."),
    "causal-lm": NotAvailableTask(
        "causal-lm", "For now, use the Python API: Trainer with DataCollatorForLanguageModeling(mlm=False)."),
    "seq2seq": NotAvailableTask(
        "seq2seq", "For now, use the Python API: Seq2SeqTrainer with DataCollatorForSeq2Seq."),
}

ALIASES = {"sequence-classification": "text-classification", "classification": "text-classification",
           "text_classification": "text-classification", "ner": "token-classification",
           "token_classification": "token-classification", "causal_lm": "causal-lm", "clm": "causal-lm",
           "translation": "seq2seq", "summarization": "seq2seq"}


def get_task(name) -> Task:
    """The preset for ``task: name``; an unknown name fails with the valid names and the nearest one."""
    if name is None:
        name = "text-classification"
    if not isinstance(name, str):
        raise ConfigError(f"task: must be a name, one of {', '.join(TASKS)}; got {name!r}.")
    key = ALIASES.get(name.strip().lower(), name.strip().lower())
    if key not in TASKS:
        near = difflib.get_close_matches(key, list(TASKS) + list(ALIASES), n=1, cutoff=0.5)
        hint = f" Did you mean {ALIASES.get(near[0], near[0])!r}?" if near else ""
        raise ConfigError(f"Unknown task {name!r}.{hint} Valid tasks: {', '.join(TASKS)}.")
    return TASKS[key]


def register_task(task: Task, *aliases: str) -> None:
    """Add (or replace) a preset, e.g. when a new task lands."""
    TASKS[task.name] = task
    for alias in aliases:
        ALIASES[alias] = task.name
