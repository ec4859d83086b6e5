"""PNG versions of the report's charts (for READMEs, slides, viewers without JavaScript).

Matplotlib is used through its object API (``matplotlib.figure.Figure`` + the Agg canvas), never ``pyplot``: it
works on headless machines and does not switch the backend of a notebook that calls it. Charts of one group
(throughput) share a figure, side by side.
"""
from __future__ import annotations

import math
import os

from .charts import Chart, colour

_PAD_PX = 6  # space kept between the left edge of the image and the y-axis label


def _figure(ncols: int = 1):
    from matplotlib.figure import Figure

    # fixed margins instead of constrained/tight layout: the latter measures every text twice
    # (half the rendering time); only the left margin is measured and widened when needed (_fit_left)
    fig = Figure(figsize=(8.0 if ncols == 1 else 4.6 * ncols, 4.5), dpi=100)
    fig.subplots_adjust(left=0.1 if ncols == 1 else 0.08, right=0.97, bottom=0.12,
                        top=0.9 if ncols == 1 else 0.84, wspace=0.4)
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


def _fit_left(fig, axes) -> None:
    """Widen the left margin (and the gaps between side-by-side axes) until the y-axis tick labels and the
    label are inside the image: long tick labels (``0.00015``) pushed the label off the edge."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    x0 = axes[0].get_tightbbox(renderer).x0
    if x0 < _PAD_PX:
        shift = (_PAD_PX - x0) / fig.bbox.width
        fig.subplots_adjust(left=min(fig.subplotpars.left + shift, 0.4))
    for left, right in zip(axes, axes[1:]):
        overlap = left.get_window_extent(renderer).x1 - right.get_tightbbox(renderer).x0 + _PAD_PX
        if overlap > 0:
            fig.subplots_adjust(wspace=fig.subplotpars.wspace + overlap / left.get_window_extent(renderer).width)


def _draw_series(ax, s) -> None:
    c = colour(s.run)
    if s.style == "raw":
        ax.plot(s.xs, s.ys, color=c, alpha=0.3, linewidth=1, label=s.label)
    elif s.style == "smooth":
        ax.plot(s.xs, s.ys, color=c, linewidth=2, label=s.label)
    elif s.style == "marks":
        ax.plot(s.xs, s.ys, linestyle="none", marker="x", markersize=8, color="black", label=s.label)
    elif s.style == "dashed":
        ax.plot(s.xs, s.ys, color=c, linestyle="--", marker="o", markersize=4, linewidth=1.5, label=s.label)
    else:
        many = len(s.xs) > 30
        ax.plot(s.xs, s.ys, color=c, linewidth=1.5, marker=None if many else "o", markersize=3, label=s.label)


def _draw(ax, chart: Chart, legend_loc: str = "best") -> None:
    for s in chart.series:
        _draw_series(ax, s)
    if chart.log_y:
        ax.set_yscale("log")
    if chart.y_from_zero:
        top = max((y for s in chart.series for y in s.ys if math.isfinite(y)), default=1.0)
        ax.set_ylim(0, top * 1.12 if top > 0 else 1.0)
    ax.set_title(chart.title)
    ax.set_xlabel("step")
    ax.set_ylabel(chart.ylabel)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small", loc=legend_loc)


def _save(fig, path: str) -> None:
    """Write the PNG to a temp file renamed into place: a full disk never leaves a cut-off chart."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    tmp = path + ".tmp"
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _groups(charts: list[Chart]) -> list[list[Chart]]:
    out: list[list[Chart]] = []
    for c in charts:
        if c.group and out and out[-1][0].group == c.group:
            out[-1].append(c)
        else:
            out.append([c])
    return out


def write_pngs(charts: list[Chart], out_dir: str, prefix: str) -> dict[str, str]:
    """Write one PNG per chart (one per group); returns {chart key: PNG file name}."""
    files: dict[str, str] = {}
    for group in _groups(charts):
        fig, axes = _figure(len(group))
        for ax, chart in zip(axes, group):
            _draw(ax, chart, legend_loc="lower right" if chart.group else "best")
        if group[0].group:
            fig.suptitle("Training throughput" if group[0].group == "throughput" else group[0].group)
        _fit_left(fig, axes)
        name = f"{prefix}{group[0].group or group[0].key}.png"
        _save(fig, os.path.join(out_dir, name))
        for chart in group:
            files[chart.key] = name
    return files
