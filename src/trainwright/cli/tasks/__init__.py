"""The task presets of the command line, one module per task behind the :class:`~.base.Task` protocol:

- :mod:`.classification`: ``text-classification`` and ``regression``;
- :mod:`.token_classification`: ``token-classification`` (NER, POS; CoNLL files);
- :mod:`.causal_lm`: ``causal-lm`` (text files, blocks or packing, generation);
- :mod:`.instruction`: ``instruction`` (prompt → answer with a causal LM, the answer the only labelled part,
  scored by generation accuracy; :mod:`.instruction_trainer`);
- :mod:`.seq2seq`: ``seq2seq`` (parallel text files, generation, BLEU).

Shared pieces: :mod:`.base` (the protocol, labels, ``data:`` value checks), :mod:`.metrics` (the ``metrics:``
list), :mod:`.readers` (a task's own file formats as datasets), :mod:`.generation` (what the generating tasks
share). A new task is a :class:`~.base.Task` subclass added with :func:`register_task`; its extra ``data:``
keys go in ``Task.data_keys``, which the config checker, ``--help`` and ``trainwright init`` all read.
"""
from __future__ import annotations

from typing import Any

from ...errors import ConfigError, did_you_mean
from .base import LabelInfo, PredictionInputs, Task
from .causal_lm import CausalLM
from .classification import Regression, TextClassification
from .instruction import Instruction
from .seq2seq import Seq2Seq
from .token_classification import TokenClassification

__all__ = ["TASKS", "ALIASES", "get_task", "register_task", "Task", "LabelInfo", "PredictionInputs",
           "TextClassification", "Regression", "TokenClassification", "CausalLM", "Instruction", "Seq2Seq"]

TASKS: dict[str, Task] = {
    "text-classification": TextClassification(),
    "regression": Regression(),
    "token-classification": TokenClassification(),
    "causal-lm": CausalLM(),
    "instruction": Instruction(),
    "seq2seq": Seq2Seq(),
}

ALIASES = {"sequence-classification": "text-classification", "classification": "text-classification",
           "text_classification": "text-classification", "ner": "token-classification",
           "token_classification": "token-classification", "causal_lm": "causal-lm", "clm": "causal-lm",
           "translation": "seq2seq", "summarization": "seq2seq", "text-generation": "causal-lm",
           "language-modeling": "causal-lm",
           "instruction-tuning": "instruction", "prompt-completion": "instruction", "sft": "instruction"}


def get_task(name: Any) -> Task:
    """The preset for ``task: name``; an unknown name fails with the valid names and the nearest one."""
    if name is None:
        name = "text-classification"
    if not isinstance(name, str):
        raise ConfigError(f"task: must be a name, one of {', '.join(TASKS)}; got {name!r}.")
    key = ALIASES.get(name.strip().lower(), name.strip().lower())
    if key not in TASKS:
        hint = did_you_mean(key, list(TASKS) + list(ALIASES), cutoff=0.5, show=lambda m: repr(ALIASES.get(m, m)))
        raise ConfigError(f"Unknown task {name!r}.{hint} Valid tasks: {', '.join(TASKS)}.")
    return TASKS[key]


def register_task(task: Task, *aliases: str) -> None:
    """Add (or replace) a preset, e.g. when a new task lands."""
    TASKS[task.name] = task
    for alias in aliases:
        ALIASES[alias] = task.name
