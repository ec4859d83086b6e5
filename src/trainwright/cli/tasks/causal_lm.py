"""``task: causal-lm``: plain text → next-token prediction, from text files (``format: text``) or a text column,
cut into blocks or packed; reports eval_loss and eval_perplexity; ``predict`` continues prompts."""
from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ...errors import ConfigError
from ..keys import Key
from .base import PredictionInputs, Task, check_bool, check_choice, check_int
from .generation import DecoderModelSetup, decode, eos_id
from .readers import existing_file, file_state, in_memory_dataset, where

if TYPE_CHECKING:
    from ...seq2seq import Seq2SeqTrainer
    from ..config import RunConfig
    from .base import LabelInfo
    from .metrics import MetricSpec


class CausalLM(DecoderModelSetup, Task):
    """Plain text → next-token prediction: a text file (``format: text``) or a text column, cut into blocks of
    ``block_size`` tokens (``packing: true`` packs whole documents into rows instead). Reports eval_loss and
    eval_perplexity; ``predict`` continues prompts (greedy, ``max_new_tokens``)."""

    name = "causal-lm"
    model_class = "AutoModelForCausalLM"
    default_metrics = ()
    FORMATS = ("text", "auto")
    SAMPLE_BY = ("paragraph", "line", "document")
    DEFAULT_BLOCK_SIZE = 128
    DEFAULT_MAX_NEW_TOKENS = 50
    DEFAULT_PROMPT_LENGTH = 64
    data_keys = (
        Key("format", "auto", "text: plain text files; auto: .txt is text, other files by text_column"),
        Key("sample_by", "paragraph", "text file rows: paragraph, line or document (test: a prompt a line)"),
        Key("block_size", DEFAULT_BLOCK_SIZE, "tokens per training row"),
        Key("packing", False, "true: pack whole documents into rows; false: cut one token stream"),
        Key("prompt_column", None, "the prompts predict continues (default: text_column)"),
        Key("max_new_tokens", DEFAULT_MAX_NEW_TOKENS, "tokens predict generates per prompt (greedy)"),
    )
    unused_data_keys = ("text_columns", "label_column", "label_names")

    def text_column(self, data: dict) -> str:
        return data.get("text_column") or "text"

    def prompt_column(self, data: dict) -> str:
        return data.get("prompt_column") or self.text_column(data)

    def label_column(self, data: dict) -> None:
        return None

    def input_columns(self, data: dict) -> list[str]:
        return [self.text_column(data)]

    def required_columns(self, data: dict, with_labels: bool) -> list[tuple[str, str]]:
        if with_labels:
            return [(self.text_column(data), "data.text_column")]
        return [(self.prompt_column(data), "data.prompt_column" if data.get("prompt_column") else "data.text_column")]

    def block_size(self, data: dict) -> int:
        return data.get("block_size") or self.DEFAULT_BLOCK_SIZE

    def cache_key(self, data: dict) -> list:
        return ["causal-lm", self.block_size(data), bool(data.get("packing")), self.prompt_column(data)]

    def check_data_config(self, data: dict) -> None:
        check_choice(data, "format", self.FORMATS)
        check_choice(data, "sample_by", self.SAMPLE_BY)
        check_int(data, "block_size", 2)
        check_int(data, "max_new_tokens", 1)
        check_bool(data, "packing")
        if data.get("prompt_column") is not None and not isinstance(data["prompt_column"], str):
            raise ConfigError(f"data.prompt_column must be a column name; got {data['prompt_column']!r}.")

    def check_metrics(self, metrics: list[MetricSpec]) -> None:
        for m in metrics:
            if m.metric.name != "perplexity":
                raise ConfigError(f"task: causal-lm reports eval_loss and eval_perplexity only; metric {m.name!r} "
                                  "cannot be computed from next-token predictions here. Use metrics: [] or "
                                  "[perplexity].")

    def read_split(self, cfg: RunConfig, split: str, value: Any) -> tuple[Any, str] | None:
        data = cfg.data
        fmt = data.get("format") or "auto"
        is_text = fmt == "text" or (fmt == "auto" and isinstance(value, str)
                                    and os.path.splitext(value)[1].lower() in (".txt", ".text", ".md"))
        if not is_text:
            return None
        path = existing_file(cfg, split, value)
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
        ds = in_memory_dataset({column: docs}, "text", file_state(path), sample_by, column, data.get("encoding"))
        return ds, where(split, value)

    # ---------------------------------------------------------------- tokenization
    def tokenize_function(self, tokenizer: Any, data: dict, info: LabelInfo, with_labels: bool) -> Callable:
        sep = eos_id(tokenizer)
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

    def collator(self, tokenizer: Any, data: dict, model: Any = None, predict: bool = False) -> Callable:
        if predict:
            from ...data.collator import DataCollatorWithPadding
            return DataCollatorWithPadding(tokenizer)
        if data.get("packing"):
            from ...data.packing import DataCollatorForPackedRows
            return DataCollatorForPackedRows(pad_token_id=tokenizer.pad_token_id or 0)
        from ...data.language_modeling import DataCollatorForLanguageModeling
        return DataCollatorForLanguageModeling(tokenizer, mlm=False)

    def prepare_tokenizer(self, tokenizer: Any, predict: bool = False) -> Any:
        if tokenizer.pad_token is None and getattr(tokenizer, "eos_token", None) is not None:
            tokenizer.pad_token = tokenizer.eos_token  # GPT-2 / Llama tokenizers have no pad token
        if predict:
            tokenizer.padding_side = "left"  # prompts end where generation starts
        return tokenizer

    # ---------------------------------------------------------------- training and predictions
    def trainer_class(self) -> type[Seq2SeqTrainer]:
        return _causal_lm_trainer()

    def training_defaults(self, data: dict) -> dict:
        return {"prediction_loss_only": True}  # the loss is all evaluation needs: never gather the logits

    def predict_overrides(self, data: dict) -> dict:
        return {"prediction_loss_only": False, "predict_with_generate": True, "use_cache": True}

    def predict_kwargs(self, data: dict) -> dict:
        return {"max_new_tokens": data.get("max_new_tokens") or self.DEFAULT_MAX_NEW_TOKENS, "do_sample": False}

    def compute_metrics(self, metrics: list[MetricSpec], info: LabelInfo, tokenizer: Any) -> None:
        return None  # eval_perplexity comes from eval_loss (see _causal_lm_trainer)

    def prediction_rows(self, predictions: Any, inputs: PredictionInputs) -> list[dict]:
        ids = inputs.ids
        prompts = inputs.dataset[self.prompt_column(inputs.data)]
        generated = decode(inputs.tokenizer, predictions)
        return [{"id": ids[i], "prompt": prompts[i], "generated": generated[i]} for i in range(len(ids))]


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

