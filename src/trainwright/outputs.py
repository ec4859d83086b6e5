"""Result types (same names and fields as transformers.trainer_utils) and set_seed."""
from __future__ import annotations

import os
import random
from typing import Any, NamedTuple

import numpy as np


class EvalPrediction:
    """What compute_metrics receives: ``predictions`` and ``label_ids`` (numpy, in dataset order).
    Unpacks as ``logits, labels = eval_pred`` (or with inputs when include_for_metrics has 'inputs')."""

    def __init__(self, predictions, label_ids, inputs=None, losses=None):
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
