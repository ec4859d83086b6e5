"""``task: text-classification`` (one text or a pair → one label) and ``task: regression`` (→ one number)."""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from ...errors import ConfigError, DataError
from .base import LabelInfo, PredictionInputs, Task, check_label_names, fmt_values
from .metrics import logits_of, merge_results, softmax

if TYPE_CHECKING:
    from .metrics import MetricSpec


class TextClassification(Task):
    """One text column (``text_column``) or a pair (``text_columns: [a, b]``) → one label."""

    name = "text-classification"
    model_class = "AutoModelForSequenceClassification"
    default_metrics = ("accuracy", "f1")

    def check_data_config(self, data: dict) -> None:
        if data.get("text_column") is not None and data.get("text_columns") is not None:
            raise ConfigError("data: set either text_column (one text) or text_columns: [a, b] (a pair), not both.")
        cols = data.get("text_columns")
        if cols is not None:
            if isinstance(cols, str):
                cols = [cols]
            if not isinstance(cols, list) or not 1 <= len(cols) <= 2 or not all(isinstance(c, str) for c in cols):
                raise ConfigError(f"data.text_columns must be a list of one or two column names, e.g. "
                                  f"[sentence1, sentence2]; got {data.get('text_columns')!r}.")
        check_label_names(data, "names, e.g. [negative, positive]")

    def input_columns(self, data: dict) -> list[str]:
        cols = data.get("text_columns")
        if cols is not None:
            return [cols] if isinstance(cols, str) else list(cols)
        return [data.get("text_column") or "text"]

    def label_info(self, train: Any, data: dict) -> LabelInfo:
        column = data.get("label_column") or "label"
        values = [v for v in train.unique(column)]
        if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in values):
            raise DataError(f"data.train has rows with an empty {column!r} label: fill them in or remove those rows.")
        label_names = [str(n) for n in data["label_names"]] if data.get("label_names") is not None else None
        if label_names is not None:
            info = LabelInfo(names=list(label_names), label_names=label_names)
            unknown = [v for v in values if info.id_of(v) is None]
            if unknown:
                raise DataError(f"data.train has labels {fmt_values(sorted(unknown, key=str))} that data.label_names "
                                f"{label_names} does not name: integer labels must be 0..{len(label_names) - 1}, "
                                f"string labels must be listed in label_names.")
            return info
        try:
            values = sorted(values)
        except TypeError:  # mixed types
            values = sorted(values, key=str)
        names = [str(v) for v in values]
        if len(set(names)) != len(names):
            raise DataError(f"data.train labels {fmt_values(values)} collide once written as text: use one type per "
                            "label.")
        if len(names) < 2:
            raise DataError(f"data.train has only one label value ({fmt_values(values)}) in column {column!r}: "
                            "classification needs at least two (or use task: regression for numbers).")
        return LabelInfo(names=names)

    def check_labels(self, dataset: Any, data: dict, info: LabelInfo, where: str, train_where: str) -> None:
        column = data.get("label_column") or "label"
        unseen = []
        for v in dataset.unique(column):
            if v is None or (isinstance(v, float) and math.isnan(v)):
                raise DataError(f"{where} has rows with an empty {column!r} label: fill them in or remove those rows.")
            if info.id_of(v) is None:
                unseen.append(v)
        if unseen:
            raise DataError(f"{where} has label {fmt_values(sorted(unseen, key=str))} in column {column!r} that "
                            f"{train_where} never has; known labels: {', '.join(info.names)}. Fix the file, "
                            "drop those rows, or list every label in data.label_names.")

    def model_kwargs(self, info: LabelInfo) -> dict:
        return {"num_labels": info.num_labels, "id2label": info.id2label, "label2id": info.label2id,
                "problem_type": "single_label_classification"}

    def tokenize_function(self, tokenizer: Any, data: dict, info: LabelInfo, with_labels: bool) -> Callable:
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

    def compute_metrics(self, metrics: list[MetricSpec], info: LabelInfo, tokenizer: Any) -> Callable | None:
        if not metrics:
            return None
        multiclass = info.num_labels > 2

        def compute(eval_pred):
            logits = logits_of(eval_pred.predictions)
            preds = logits.argmax(-1)
            refs = np.asarray(eval_pred.label_ids)
            results = []
            for m in metrics:
                kwargs = dict(m.kwargs)
                if multiclass and m.metric.name in ("f1", "precision", "recall") and "average" not in kwargs:
                    kwargs["average"] = "macro"
                results.append((m.name, m.metric.compute(predictions=preds, references=refs, **kwargs)))
            return merge_results(results)

        return compute

    def prediction_rows(self, predictions: Any, inputs: PredictionInputs) -> list[dict]:
        ids, info, gold = inputs.ids, inputs.info, inputs.gold
        probs = softmax(logits_of(predictions))
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
    unused_data_keys = ("label_names",)
    default_metrics = ("mse", "pearsonr", "spearmanr")

    def label_info(self, train: Any, data: dict) -> LabelInfo:
        column = data.get("label_column") or "label"
        feature = train.features.get(column)
        dtype = getattr(feature, "dtype", None)
        if dtype is not None and not any(t in dtype for t in ("int", "float", "double", "bool")):
            raise DataError(f"task: regression needs numbers in the label column {column!r}, but data.train has "
                            f"{dtype} values. Use task: text-classification for label names.")
        return LabelInfo(regression=True)

    def check_labels(self, dataset: Any, data: dict, info: LabelInfo, where: str, train_where: str) -> None:
        column = data.get("label_column") or "label"
        feature = dataset.features.get(column)
        dtype = getattr(feature, "dtype", None)
        if dtype is not None and not any(t in dtype for t in ("int", "float", "double", "bool")):
            raise DataError(f"{where} has non-numeric ({dtype}) values in the label column {column!r}; "
                            "task: regression needs numbers.")

    def model_kwargs(self, info: LabelInfo) -> dict:
        return {"num_labels": 1, "problem_type": "regression"}

    def tokenize_function(self, tokenizer: Any, data: dict, info: LabelInfo, with_labels: bool) -> Callable:
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

    def compute_metrics(self, metrics: list[MetricSpec], info: LabelInfo, tokenizer: Any) -> Callable | None:
        if not metrics:
            return None

        def compute(eval_pred):
            preds = logits_of(eval_pred.predictions).reshape(-1)
            refs = np.asarray(eval_pred.label_ids, dtype=np.float64).reshape(-1)
            return merge_results([(m.name, m.metric.compute(predictions=preds, references=refs, **m.kwargs))
                                   for m in metrics])

        return compute

    def prediction_rows(self, predictions: Any, inputs: PredictionInputs) -> list[dict]:
        ids, gold = inputs.ids, inputs.gold
        values = logits_of(predictions).reshape(len(ids), -1)[:, 0]
        rows = []
        for i, row_id in enumerate(ids):
            row = {"id": row_id, "prediction": float(values[i])}
            if gold is not None:
                row["label"] = gold[i]
            rows.append(row)
        return rows

