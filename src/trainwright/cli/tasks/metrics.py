"""The ``metrics:`` of a config: :func:`load_metrics` turns names (``accuracy``, ``glue/mrpc``, ``{name: f1,
average: macro}``) into :mod:`trainwright.metrics` objects before any data is loaded; the helpers here are
shared by the tasks' ``compute_metrics`` and ``prediction_rows``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import ConfigError


@dataclass
class MetricSpec:
    name: str
    config: str | None
    kwargs: dict
    metric: Any  # trainwright.metrics.Metric


def load_metrics(specs: Any) -> list[MetricSpec]:
    """``metrics:`` from the config: names (``accuracy``), ``glue/mrpc`` or mappings
    ``{name: f1, config: ..., average: macro}``. Unknown names fail here, before any data is loaded."""
    from ... import metrics as metrics_module
    if specs is None:
        return []
    if isinstance(specs, (str, dict)):
        specs = [specs]
    if not isinstance(specs, list):
        raise ConfigError(f"metrics: must be a list of metric names, e.g. [accuracy, f1]; got {specs!r}.")
    out = []
    for spec in specs:
        if isinstance(spec, str):
            name, _, config = spec.partition("/")
            kwargs = {}
        elif isinstance(spec, dict):
            spec = dict(spec)
            if "name" not in spec:
                raise ConfigError(f"metrics: entry {spec!r} needs a 'name' key, e.g. {{name: f1, average: macro}}.")
            name, config = spec.pop("name"), spec.pop("config", None)
            kwargs = spec
        else:
            raise ConfigError(f"metrics: entry {spec!r} must be a metric name (e.g. accuracy) or a mapping with name:.")
        metric = metrics_module.load(name, config or None)
        out.append(MetricSpec(name=name, config=config or None, kwargs=kwargs, metric=metric))
    return out


def merge_results(results: list[tuple[str, dict]]) -> dict[str, float]:
    """One flat dict of scalars from several metrics; a key two metrics share gets the metric name in front."""
    merged: dict[str, float] = {}
    for name, result in results:
        for key, value in result.items():
            if isinstance(value, (list, tuple, np.ndarray)):
                continue  # per-class arrays are not logged as scalars
            out_key = key if key not in merged else f"{name}_{key}"
            merged[out_key] = float(value) if isinstance(value, (int, float, np.number)) else value
    return merged


def logits_of(predictions: Any) -> np.ndarray:
    """The logits (the first output when the model returned several) as a NumPy array."""
    if isinstance(predictions, (tuple, list)):
        predictions = predictions[0]
    return np.asarray(predictions)


def softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float64)
    logits = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=-1, keepdims=True)
