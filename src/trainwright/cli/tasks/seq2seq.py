"""``task: seq2seq``: source text → target text (translation, summarisation), from two line-aligned text files
per split or source/target columns; evaluates by generating (sacrebleu, bleu, rouge); ``predict`` writes the
generated text."""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from ...errors import ConfigError, DataError, did_you_mean
from ..keys import Key
from .base import PredictionInputs, Task, check_int
from .generation import decode, eos_id, set_pad_token_id
from .metrics import logits_of, merge_results
from .readers import existing_file, file_state, in_memory_dataset

if TYPE_CHECKING:
    from ...seq2seq import Seq2SeqTrainer, Seq2SeqTrainingArguments
    from ..config import RunConfig
    from .base import LabelInfo
    from .metrics import MetricSpec


class Seq2Seq(Task):
    """Source text → target text (translation, summarisation): two parallel text files per split
    (``train: {source_file: train.en, target_file: train.de}``) or CSV/JSON(L) rows with ``source_column`` and
    ``target_column``. Evaluates by generating (``eval_bleu``); ``predict`` writes the generated text."""

    name = "seq2seq"
    model_class = "AutoModelForSeq2SeqLM"
    default_metrics = ("sacrebleu",)
    SPLIT_KEYS = ("source_file", "target_file")
    METRICS = ("sacrebleu", "bleu", "rouge")
    DEFAULT_MAX_TARGET_LENGTH = 128
    data_keys = (
        Key("source_column", "source", "the source text column (source_file is read into it)"),
        Key("target_column", "target", "the target text column (target_file is read into it)"),
        Key("source_prefix", "", "put before every source, e.g. 'translate English to German: '"),
        Key("max_target_length", DEFAULT_MAX_TARGET_LENGTH, "truncate targets (and default generation_max_length)"),
    )
    unused_data_keys = ("text_column", "text_columns", "label_column", "label_names")

    def source_column(self, data: dict) -> str:
        return data.get("source_column") or "source"

    def label_column(self, data: dict) -> str:
        return data.get("target_column") or "target"

    def input_columns(self, data: dict) -> list[str]:
        return [self.source_column(data)]

    def required_columns(self, data: dict, with_labels: bool) -> list[tuple[str, str]]:
        cols = [(self.source_column(data), "data.source_column")]
        if with_labels:
            cols.append((self.label_column(data), "data.target_column"))
        return cols

    def cache_key(self, data: dict) -> list:
        return ["seq2seq", self.label_column(data), data.get("source_prefix") or "", data.get("max_target_length")]

    def check_data_config(self, data: dict) -> None:
        check_int(data, "max_target_length", 1)
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
                    hint = did_you_mean(key, self.SPLIT_KEYS, show=lambda m, split=split: f"'data.{split}.{m}'")
                    raise ConfigError(f"unknown key 'data.{split}.{key}'.{hint} Valid keys in data.{split}: "
                                      f"{', '.join(self.SPLIT_KEYS)}.")
            if not value.get("source_file"):
                raise ConfigError(f"data.{split} needs source_file: (and target_file:), the two line-aligned "
                                  "text files.")
            if split != "test" and not value.get("target_file"):
                raise ConfigError(f"data.{split} needs target_file: the references, line-aligned with source_file.")

    def check_metrics(self, metrics: list[MetricSpec]) -> None:
        for m in metrics:
            if m.metric.name not in self.METRICS:
                raise ConfigError(f"task: seq2seq scores generated text with {', '.join(self.METRICS)}; "
                                  f"not {m.name!r}.")

    def read_split(self, cfg: RunConfig, split: str, value: Any) -> tuple[Any, str] | None:
        if not isinstance(value, dict):
            return None
        data = cfg.data
        columns, state, shown = {}, [], []
        for key, column in (("source_file", self.source_column(data)), ("target_file", self.label_column(data))):
            if not value.get(key):
                continue
            path = existing_file(cfg, split, value[key], f".{key}")
            with open(path, encoding=data.get("encoding") or "utf-8") as f:
                columns[column] = [line.strip() for line in f.read().splitlines()]
            state.append(file_state(path))
            shown.append(str(value[key]))
        lengths = {len(v) for v in columns.values()}
        where = f"data.{split} ({' + '.join(shown)})"
        if len(lengths) > 1:
            n_src, n_tgt = (len(v) for v in columns.values())
            raise DataError(f"{where}: source_file has {n_src:,} lines but target_file has {n_tgt:,}; line i of one "
                            "must be the translation of line i of the other.")
        return in_memory_dataset(columns, "parallel", state, sorted(columns), data.get("encoding")), where

    # ---------------------------------------------------------------- tokenization
    def tokenize_function(self, tokenizer: Any, data: dict, info: LabelInfo, with_labels: bool) -> Callable:
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

    def collator(self, tokenizer: Any, data: dict, model: Any = None, predict: bool = False) -> Callable:
        from ...data.seq2seq import DataCollatorForSeq2Seq
        return DataCollatorForSeq2Seq(tokenizer, model=model)

    def config_defaults(self, tokenizer: Any, info: LabelInfo) -> dict:
        bos = getattr(tokenizer, "bos_token_id", None)
        bos = bos if bos is not None else getattr(tokenizer, "cls_token_id", None)
        start = bos if bos is not None else tokenizer.pad_token_id  # T5 starts decoding from the pad token
        return {"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id, "bos_token_id": bos,
                "eos_token_id": eos_id(tokenizer), "decoder_start_token_id": start, "forced_eos_token_id": None}

    # ---------------------------------------------------------------- training, metrics and predictions
    def arguments_class(self) -> type[Seq2SeqTrainingArguments]:
        from ...seq2seq import Seq2SeqTrainingArguments
        return Seq2SeqTrainingArguments

    def trainer_class(self) -> type[Seq2SeqTrainer]:
        from ...seq2seq import Seq2SeqTrainer
        return Seq2SeqTrainer

    def training_defaults(self, data: dict) -> dict:
        return {"predict_with_generate": True,
                "generation_max_length": data.get("max_target_length") or self.DEFAULT_MAX_TARGET_LENGTH}

    def predict_overrides(self, data: dict) -> dict:
        return {"predict_with_generate": True, "prediction_loss_only": False}

    def compute_metrics(self, metrics: list[MetricSpec], info: LabelInfo, tokenizer: Any) -> Callable | None:
        if not metrics:
            return None
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

        def compute(eval_pred):
            preds = np.asarray(logits_of(eval_pred.predictions))
            decoded = decode(tokenizer, preds)
            refs = decode(tokenizer, eval_pred.label_ids)
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
            merged = merge_results(results)
            merged["gen_len"] = float(np.mean(np.count_nonzero((preds != pad) & (preds >= 0), axis=-1)))
            return merged

        return compute

    def prediction_rows(self, predictions: Any, inputs: PredictionInputs) -> list[dict]:
        ids, gold = inputs.ids, inputs.gold
        sources = inputs.dataset[self.source_column(inputs.data)]
        generated = decode(inputs.tokenizer, predictions)
        rows = []
        for i, row_id in enumerate(ids):
            row = {"id": row_id, "source": sources[i], "generated": generated[i]}
            if gold is not None:
                row["target"] = gold[i]
            rows.append(row)
        return rows

    def prepare_model(self, model: Any, tokenizer: Any) -> Any:
        return set_pad_token_id(model, tokenizer)

