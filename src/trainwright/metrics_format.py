"""``Trainer.log_metrics`` / ``Trainer.metrics_format``: the metrics printed as transformers prints them.

``metrics_format(metrics)`` returns a copy for display: a key containing ``_mem_`` in MB (``"1301MB"``, the
byte count shifted right by 20), a key containing ``_runtime`` as ``h:mm:ss.cc`` (``"0:00:12.34"``),
``total_flos`` in GF (shifted right by 30: ``"3GF"``), any other float rounded to 4 digits. ``log_lines``
gives the lines ``log_metrics`` prints: ``***** <split> metrics *****``, then one line per key in sorted order,
``  <key left-aligned> = <value right-aligned>``, both columns as wide as their longest entry.

Where transformers would raise (a float memory figure, a NaN runtime, a ``None`` value, no metrics at all)
the value is shown as it is instead.
"""
from __future__ import annotations

import datetime
import math

__all__ = ["log_lines", "metrics_format"]


def _runtime(secs) -> str:
    """Seconds as ``h:mm:ss.cc`` (hundredths cut, not rounded), as transformers' ``_secs2timedelta``."""
    hundredths = int(abs(secs - int(secs)) * 100)
    return f"{datetime.timedelta(seconds=int(secs))}.{hundredths:02d}"


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def metrics_format(metrics: dict) -> dict:
    """A copy of ``metrics`` with its values formatted for display (see the module docstring)."""
    out = dict(metrics)
    for k, v in out.items():
        if "_mem_" in k:
            if _is_number(v):
                out[k] = f"{int(v) >> 20}MB"
        elif "_runtime" in k:
            if _is_number(v):
                out[k] = _runtime(v)
        elif k == "total_flos":
            if _is_number(v):
                out[k] = f"{int(v) >> 30}GF"
        elif isinstance(v, float):
            out[k] = round(v, 4)
    return out


def _right(value, width: int) -> str:
    try:
        return f"{value:>{width}}"
    except (TypeError, ValueError):  # None, a list, ...: transformers would raise here
        return f"{str(value):>{width}}"


def log_lines(split: str, metrics: dict) -> list[str]:
    """The lines ``log_metrics(split, metrics)`` prints, as transformers' ``log_metrics``."""
    lines = [f"***** {split} metrics *****"]
    formatted = metrics_format(metrics)
    if not formatted:
        return lines
    k_width = max(len(str(k)) for k in formatted)
    v_width = max(len(str(v)) for v in formatted.values())
    for key in sorted(formatted):
        lines.append(f"  {key: <{k_width}} = {_right(formatted[key], v_width)}")
    return lines
