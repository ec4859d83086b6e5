"""``task: instruction``: prompt → answer fine-tuning of a causal LM (instruction tuning), scored by generation.

Every row becomes a prompt made with ``data.prompt_template`` from its columns (``"Review: {sentence}\\nSentiment:"``)
followed by the answer (``data.answer_column``, default the label column; integer labels are named by
``data.label_names``) and the end-of-text token. Only the answer and the end-of-text token are labelled: the
prompt's tokens are -100, so the loss is the answer's. Evaluation reports ``eval_loss`` (of the answers) and
``eval_accuracy``: the model generates ``max_new_tokens`` tokens greedily after each prompt, and a row is right
when the generated text starts with the gold answer's words (compared case-insensitively). ``predict`` writes
the generated answer of every prompt.
"""
from __future__ import annotations

import string
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ...errors import ConfigError
from ..keys import Key
from .base import PredictionInputs, Task, check_int, is_int
from .generation import DecoderModelSetup, decode, eos_id

if TYPE_CHECKING:
    from ...seq2seq import Seq2SeqTrainer
    from .base import LabelInfo
    from .metrics import MetricSpec


class Instruction(DecoderModelSetup, Task):
    """Prompt → answer with a causal LM: the answer is the only labelled part; scored by greedy generation."""

    name = "instruction"
    model_class = "AutoModelForCausalLM"
    default_metrics = ("accuracy",)
    DEFAULT_MAX_NEW_TOKENS = 8
    DEFAULT_MAX_LENGTH = 256
    data_keys = (
        Key("prompt_template", None, "the prompt, a Python format string over the row's columns, e.g. "
                                     "\"Review: {sentence}\\nSentiment:\" (default: the text column as it is)"),
        Key("answer_column", None, "the answer (default: label_column; integers named by label_names)"),
        Key("answer_prefix", " ", "text between the prompt and the answer"),
        Key("max_new_tokens", DEFAULT_MAX_NEW_TOKENS, "tokens generated per prompt (greedy) by evaluation "
                                                      "and predict; must cover the longest answer"),
    )
    unused_data_keys = ("text_columns",)

    # ---------------------------------------------------------------- config and columns
    def template(self, data: dict) -> str:
        return data.get("prompt_template") or "{" + (data.get("text_column") or "text") + "}"

    def template_fields(self, data: dict) -> list[str]:
        return [f for _, f, _, _ in string.Formatter().parse(self.template(data)) if f]

    def label_column(self, data: dict) -> str:
        return data.get("answer_column") or data.get("label_column") or "label"

    def input_columns(self, data: dict) -> list[str]:
        return self.template_fields(data)

    def required_columns(self, data: dict, with_labels: bool) -> list[tuple[str, str]]:
        key = "data.prompt_template" if data.get("prompt_template") else "data.text_column"
        cols = [(c, key) for c in self.template_fields(data)]
        if with_labels:
            cols.append((self.label_column(data), "data.answer_column" if data.get("answer_column")
                         else "data.label_column"))
        return cols

    def check_data_config(self, data: dict) -> None:
        for key in ("prompt_template", "answer_column", "answer_prefix"):
            if data.get(key) is not None and not isinstance(data[key], str):
                raise ConfigError(f"data.{key} must be a string; got {data[key]!r}.")
        try:
            fields = self.template_fields(data)
        except ValueError as e:
            raise ConfigError(f"data.prompt_template {data.get('prompt_template')!r} is not a format string: {e}. "
                              "Name columns in braces, e.g. \"Review: {sentence}\\nSentiment:\" (write {{ for a "
                              "literal brace).") from e
        bad = [f for f in fields if not f.isidentifier()]
        if not fields or bad:
            raise ConfigError(f"data.prompt_template {data.get('prompt_template')!r} must name the columns of the "
                              "prompt in braces, e.g. \"Review: {sentence}\\nSentiment:\""
                              + (f"; {bad[0]!r} is not a column name." if bad else "."))
        check_int(data, "max_new_tokens", 1)
        ln = data.get("label_names")
        if ln is not None and (not isinstance(ln, list) or not ln):
            raise ConfigError(f"data.label_names must be a list of answers, e.g. [negative, positive]; got {ln!r}.")

    def check_metrics(self, metrics: list[MetricSpec]) -> None:
        for m in metrics:
            if m.metric.name != "accuracy":
                raise ConfigError(f"task: instruction reports eval_loss and eval_accuracy (the generated answer "
                                  f"against the gold one); metric {m.name!r} is not available. Use metrics: "
                                  "[accuracy] or [].")

    def cache_key(self, data: dict) -> list:
        return ["instruction", self.template(data), self.label_column(data), data.get("answer_prefix", " "),
                [str(n) for n in data.get("label_names") or []]]

    # ---------------------------------------------------------------- text
    def prompts(self, batch: dict, data: dict) -> list[str]:
        fields, template = self.template_fields(data), self.template(data)
        n = len(batch[fields[0]])
        return [template.format(**{f: "" if batch[f][i] is None else str(batch[f][i]).strip() for f in fields})
                for i in range(n)]

    def answers(self, values: Sequence[Any], data: dict) -> list[str]:
        names = [str(n) for n in data.get("label_names") or []]
        out = []
        for v in values:
            if names and is_int(v) and 0 <= int(v) < len(names):
                v = names[int(v)]
            out.append("" if v is None else str(v).strip())
        return out

    # ---------------------------------------------------------------- tokenization
    def tokenize_function(self, tokenizer: Any, data: dict, info: LabelInfo, with_labels: bool) -> Callable:
        start = getattr(tokenizer, "bos_token_id", None)
        start = start if start is not None else getattr(tokenizer, "cls_token_id", None)
        start = [] if start is None else [int(start)]
        end = eos_id(tokenizer)
        end = [] if end is None else [end]
        max_length = data.get("max_length") or self.DEFAULT_MAX_LENGTH
        prefix = data.get("answer_prefix", " ")
        if prefix is None:
            prefix = " "
        answer_col = self.label_column(data)

        def tokenize(batch):
            prompts = tokenizer(self.prompts(batch, data), add_special_tokens=False, verbose=False)["input_ids"]
            if not with_labels:
                ids = [start + p[-(max_length - len(start)):] for p in prompts]  # the end of a long prompt is kept
                return {"input_ids": ids, "attention_mask": [[1] * len(x) for x in ids]}
            answers = tokenizer([prefix + a for a in self.answers(batch[answer_col], data)],
                                add_special_tokens=False, verbose=False)["input_ids"]
            ids, labels = [], []
            for p, a in zip(prompts, answers):
                a = a + end
                keep = max(1, max_length - len(start) - len(a))
                p = start + p[-keep:]
                ids.append(p + a)
                labels.append([-100] * len(p) + a)
            return {"input_ids": ids, "attention_mask": [[1] * len(x) for x in ids], "labels": labels}

        return tokenize

    def collator(self, tokenizer: Any, data: dict, model: Any = None, predict: bool = False) -> Callable:
        if predict:
            from ...data.collator import DataCollatorWithPadding
            return DataCollatorWithPadding(tokenizer)
        from ...data.seq2seq import DataCollatorForSeq2Seq
        return DataCollatorForSeq2Seq(tokenizer)  # inputs padded with the pad id, labels with -100

    def prepare_tokenizer(self, tokenizer: Any, predict: bool = False) -> Any:
        if tokenizer.pad_token is None and getattr(tokenizer, "eos_token", None) is not None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left" if predict else "right"  # prompts end where generation starts
        return tokenizer

    # ---------------------------------------------------------------- training, metrics and predictions
    def trainer_class(self) -> type[Seq2SeqTrainer]:
        from .instruction_trainer import instruction_trainer
        return instruction_trainer()

    def training_defaults(self, data: dict) -> dict:
        n = data.get("max_new_tokens") or self.DEFAULT_MAX_NEW_TOKENS
        return {"predict_with_generate": True, "generation_config": {"max_new_tokens": n, "do_sample": False}}

    def predict_overrides(self, data: dict) -> dict:
        return {"prediction_loss_only": False, "predict_with_generate": True}

    def predict_kwargs(self, data: dict) -> dict:
        return {"max_new_tokens": data.get("max_new_tokens") or self.DEFAULT_MAX_NEW_TOKENS, "do_sample": False}

    def compute_metrics(self, metrics: list[MetricSpec], info: LabelInfo, tokenizer: Any) -> Callable | None:
        if not metrics:
            return None

        def compute(eval_pred):
            preds = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
            generated = decode(tokenizer, np.asarray(preds))
            gold = decode(tokenizer, np.asarray(eval_pred.label_ids))
            return {"accuracy": float(np.mean([answer_matches(g, a) for g, a in zip(generated, gold)]))}

        return compute

    def prediction_rows(self, predictions: Any, inputs: PredictionInputs) -> list[dict]:
        ds, data = inputs.dataset, inputs.data
        prompts = self.prompts({f: ds[f] for f in self.template_fields(data)}, data)
        generated = decode(inputs.tokenizer, predictions)
        gold = self.answers(inputs.gold, data) if inputs.gold is not None else None
        rows = []
        for i, row_id in enumerate(inputs.ids):
            row = {"id": row_id, "prompt": prompts[i], "generated": generated[i]}
            if gold is not None:
                row["answer"] = gold[i]
                row["correct"] = answer_matches(generated[i], gold[i])
            rows.append(row)
        return rows


def answer_matches(generated: str, gold: str) -> bool:
    """The generated text starts with the gold answer's words (case-insensitive; what follows is not scored)."""
    want = gold.casefold().split()
    return bool(want) and generated.casefold().split()[:len(want)] == want
