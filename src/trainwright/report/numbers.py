"""How the report turns logged values into numbers to draw and text to print."""
from __future__ import annotations

import math
from typing import Any


def format_number(v: Any) -> str:
    """How numbers appear in the report: ints with thousands separators, floats with 5 significant
    digits (``0.8125``, ``5e-05``, ``123.46``), NaN/inf spelled out, None as an em dash."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if math.isnan(v):
            return "NaN"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return f"{v:.5g}"
    return str(v)


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def to_float(v: Any) -> float:
    """Float for plotting; non-numbers and inf become NaN (a gap in the line)."""
    if not is_number(v):
        return float("nan")
    v = float(v)
    return v if math.isfinite(v) else float("nan")


def ema_weight(n: int) -> float:
    """Smoothing weight used for ``n`` points: 0 up to 5 points, then 1 - 5/n, capped at 0.95."""
    return min(0.95, max(0.0, 1.0 - 5.0 / n)) if n > 0 else 0.0


def ema(values: list[float], weight: float | None = None) -> list[float]:
    """TensorBoard-style debiased exponential moving average; NaN points are skipped (stay NaN)."""
    finite = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    w = ema_weight(len(finite)) if weight is None else weight
    out, last, n = [], 0.0, 0
    for v in values:
        if not (isinstance(v, (int, float)) and math.isfinite(v)):
            out.append(float("nan"))
            continue
        last = last * w + (1 - w) * v
        n += 1
        out.append(last / (1 - w ** n) if w > 0 else v)
    return out


def interp(x: float, xs: list[float], ys: list[float]) -> float:
    """Linear interpolation of (xs, ys) at x, clamped at the ends (NaN when empty)."""
    if not xs:
        return float("nan")
    if x <= xs[0]:
        return ys[0]
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return ys[-1]


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "—"
    s = int(round(seconds))
    return f"{format_number(float(seconds))} s ({s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d})"


def series(logs: list[dict], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of ``key`` in ``logs``; a step logged twice keeps its last value."""
    points: dict[float, float] = {}
    for r in logs:
        if key in r and is_number(r.get("step")):
            points[float(r["step"])] = to_float(r[key])
    xs = sorted(points)
    return xs, [points[x] for x in xs]
