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
import os
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ...errors import ConfigError, DataError


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
    from ... import metrics as metrics_module
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
        from ...data.collator import DataCollatorWithPadding
        return DataCollatorWithPadding(tokenizer)

    # ---------------------------------------------------------------- metrics and predictions
    def compute_metrics(self, metrics: list[MetricSpec], info: LabelInfo) -> Callable | None:
        return None

    def prediction_rows(self, predictions, ids: list, info: LabelInfo, gold: list | None) -> list[dict]:
        raise NotImplementedError

    # ---------------------------------------------------------------- hooks with defaults (the CLI calls these)
    def read_split(self, cfg, split: str, value):
        """``(Dataset, where)`` for ``data.<split>`` when this task reads a format of its own (CoNLL, plain
        text, parallel files), else None: the CLI's CSV / JSON / Parquet / save_to_disk readers are used."""
        return None

    def label_column(self, data: dict) -> str | None:
        """The column holding the gold answer (written beside predictions); None when there is none."""
        return data.get("label_column") or "label"

    def required_columns(self, data: dict, with_labels: bool) -> list[tuple[str, str]]:
        """(column, config key) pairs a split must have."""
        key = "data.text_columns" if data.get("text_columns") else "data.text_column"
        cols = [(c, key) for c in self.input_columns(data)]
        if with_labels and self.needs_label_column:
            cols.append((self.label_column(data), "data.label_column"))
        return cols

    def cache_key(self, data: dict):
        """Extra settings that change the tokenized rows (part of the tokenization cache fingerprint)."""
        return None

    def check_metrics(self, metrics: list[MetricSpec]) -> None:
        """Raise ConfigError for a metric this task cannot compute."""

    def arguments_class(self):
        from ...args import TrainingArguments
        return TrainingArguments

    def trainer_class(self):
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

    def prepare_tokenizer(self, tokenizer, predict: bool = False):
        return tokenizer

    def prepare_model(self, model, tokenizer):
        return model

    def collator(self, tokenizer, data: dict, model=None, predict: bool = False):
        return self.data_collator(tokenizer, data)

    def metrics_function(self, metrics: list[MetricSpec], info: LabelInfo, tokenizer) -> Callable | None:
        return self.compute_metrics(metrics, info)

    def rows_from_output(self, output, ids: list, info: LabelInfo, gold: list | None, tokenizer, dataset,
                         data: dict) -> list[dict]:
        """Prediction rows from ``trainer.predict``'s output; ``dataset`` is the split before tokenization."""
        return self.prediction_rows(output.predictions, ids, info, gold)

    def config_defaults(self, tokenizer, info: LabelInfo) -> dict:
        """Model config values for ``model_config:`` (a model built from scratch) unless it sets them."""
        return {"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id, **self.model_kwargs(info)}

    def model_from_config(self, spec: dict, tokenizer, info: LabelInfo, seed: int = 42):
        """A newly initialised model from ``model_config: {type: llama, hidden_size: 64, ...}``."""
        import torch
        import transformers
        spec = dict(spec)
        model_type = spec.pop("type", None) or spec.pop("model_type", None)
        config = transformers.AutoConfig.for_model(model_type, **{**self.config_defaults(tokenizer, info), **spec})
        cls = getattr(transformers, self.model_class)
        torch.manual_seed(seed)
        try:
            return cls.from_config(config)
        except ValueError as e:
            raise ConfigError(f"model_config: type {model_type!r} has no {self.model_class} model "
                              f"(task: {self.name}): {e}") from e


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


# ====================================================================== task-specific files
def _where(split: str, value) -> str:
    return f"data.{split} ({value})"


def _existing_file(cfg, split: str, value, what: str = "") -> str:
    if not isinstance(value, (str, os.PathLike)):
        raise ConfigError(f"data.{split}{what} must be a file path; got {value!r}.")
    value = os.fspath(value)
    path = cfg.resolve_path(value)
    if not os.path.isfile(path):
        beside = "" if os.path.isabs(value) else f" and {os.path.join(cfg.config_dir, value)}"
        kind = "a directory, not a file" if os.path.isdir(path) else "no such file"
        raise DataError(f"data.{split}{what} ({value}): {kind} (looked for {path}{beside}).")
    return path


def _in_memory_dataset(columns: dict, *identity):
    """A ``datasets.Dataset`` with a fingerprint from the file(s) it was read from (path, size, mtime) and the
    reading options, so the tokenization cache recognises an unchanged file."""
    import hashlib
    import json

    import datasets
    fingerprint = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]
    ds = datasets.Dataset.from_dict(columns)
    return datasets.Dataset(ds.data, info=ds.info, fingerprint=fingerprint)


def _file_state(path: str) -> list:
    st = os.stat(path)
    return [os.path.abspath(path), st.st_size, st.st_mtime_ns]


def _check_int(data: dict, key: str, minimum: int | None = None) -> None:
    v = data.get(key)
    if v is None:
        return
    if not isinstance(v, int) or isinstance(v, bool) or (minimum is not None and v < minimum):
        need = "an integer" if minimum is None else \
            ("a positive integer" if minimum == 1 else f"an integer >= {minimum}")
        raise ConfigError(f"data.{key} must be {need}; got {v!r}.")


def _check_choice(data: dict, key: str, choices) -> None:
    v = data.get(key)
    if v is not None and v not in choices:
        near = difflib.get_close_matches(str(v), list(choices), n=1, cutoff=0.5)
        hint = f" Did you mean {near[0]!r}?" if near else ""
        raise ConfigError(f"data.{key}: {v!r} is not one of {', '.join(choices)}.{hint}")


def _check_bool(data: dict, key: str) -> None:
    v = data.get(key)
    if v is not None and not isinstance(v, bool):
        raise ConfigError(f"data.{key} must be true or false; got {v!r}.")


def _eos_id(tokenizer) -> int | None:
    """The end-of-text token (eos, else BERT's [SEP]): appended to every document of a causal-LM corpus."""
    for name in ("eos_token_id", "sep_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            return int(value)
    return None


def _decode(tokenizer, ids) -> list[str]:
    ids = np.asarray(ids)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = np.where(ids < 0, pad, ids)
    return [t.strip() for t in tokenizer.batch_decode(ids.tolist(), skip_special_tokens=True)]


def _set_pad_token_id(model, tokenizer):
    """Generation pads finished rows with the pad id: take the tokenizer's when the model has none."""
    for config in (getattr(model, "config", None), getattr(model, "generation_config", None)):
        if config is not None and getattr(config, "pad_token_id", None) is None and tokenizer.pad_token_id is not None:
            config.pad_token_id = tokenizer.pad_token_id
    return model


def _iob_order(tag: str):
    """O first, then by entity type, B- before I- (O, B-LOC, I-LOC, B-MISC, ...)."""
    if tag == "O":
        return (0, "", "")
    prefix, sep, kind = tag.partition("-")
    return (1, kind, prefix) if sep else (1, tag, "")


# ====================================================================== token classification
class TokenClassification(Task):
    """Pre-split words → one tag per word (NER, POS, chunking). CoNLL files (``format: conll``) or JSON/JSONL
    rows with a list-of-words column (``tokens_column``) and a list-of-tags column (``tags_column``)."""

    name = "token-classification"
    model_class = "AutoModelForTokenClassification"
    default_metrics = ("seqeval",)
    data_keys = ("format", "tokens_column", "tags_column", "token_column_index", "label_column_index",
                 "label_all_tokens")
    FORMATS = ("conll", "auto")
    METRICS = ("seqeval", "accuracy")

    # ---------------------------------------------------------------- config and files
    def tokens_column(self, data) -> str:
        return data.get("tokens_column") or "tokens"

    def label_column(self, data) -> str:
        return data.get("tags_column") or data.get("label_column") or "ner_tags"

    def input_columns(self, data):
        return [self.tokens_column(data)]

    def required_columns(self, data, with_labels):
        cols = [(self.tokens_column(data), "data.tokens_column")]
        if with_labels:
            cols.append((self.label_column(data), "data.tags_column"))
        return cols

    def cache_key(self, data):
        return ["token-classification", self.label_column(data), bool(data.get("label_all_tokens"))]

    def check_data_config(self, data):
        _check_choice(data, "format", self.FORMATS)
        _check_int(data, "token_column_index")
        _check_int(data, "label_column_index")
        _check_bool(data, "label_all_tokens")
        for key in ("tokens_column", "tags_column"):
            if data.get(key) is not None and not isinstance(data[key], str):
                raise ConfigError(f"data.{key} must be a column name; got {data[key]!r}.")
        ti, li = data.get("token_column_index", 0), data.get("label_column_index", -1)
        if ti == li:
            raise ConfigError(f"data.token_column_index and data.label_column_index are both {ti}: the words and the "
                              "tags must come from different columns.")
        if data.get("label_names") is not None:
            ln = data["label_names"]
            if not isinstance(ln, list) or not ln or len(set(map(str, ln))) != len(ln):
                raise ConfigError(f"data.label_names must be a list of distinct tags, e.g. [O, B-PER, I-PER]; "
                                  f"got {ln!r}.")

    def check_metrics(self, metrics):
        for m in metrics:
            if m.metric.name not in self.METRICS:
                raise ConfigError(f"task: token-classification computes {' and '.join(self.METRICS)} (entity and "
                                  f"tag scores), not {m.name!r}.")

    def read_split(self, cfg, split, value):
        data = cfg.data
        fmt = data.get("format") or "auto"
        if fmt == "auto":
            if isinstance(value, str) and os.path.isfile(cfg.resolve_path(value)):
                ext = os.path.splitext(value)[1].lower()
                if ext not in (".csv", ".tsv", ".tab", ".json", ".jsonl", ".ndjson", ".parquet", ".pq"):
                    raise DataError(f"{_where(split, value)}: cannot tell the format of {ext or 'extension-less'} "
                                    "files. For CoNLL files (one word per line, blank line between sentences) set "
                                    "data.format: conll; otherwise use JSON(L) rows with a list of words "
                                    "(data.tokens_column) and a list of tags (data.tags_column).")
            return None
        path = _existing_file(cfg, split, value)
        ti, li = data.get("token_column_index", 0), data.get("label_column_index", -1)
        delimiter = data.get("delimiter")
        if delimiter is not None and "\\" in delimiter:
            delimiter = delimiter.encode().decode("unicode_escape")
        where = _where(split, value)
        words_col, tags_col = self.tokens_column(data), self.label_column(data)
        sentences, tag_lists, words, tags = [], [], [], []
        with open(path, encoding=data.get("encoding") or "utf-8") as f:
            for lineno, line in enumerate(f, 1):
                line = line.rstrip("\r\n")
                if not line.strip() or line.startswith("-DOCSTART-"):
                    if words:
                        sentences.append(words)
                        tag_lists.append(tags)
                        words, tags = [], []
                    continue
                cols = line.split(delimiter) if delimiter else line.split()
                n = len(cols)
                if not (-n <= ti < n and -n <= li < n) or ti % n == li % n:
                    raise DataError(f"{where} line {lineno} has {n} column{'s' if n != 1 else ''} ({line[:80]!r}): "
                                    f"data.token_column_index={ti} and data.label_column_index={li} need two "
                                    "different columns. Is it a CoNLL file (word ... tag per line)?")
                words.append(cols[ti])
                tags.append(cols[li])
        if words:
            sentences.append(words)
            tag_lists.append(tags)
        ds = _in_memory_dataset({words_col: sentences, tags_col: tag_lists}, "conll", _file_state(path), ti, li,
                                delimiter, data.get("encoding"), words_col, tags_col)
        return ds, where

    # ---------------------------------------------------------------- labels
    def _label_names_of_feature(self, dataset, column):
        feature = dataset.features.get(column)
        inner = getattr(feature, "feature", None)
        names = getattr(inner, "names", None)
        return [str(n) for n in names] if names else None

    def _tag_values(self, dataset, column, where) -> set:
        values = set()
        for i, tags in enumerate(dataset[column]):
            if tags is None or isinstance(tags, str):
                raise DataError(f"{where}: row {i} of column {column!r} is {tags!r}, not a list of tags "
                                "(one per word).")
            values.update(tags)
        if None in values:
            raise DataError(f"{where} has empty tags in column {column!r}: every word needs a tag.")
        return values

    def label_info(self, train, data):
        column = self.label_column(data)
        values = self._tag_values(train, column, "data.train")
        label_names = [str(n) for n in data["label_names"]] if data.get("label_names") is not None else \
            self._label_names_of_feature(train, column)
        if label_names is not None:
            info = LabelInfo(names=list(label_names), label_names=label_names)
            unknown = [v for v in values if info.id_of(v) is None]
            if unknown:
                raise DataError(f"data.train has tags {_fmt_values(sorted(unknown, key=str))} that data.label_names "
                                f"{label_names} does not name.")
            return info
        if all(_is_int(v) for v in values):
            names = [str(v) for v in sorted(values)]
        else:
            names = sorted({str(v) for v in values}, key=_iob_order)
        if len(names) < 2:
            raise DataError(f"data.train has only one tag ({_fmt_values(values)}) in column {column!r}: token "
                            "classification needs at least two.")
        return LabelInfo(names=names)

    def check_labels(self, dataset, data, info, where, train_where):
        column = self.label_column(data)
        unseen = [v for v in self._tag_values(dataset, column, where) if info.id_of(v) is None]
        if unseen:
            raise DataError(f"{where} has tag {_fmt_values(sorted(unseen, key=str))} in column {column!r} that "
                            f"{train_where} never has; known tags: {', '.join(info.names)}. Fix the file or list "
                            "every tag in data.label_names.")

    def model_kwargs(self, info):
        return {"num_labels": info.num_labels, "id2label": info.id2label, "label2id": info.label2id}

    # ---------------------------------------------------------------- tokenization
    def _encode_words(self, tokenizer, data, words):
        return tokenizer([[str(w) for w in ws] for ws in words], is_split_into_words=True, truncation=True,
                         max_length=data.get("max_length"))

    def tokenize_function(self, tokenizer, data, info, with_labels):
        from ...data.token_classification import tokenize_and_align_labels
        if not getattr(tokenizer, "is_fast", True):
            raise ConfigError("task: token-classification needs a fast tokenizer (tokenizer.json) to align words "
                              "with sub-words.")
        words_col, tags_col = self.tokens_column(data), self.label_column(data)
        align = tokenize_and_align_labels(tokenizer, words_column="words", labels_column="tag_ids",
                                          max_length=data.get("max_length"),
                                          label_all_tokens=bool(data.get("label_all_tokens")))
        id_of = info.id_of

        def tokenize(batch):
            b = {"words": [[str(w) for w in ws] for ws in batch[words_col]]}
            if with_labels:
                b["tag_ids"] = [[id_of(t) for t in tags] for tags in batch[tags_col]]
            return align(b)

        return tokenize

    def data_collator(self, tokenizer, data):
        from ...data.token_classification import DataCollatorForTokenClassification
        return DataCollatorForTokenClassification(tokenizer)

    # ---------------------------------------------------------------- metrics and predictions
    def compute_metrics(self, metrics, info):
        if not metrics:
            return None
        names = info.names

        def compute(eval_pred):
            pred_ids = _logits(eval_pred.predictions).argmax(-1)
            label_ids = np.asarray(eval_pred.label_ids)
            preds, refs = [], []
            for p_row, l_row in zip(pred_ids, label_ids):
                keep = l_row != -100
                preds.append([names[int(p)] for p in p_row[keep]])
                refs.append([names[int(t)] for t in l_row[keep]])
            results = []
            for m in metrics:
                if m.metric.name == "seqeval":
                    kwargs = {"zero_division": 0, **m.kwargs}
                    r = m.metric.compute(predictions=preds, references=refs, **kwargs)
                    results.append((m.name, {k: v for k, v in r.items() if k.startswith("overall_")}))
                else:  # tag accuracy over all labelled words
                    flat_p = [names.index(t) for row in preds for t in row]
                    flat_r = [names.index(t) for row in refs for t in row]
                    results.append((m.name, m.metric.compute(predictions=flat_p, references=flat_r, **m.kwargs)))
            return _merge_results(results)

        return compute

    def rows_from_output(self, output, ids, info, gold, tokenizer, dataset, data):
        logits = _logits(output.predictions)
        words_col = self.tokens_column(data)
        all_words = [[str(w) for w in ws] for ws in dataset[words_col]]
        fill = "O" if "O" in info.names else info.names[0]
        rows, step = [], 256
        for start in range(0, len(all_words), step):
            chunk = all_words[start:start + step]
            enc = self._encode_words(tokenizer, data, chunk)
            for j, words in enumerate(chunk):
                i = start + j
                tags = [fill] * len(words)
                seen = set()
                for pos, word_id in enumerate(enc.word_ids(j)):
                    if word_id is None or word_id in seen:
                        continue
                    seen.add(word_id)
                    tags[word_id] = info.names[int(logits[i, pos].argmax())]
                row = {"id": ids[i], "tokens": words, "predicted_tags": tags}
                if gold is not None:
                    row["tags"] = [info.name_of(t) for t in gold[i]]
                rows.append(row)
        return rows


# ====================================================================== causal language modelling
class CausalLM(Task):
    """Plain text → next-token prediction: a text file (``format: text``) or a text column, cut into blocks of
    ``block_size`` tokens (``packing: true`` packs whole documents into rows instead). Reports eval_loss and
    eval_perplexity; ``predict`` continues prompts (greedy, ``max_new_tokens``)."""

    name = "causal-lm"
    model_class = "AutoModelForCausalLM"
    default_metrics = ()
    data_keys = ("format", "block_size", "packing", "sample_by", "prompt_column", "max_new_tokens")
    needs_label_column = False
    FORMATS = ("text", "auto")
    SAMPLE_BY = ("paragraph", "line", "document")
    DEFAULT_BLOCK_SIZE = 128
    DEFAULT_MAX_NEW_TOKENS = 50
    DEFAULT_PROMPT_LENGTH = 64

    def text_column(self, data) -> str:
        return data.get("text_column") or "text"

    def prompt_column(self, data) -> str:
        return data.get("prompt_column") or self.text_column(data)

    def label_column(self, data):
        return None

    def input_columns(self, data):
        return [self.text_column(data)]

    def required_columns(self, data, with_labels):
        if with_labels:
            return [(self.text_column(data), "data.text_column")]
        return [(self.prompt_column(data), "data.prompt_column" if data.get("prompt_column") else "data.text_column")]

    def block_size(self, data) -> int:
        return data.get("block_size") or self.DEFAULT_BLOCK_SIZE

    def cache_key(self, data):
        return ["causal-lm", self.block_size(data), bool(data.get("packing")), self.prompt_column(data)]

    def check_data_config(self, data):
        _check_choice(data, "format", self.FORMATS)
        _check_choice(data, "sample_by", self.SAMPLE_BY)
        _check_int(data, "block_size", 2)
        _check_int(data, "max_new_tokens", 1)
        _check_bool(data, "packing")
        if data.get("prompt_column") is not None and not isinstance(data["prompt_column"], str):
            raise ConfigError(f"data.prompt_column must be a column name; got {data['prompt_column']!r}.")

    def check_metrics(self, metrics):
        for m in metrics:
            if m.metric.name != "perplexity":
                raise ConfigError(f"task: causal-lm reports eval_loss and eval_perplexity only; metric {m.name!r} "
                                  "cannot be computed from next-token predictions here. Use metrics: [] or "
                                  "[perplexity].")

    def read_split(self, cfg, split, value):
        data = cfg.data
        fmt = data.get("format") or "auto"
        is_text = fmt == "text" or (fmt == "auto" and isinstance(value, str)
                                    and os.path.splitext(value)[1].lower() in (".txt", ".text", ".md"))
        if not is_text:
            return None
        path = _existing_file(cfg, split, value)
        with open(path, encoding=data.get("encoding") or "utf-8") as f:
            text = f.read()
        # a test file holds one prompt per line; training text is split as data.sample_by says
        sample_by = "line" if split == "test" else (data.get("sample_by") or "paragraph")
        if sample_by == "document":
            docs = [text]
        elif sample_by == "line":
            docs = [line.strip() for line in text.splitlines() if line.strip()]
        else:
            docs, current = [], []
            for line in text.splitlines():
                if line.strip():
                    current.append(line)
                elif current:
                    docs.append("\n".join(current))
                    current = []
            if current:
                docs.append("\n".join(current))
        column = self.prompt_column(data) if split == "test" else self.text_column(data)
        ds = _in_memory_dataset({column: docs}, "text", _file_state(path), sample_by, column, data.get("encoding"))
        return ds, _where(split, value)

    # ---------------------------------------------------------------- tokenization
    def tokenize_function(self, tokenizer, data, info, with_labels):
        sep = _eos_id(tokenizer)
        if not with_labels:  # prompts to continue
            column = self.prompt_column(data)
            max_length = data.get("max_length") or self.DEFAULT_PROMPT_LENGTH
            start = [sep] if sep is not None else [tokenizer.pad_token_id or 0]

            def prompts(batch):
                texts = ["" if t is None else str(t) for t in batch[column]]
                ids = tokenizer(texts, add_special_tokens=False, truncation=True, max_length=max_length)["input_ids"]
                ids = [x if x else list(start) for x in ids]
                return {"input_ids": ids, "attention_mask": [[1] * len(x) for x in ids]}

            return prompts

        column, block, packing = self.text_column(data), self.block_size(data), bool(data.get("packing"))

        def blocks(batch):
            texts = ["" if t is None else str(t) for t in batch[column]]
            docs = [d + ([sep] if sep is not None else []) for d in
                    tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"] if d]  # cut below
            if packing:  # whole documents (longer ones in block_size pieces) packed into rows of block_size tokens
                from ...data.packing import pack_dataset
                pieces = [{"input_ids": d[i:i + block]} for d in docs for i in range(0, len(d), block)]
                rows = pack_dataset([p for p in pieces if len(p["input_ids"]) >= 2], max_length=block,
                                    strategy="sequential")
                return {"input_ids": [r["input_ids"] for r in rows], "position_ids": [r["position_ids"] for r in rows]}
            ids = [t for d in docs for t in d]  # the text as one stream, cut into blocks
            out = [ids[i:i + block] for i in range(0, len(ids), block)]
            out = [b for b in out if len(b) >= 2]
            return {"input_ids": out, "attention_mask": [[1] * len(b) for b in out]}

        return blocks

    def collator(self, tokenizer, data, model=None, predict=False):
        if predict:
            from ...data.collator import DataCollatorWithPadding
            return DataCollatorWithPadding(tokenizer)
        if data.get("packing"):
            from ...data.packing import DataCollatorForPackedRows
            return DataCollatorForPackedRows(pad_token_id=tokenizer.pad_token_id or 0)
        from ...data.language_modeling import DataCollatorForLanguageModeling
        return DataCollatorForLanguageModeling(tokenizer, mlm=False)

    def prepare_tokenizer(self, tokenizer, predict=False):
        if tokenizer.pad_token is None and getattr(tokenizer, "eos_token", None) is not None:
            tokenizer.pad_token = tokenizer.eos_token  # GPT-2 / Llama tokenizers have no pad token
        if predict:
            tokenizer.padding_side = "left"  # prompts end where generation starts
        return tokenizer

    def prepare_model(self, model, tokenizer):
        return _set_pad_token_id(model, tokenizer)

    def config_defaults(self, tokenizer, info):
        return {"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id,
                "bos_token_id": getattr(tokenizer, "bos_token_id", None) or getattr(tokenizer, "cls_token_id", None),
                "eos_token_id": _eos_id(tokenizer)}

    # ---------------------------------------------------------------- training and predictions
    def arguments_class(self):
        from ...seq2seq import Seq2SeqTrainingArguments
        return Seq2SeqTrainingArguments

    def trainer_class(self):
        return _causal_lm_trainer()

    def training_defaults(self, data):
        return {"prediction_loss_only": True}  # the loss is all evaluation needs: never gather the logits

    def predict_overrides(self, data):
        return {"prediction_loss_only": False, "predict_with_generate": True, "use_cache": True}

    def predict_kwargs(self, data):
        return {"max_new_tokens": data.get("max_new_tokens") or self.DEFAULT_MAX_NEW_TOKENS, "do_sample": False}

    def rows_from_output(self, output, ids, info, gold, tokenizer, dataset, data):
        prompts = dataset[self.prompt_column(data)]
        generated = _decode(tokenizer, output.predictions)
        return [{"id": ids[i], "prompt": prompts[i], "generated": generated[i]} for i in range(len(ids))]

    def metrics_function(self, metrics, info, tokenizer):
        return None  # eval_perplexity comes from eval_loss (see _causal_lm_trainer)

    def data_collator(self, tokenizer, data):
        return self.collator(tokenizer, data)


def _causal_lm_trainer():
    """Seq2SeqTrainer (so that predict can generate) whose evaluations also log ``<prefix>_perplexity``."""
    global _CAUSAL_LM_TRAINER
    if _CAUSAL_LM_TRAINER is None:
        from ...metrics import perplexity_from_loss
        from ...seq2seq import Seq2SeqTrainer

        class CausalLMTrainer(Seq2SeqTrainer):
            def evaluation_loop(self, *args, **kwargs):
                output = super().evaluation_loop(*args, **kwargs)
                for key in [k for k in output.metrics if k.endswith("_loss")]:
                    output.metrics[key[:-len("loss")] + "perplexity"] = perplexity_from_loss(output.metrics[key])
                return output

        _CAUSAL_LM_TRAINER = CausalLMTrainer
    return _CAUSAL_LM_TRAINER


_CAUSAL_LM_TRAINER = None


# ====================================================================== sequence to sequence
class Seq2Seq(Task):
    """Source text → target text (translation, summarisation): two parallel text files per split
    (``train: {source_file: train.en, target_file: train.de}``) or CSV/JSON(L) rows with ``source_column`` and
    ``target_column``. Evaluates by generating (``eval_bleu``); ``predict`` writes the generated text."""

    name = "seq2seq"
    model_class = "AutoModelForSeq2SeqLM"
    default_metrics = ("sacrebleu",)
    data_keys = ("source_column", "target_column", "source_prefix", "max_target_length")
    SPLIT_KEYS = ("source_file", "target_file")
    METRICS = ("sacrebleu", "bleu", "rouge")
    DEFAULT_MAX_TARGET_LENGTH = 128

    def source_column(self, data) -> str:
        return data.get("source_column") or "source"

    def label_column(self, data) -> str:
        return data.get("target_column") or "target"

    def input_columns(self, data):
        return [self.source_column(data)]

    def required_columns(self, data, with_labels):
        cols = [(self.source_column(data), "data.source_column")]
        if with_labels:
            cols.append((self.label_column(data), "data.target_column"))
        return cols

    def cache_key(self, data):
        return ["seq2seq", self.label_column(data), data.get("source_prefix") or "", data.get("max_target_length")]

    def check_data_config(self, data):
        _check_int(data, "max_target_length", 1)
        for key in ("source_column", "target_column", "source_prefix"):
            if data.get(key) is not None and not isinstance(data[key], str):
                raise ConfigError(f"data.{key} must be a string; got {data[key]!r}.")
        for split in ("train", "validation", "test"):
            value = data.get(split)
            if not isinstance(value, dict):
                continue
            if data.get("dataset"):
                raise ConfigError(f"data.{split}: with data.dataset, name a split of it, not files.")
            for key in value:
                if key not in self.SPLIT_KEYS:
                    near = difflib.get_close_matches(str(key), self.SPLIT_KEYS, n=1, cutoff=0.6)
                    hint = f" Did you mean 'data.{split}.{near[0]}'?" if near else ""
                    raise ConfigError(f"unknown key 'data.{split}.{key}'.{hint} Valid keys in data.{split}: "
                                      f"{', '.join(self.SPLIT_KEYS)}.")
            if not value.get("source_file"):
                raise ConfigError(f"data.{split} needs source_file: (and target_file:), the two line-aligned "
                                  "text files.")
            if split != "test" and not value.get("target_file"):
                raise ConfigError(f"data.{split} needs target_file: the references, line-aligned with source_file.")

    def check_metrics(self, metrics):
        for m in metrics:
            if m.metric.name not in self.METRICS:
                raise ConfigError(f"task: seq2seq scores generated text with {', '.join(self.METRICS)}; "
                                  f"not {m.name!r}.")

    def read_split(self, cfg, split, value):
        if not isinstance(value, dict):
            return None
        data = cfg.data
        columns, state, shown = {}, [], []
        for key, column in (("source_file", self.source_column(data)), ("target_file", self.label_column(data))):
            if not value.get(key):
                continue
            path = _existing_file(cfg, split, value[key], f".{key}")
            with open(path, encoding=data.get("encoding") or "utf-8") as f:
                columns[column] = [line.strip() for line in f.read().splitlines()]
            state.append(_file_state(path))
            shown.append(str(value[key]))
        lengths = {len(v) for v in columns.values()}
        where = f"data.{split} ({' + '.join(shown)})"
        if len(lengths) > 1:
            n_src, n_tgt = (len(v) for v in columns.values())
            raise DataError(f"{where}: source_file has {n_src:,} lines but target_file has {n_tgt:,}; line i of one "
                            "must be the translation of line i of the other.")
        return _in_memory_dataset(columns, "parallel", state, sorted(columns), data.get("encoding")), where

    # ---------------------------------------------------------------- tokenization
    def tokenize_function(self, tokenizer, data, info, with_labels):
        src, tgt = self.source_column(data), self.label_column(data)
        prefix = data.get("source_prefix") or ""
        max_length = data.get("max_length")
        max_target = data.get("max_target_length") or self.DEFAULT_MAX_TARGET_LENGTH

        def tokenize(batch):
            sources = [prefix + ("" if t is None else str(t)) for t in batch[src]]
            out = dict(tokenizer(sources, truncation=True, max_length=max_length))
            out.pop("token_type_ids", None)  # encoder-decoder models (and generate) take no segment ids
            if with_labels:
                targets = ["" if t is None else str(t) for t in batch[tgt]]
                out["labels"] = tokenizer(text_target=targets, truncation=True, max_length=max_target)["input_ids"]
            return out

        return tokenize

    def collator(self, tokenizer, data, model=None, predict=False):
        from ...data.seq2seq import DataCollatorForSeq2Seq
        return DataCollatorForSeq2Seq(tokenizer, model=model)

    def data_collator(self, tokenizer, data):
        return self.collator(tokenizer, data)

    def config_defaults(self, tokenizer, info):
        bos = getattr(tokenizer, "bos_token_id", None)
        bos = bos if bos is not None else getattr(tokenizer, "cls_token_id", None)
        start = bos if bos is not None else tokenizer.pad_token_id  # T5 starts decoding from the pad token
        return {"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id, "bos_token_id": bos,
                "eos_token_id": _eos_id(tokenizer), "decoder_start_token_id": start, "forced_eos_token_id": None}

    # ---------------------------------------------------------------- training, metrics and predictions
    def arguments_class(self):
        from ...seq2seq import Seq2SeqTrainingArguments
        return Seq2SeqTrainingArguments

    def trainer_class(self):
        from ...seq2seq import Seq2SeqTrainer
        return Seq2SeqTrainer

    def training_defaults(self, data):
        return {"predict_with_generate": True,
                "generation_max_length": data.get("max_target_length") or self.DEFAULT_MAX_TARGET_LENGTH}

    def predict_overrides(self, data):
        return {"predict_with_generate": True, "prediction_loss_only": False}

    def metrics_function(self, metrics, info, tokenizer):
        if not metrics:
            return None
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

        def compute(eval_pred):
            preds = np.asarray(_logits(eval_pred.predictions))
            decoded = _decode(tokenizer, preds)
            refs = _decode(tokenizer, eval_pred.label_ids)
            results = []
            for m in metrics:
                if m.metric.name == "sacrebleu":
                    r = m.metric.compute(predictions=decoded, references=[[r] for r in refs], **m.kwargs)
                    results.append((m.name, {"bleu": r["score"]}))
                elif m.metric.name == "bleu":
                    r = m.metric.compute(predictions=decoded, references=[[r] for r in refs], **m.kwargs)
                    results.append((m.name, {"bleu": r["bleu"]}))
                else:
                    results.append((m.name, m.metric.compute(predictions=decoded, references=refs, **m.kwargs)))
            merged = _merge_results(results)
            merged["gen_len"] = float(np.mean(np.count_nonzero((preds != pad) & (preds >= 0), axis=-1)))
            return merged

        return compute

    def rows_from_output(self, output, ids, info, gold, tokenizer, dataset, data):
        sources = dataset[self.source_column(data)]
        generated = _decode(tokenizer, output.predictions)
        rows = []
        for i, row_id in enumerate(ids):
            row = {"id": row_id, "source": sources[i], "generated": generated[i]}
            if gold is not None:
                row["target"] = gold[i]
            rows.append(row)
        return rows

    def prepare_model(self, model, tokenizer):
        return _set_pad_token_id(model, tokenizer)


def check_model_config(spec, task: Task, where: str = "model_config") -> None:
    """``model_config: {type: llama, hidden_size: 64, ...}``: a known model type and only its config's keys."""
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: must be a mapping such as {{type: llama, hidden_size: 64}}; got {spec!r}.")
    model_type = spec.get("type", spec.get("model_type"))
    from transformers import CONFIG_MAPPING
    known = list(CONFIG_MAPPING.keys())
    if not isinstance(model_type, str) or model_type not in known:
        near = difflib.get_close_matches(str(model_type), known, n=1, cutoff=0.6)
        hint = f" Did you mean {near[0]!r}?" if near else ""
        raise ConfigError(f"{where}: type {model_type!r} is not a transformers model type.{hint} "
                          "Examples: llama, gpt2 (causal-lm), bart, t5 (seq2seq), bert (token-classification).")
    import inspect
    config_class = CONFIG_MAPPING[model_type]
    valid = set(config_class().to_dict()) | set(getattr(config_class, "attribute_map", {}) or {})
    for cls in config_class.__mro__:
        init = cls.__dict__.get("__init__")
        if init is not None:
            valid |= {p for p in inspect.signature(init).parameters if p not in ("self", "kwargs")}
    for key in spec:
        if key in ("type", "model_type"):
            continue
        if key not in valid:
            near = difflib.get_close_matches(str(key), sorted(valid), n=1, cutoff=0.6)
            hint = f" Did you mean '{where}.{near[0]}'?" if near else ""
            raise ConfigError(f"unknown key '{where}.{key}' for a {config_class.__name__}.{hint}")


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
    "token-classification": TokenClassification(),
    "causal-lm": CausalLM(),
    "seq2seq": Seq2Seq(),
}

ALIASES = {"sequence-classification": "text-classification", "classification": "text-classification",
           "text_classification": "text-classification", "ner": "token-classification",
           "token_classification": "token-classification", "causal_lm": "causal-lm", "clm": "causal-lm",
           "translation": "seq2seq", "summarization": "seq2seq", "text-generation": "causal-lm",
           "language-modeling": "causal-lm"}


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
