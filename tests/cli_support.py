"""Helpers shared by the command-line tests (test_cli.py, test_cli_tasks.py): the repository and data paths,
running ``trainwright`` in-process, config files, output readers, and a tiny BERT saved with the real MiniLM
tokenizer (a local model directory like any other)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import yaml

from conftest import DATA, needs_data  # noqa: F401 (re-exported for the command-line tests)
from conftest import ROOT as REPO  # noqa: F401
from trainwright.cli import main


def run(argv, capsys=None) -> tuple[int, str, str]:
    """``trainwright ARGV`` in this process: (exit code, stdout, stderr) (the outputs only with capsys)."""
    code = main([str(a) for a in argv])
    if capsys is None:
        return code, "", ""
    out, err = capsys.readouterr()
    return code, out, err


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def read_csv(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


def save_tiny_bert(path, tokenizer) -> str:
    """A 2-layer, 32-wide BERT (seeded) saved with ``tokenizer`` in ``path``."""
    import torch
    from transformers import BertConfig, BertModel
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=128)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)

