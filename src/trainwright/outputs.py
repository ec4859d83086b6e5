"""Result types (same names and fields as transformers.trainer_utils), set_seed, and the result files a run writes
in ``output_dir`` (``save_metrics`` / ``save_state``)."""
from __future__ import annotations

import os
import random
from typing import Any, NamedTuple

import numpy as np


class EvalPrediction:
    """What compute_metrics receives: ``predictions`` and ``label_ids`` (numpy, in dataset order).
    Unpacks as ``logits, labels = eval_pred`` (or with inputs when include_for_metrics has 'inputs')."""

    def __init__(self, predictions: Any, label_ids: Any, inputs: Any = None, losses: Any = None) -> None:
        self.predictions = predictions
        self.label_ids = label_ids
        self.inputs = inputs
        self.losses = losses
        self.elements = (predictions, label_ids) + tuple(x for x in (inputs, losses) if x is not None)

    def __iter__(self):
        return iter(self.elements)

    def __getitem__(self, idx):
        return self.elements[idx]

    def __len__(self):
        return len(self.elements)


class PredictionOutput(NamedTuple):
    predictions: Any
    label_ids: Any
    metrics: dict[str, float] | None


class TrainOutput(NamedTuple):
    global_step: int
    training_loss: float
    metrics: dict[str, float]


def set_seed(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch (every device); deterministic=True also asks torch for
    deterministic kernels (slower)."""
    import torch
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def write_json_result(output_dir: str, name: str, data: dict, *, indent: int = 4, newline: bool = False,
                      what: str | None = None) -> None:
    """``output_dir/name`` as sorted JSON, atomically; a full disk is one warning and the previous file stays."""
    import json

    from .checkpoint.safe_fs import write_atomic
    os.makedirs(output_dir, exist_ok=True)
    text = json.dumps(data, indent=indent, sort_keys=True) + ("\n" if newline else "")
    write_atomic(os.path.join(output_dir, name), text, what=what)


def save_results(output_dir: str, split: str, metrics: dict, combined: bool = True) -> None:
    """``<split>_results.json`` and, with ``combined``, ``metrics`` merged into ``all_results.json`` (transformers'
    ``save_metrics``)."""
    import json

    write_json_result(output_dir, f"{split}_results.json", metrics, what=f"{split}_results.json")
    if combined:
        path = os.path.join(output_dir, "all_results.json")
        merged = {}
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                merged = json.load(f)
        merged.update(metrics)
        write_json_result(output_dir, "all_results.json", merged, what="all_results.json")
