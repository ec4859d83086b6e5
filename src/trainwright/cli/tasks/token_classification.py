"""``task: token-classification``: pre-split words → one tag per word (NER, POS, chunking), from CoNLL files
(``format: conll``) or rows with a list-of-words and a list-of-tags column; scored with seqeval; ``predict``
writes the tag of every word."""
from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from ...errors import ConfigError, DataError
from ..keys import Key
from .base import (
    LabelInfo,
    PredictionInputs,
    Task,
    check_bool,
    check_choice,
    check_int,
    check_label_names,
    fmt_values,
    is_int,
)
from .metrics import logits_of, merge_results
from .readers import existing_file, file_state, in_memory_dataset, where

if TYPE_CHECKING:
    from ..config import RunConfig
    from .metrics import MetricSpec

TABLE_EXTENSIONS = (".csv", ".tsv", ".tab", ".json", ".jsonl", ".ndjson", ".parquet", ".pq")


def _iob_order(tag: str):
    """O first, then by entity type, B- before I- (O, B-LOC, I-LOC, B-MISC, ...)."""
    if tag == "O":
        return (0, "", "")
    prefix, sep, kind = tag.partition("-")
    return (1, kind, prefix) if sep else (1, tag, "")


class TokenClassification(Task):
    """Pre-split words → one tag per word (NER, POS, chunking). CoNLL files (``format: conll``) or JSON/JSONL
    rows with a list-of-words column (``tokens_column``) and a list-of-tags column (``tags_column``)."""

    name = "token-classification"
    model_class = "AutoModelForTokenClassification"
    default_metrics = ("seqeval",)
    data_keys = (
        Key("format", "auto", "conll: CoNLL files; auto: CSV / JSON(L) / Parquet rows"),
        Key("tokens_column", "tokens", "the list-of-words column (CoNLL files are read into it)"),
        Key("tags_column", "ner_tags", "the list-of-tags column (label_column is accepted too)"),
        Key("token_column_index", 0, "CoNLL: the column of the word"),
        Key("label_column_index", -1, "CoNLL: the tag column (-1: the last, NER in CoNLL-2003)"),
        Key("label_all_tokens", False, "true: every sub-word carries its word's tag (default: the first)"),
    )
    unused_data_keys = ("text_column", "text_columns", "label_column")
    FORMATS = ("conll", "auto")
    METRICS = ("seqeval", "accuracy")

    # ---------------------------------------------------------------- config and files
    def tokens_column(self, data: dict) -> str:
        return data.get("tokens_column") or "tokens"

    def label_column(self, data: dict) -> str:
        return data.get("tags_column") or data.get("label_column") or "ner_tags"

    def input_columns(self, data: dict) -> list[str]:
        return [self.tokens_column(data)]

    def required_columns(self, data: dict, with_labels: bool) -> list[tuple[str, str]]:
        cols = [(self.tokens_column(data), "data.tokens_column")]
        if with_labels:
            cols.append((self.label_column(data), "data.tags_column"))
        return cols

    def cache_key(self, data: dict) -> list:
        return ["token-classification", self.label_column(data), bool(data.get("label_all_tokens"))]

    def check_data_config(self, data: dict) -> None:
        check_choice(data, "format", self.FORMATS)
        check_int(data, "token_column_index")
        check_int(data, "label_column_index")
        check_bool(data, "label_all_tokens")
        for key in ("tokens_column", "tags_column"):
            if data.get(key) is not None and not isinstance(data[key], str):
                raise ConfigError(f"data.{key} must be a column name; got {data[key]!r}.")
        ti, li = data.get("token_column_index", 0), data.get("label_column_index", -1)
        if ti == li:
            raise ConfigError(f"data.token_column_index and data.label_column_index are both {ti}: the words and the "
                              "tags must come from different columns.")
        check_label_names(data, "tags, e.g. [O, B-PER, I-PER]")

    def check_metrics(self, metrics: list[MetricSpec]) -> None:
        for m in metrics:
            if m.metric.name not in self.METRICS:
                raise ConfigError(f"task: token-classification computes {' and '.join(self.METRICS)} (entity and "
                                  f"tag scores), not {m.name!r}.")

    def read_split(self, cfg: RunConfig, split: str, value: Any) -> tuple[Any, str] | None:
        data = cfg.data
        fmt = data.get("format") or "auto"
        if fmt == "auto":
            if isinstance(value, str) and os.path.isfile(cfg.resolve_path(value)):
                ext = os.path.splitext(value)[1].lower()
                if ext not in TABLE_EXTENSIONS:
                    raise DataError(f"{where(split, value)}: cannot tell the format of {ext or 'extension-less'} "
                                    "files. For CoNLL files (one word per line, blank line between sentences) set "
                                    "data.format: conll; otherwise use JSON(L) rows with a list of words "
                                    "(data.tokens_column) and a list of tags (data.tags_column).")
            return None
        path = existing_file(cfg, split, value)
        ti, li = data.get("token_column_index", 0), data.get("label_column_index", -1)
        delimiter = data.get("delimiter")
        if delimiter is not None and "\\" in delimiter:
            delimiter = delimiter.encode().decode("unicode_escape")
        shown = where(split, value)
        sentences, tag_lists = read_conll(path, ti, li, delimiter, data.get("encoding"), shown)
        words_col, tags_col = self.tokens_column(data), self.label_column(data)
        ds = in_memory_dataset({words_col: sentences, tags_col: tag_lists}, "conll", file_state(path), ti, li,
                               delimiter, data.get("encoding"), words_col, tags_col)
        return ds, shown

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

    def label_info(self, train: Any, data: dict) -> LabelInfo:
        column = self.label_column(data)
        values = self._tag_values(train, column, "data.train")
        label_names = [str(n) for n in data["label_names"]] if data.get("label_names") is not None else \
            self._label_names_of_feature(train, column)
        if label_names is not None:
            info = LabelInfo(names=list(label_names), label_names=label_names)
            unknown = [v for v in values if info.id_of(v) is None]
            if unknown:
                raise DataError(f"data.train has tags {fmt_values(sorted(unknown, key=str))} that data.label_names "
                                f"{label_names} does not name.")
            return info
        if all(is_int(v) for v in values):
            names = [str(v) for v in sorted(values)]
        else:
            names = sorted({str(v) for v in values}, key=_iob_order)
        if len(names) < 2:
            raise DataError(f"data.train has only one tag ({fmt_values(values)}) in column {column!r}: token "
                            "classification needs at least two.")
        return LabelInfo(names=names)

    def check_labels(self, dataset: Any, data: dict, info: LabelInfo, where: str, train_where: str) -> None:
        column = self.label_column(data)
        unseen = [v for v in self._tag_values(dataset, column, where) if info.id_of(v) is None]
        if unseen:
            raise DataError(f"{where} has tag {fmt_values(sorted(unseen, key=str))} in column {column!r} that "
                            f"{train_where} never has; known tags: {', '.join(info.names)}. Fix the file or list "
                            "every tag in data.label_names.")

    def model_kwargs(self, info: LabelInfo) -> dict:
        return {"num_labels": info.num_labels, "id2label": info.id2label, "label2id": info.label2id}

    # ---------------------------------------------------------------- tokenization
    def _encode_words(self, tokenizer, data, words):
        return tokenizer([[str(w) for w in ws] for ws in words], is_split_into_words=True, truncation=True,
                         max_length=data.get("max_length"))

    def tokenize_function(self, tokenizer: Any, data: dict, info: LabelInfo, with_labels: bool) -> Callable:
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

    def collator(self, tokenizer: Any, data: dict, model: Any = None, predict: bool = False) -> Callable:
        from ...data.token_classification import DataCollatorForTokenClassification
        return DataCollatorForTokenClassification(tokenizer)

    # ---------------------------------------------------------------- metrics and predictions
    def compute_metrics(self, metrics: list[MetricSpec], info: LabelInfo, tokenizer: Any) -> Callable | None:
        if not metrics:
            return None
        names = info.names

        def compute(eval_pred):
            pred_ids = logits_of(eval_pred.predictions).argmax(-1)
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
            return merge_results(results)

        return compute

    def prediction_rows(self, predictions: Any, inputs: PredictionInputs) -> list[dict]:
        """A word's tag is the model's tag at its first sub-word; words cut off by max_length get O."""
        ids, info, gold, tokenizer, data = inputs.ids, inputs.info, inputs.gold, inputs.tokenizer, inputs.data
        logits = logits_of(predictions)
        all_words = [[str(w) for w in ws] for ws in inputs.dataset[self.tokens_column(data)]]
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



def read_conll(path: str, ti: int, li: int, delimiter: str | None, encoding: str | None,
               shown: str) -> tuple[list[list[str]], list[list[str]]]:
    """The sentences (lists of words) and their tags of a CoNLL file: word in column ``ti``, tag in ``li``,
    a blank line between sentences, ``-DOCSTART-`` lines skipped."""
    sentences, tag_lists, words, tags = [], [], [], []
    with open(path, encoding=encoding or "utf-8") as f:
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
                raise DataError(f"{shown} line {lineno} has {n} column{'s' if n != 1 else ''} ({line[:80]!r}): "
                                f"data.token_column_index={ti} and data.label_column_index={li} need two "
                                "different columns. Is it a CoNLL file (word ... tag per line)?")
            words.append(cols[ti])
            tags.append(cols[li])
    if words:
        sentences.append(words)
        tag_lists.append(tags)
    return sentences, tag_lists
