"""``write_report``, the ``trainwright report`` command and ``RunReportCallback``."""
from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..callbacks import TrainerCallback
from .charts import build_charts
from .page import render_page
from .runs import RunData, load_run

if TYPE_CHECKING:
    from ..args import TrainingArguments
    from ..callbacks import TrainerControl
    from ..state import TrainerState

logger = logging.getLogger(__name__)

REPORT_FILE = "report.html"
COMPARE_FILE = "compare.html"  # several runs, written from inside one of them


def _inside(path: str, directory: str) -> bool:
    path, directory = os.path.realpath(path), os.path.realpath(directory)
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


def output_path(run_dirs: list[str], output: str | None = None, cwd: str | None = None) -> str:
    """Where the report goes. ``output``: an ``.html`` path, or a directory for ``report.html``. Without it,
    one run: ``<run_dir>/report.html``; several runs: ``report.html`` in the current directory, never in one
    of the runs (which would replace that run's own report): from inside a run directory the file is
    ``compare.html`` instead."""
    if output is not None:
        output = os.fspath(output)
        return output if output.lower().endswith((".html", ".htm")) else os.path.join(output, REPORT_FILE)
    if len(run_dirs) == 1:
        return os.path.join(run_dirs[0], REPORT_FILE)
    cwd = cwd or os.getcwd()
    inside_a_run = any(_inside(cwd, d) for d in run_dirs)
    return os.path.join(cwd, COMPARE_FILE if inside_a_run else REPORT_FILE)


def _unique_names(runs: list[RunData]) -> None:
    seen: dict[str, int] = {}
    for run in runs:
        n = seen.get(run.name, 0)
        seen[run.name] = n + 1
        if n:
            run.name = f"{run.name} ({n + 1})"


def _write_text(path: str, text: str) -> None:
    tmp = path + ".tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:  # a full disk: the previous report stays as it was, no half-written file is left
        if os.path.exists(tmp):
            os.remove(tmp)


def write_report(run_dirs: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], output: str | None = None, *,
                 embed_images: bool = False, title: str | None = None, png: bool = True) -> str:
    """Write the report of one run directory or a list of them (see :func:`output_path`); return its path.

    The HTML file is self-contained (interactive charts, no file or network access when viewed). ``png``:
    also write each chart as ``<stem>_<chart>.png`` next to it (linked from the page, shown when JavaScript
    is off); ``embed_images``: put those PNGs into the page too (base64), for the no-JavaScript view."""
    if isinstance(run_dirs, (str, os.PathLike)):
        run_dirs = [os.fspath(run_dirs)]
    run_dirs = [os.fspath(d) for d in run_dirs]
    if not run_dirs:
        raise ValueError("write_report: no run directory given")
    runs = [load_run(d) for d in run_dirs]
    _unique_names(runs)
    html_path = os.path.abspath(output_path(run_dirs, output))
    out_dir = os.path.dirname(html_path)
    os.makedirs(out_dir, exist_ok=True)
    charts = build_charts(runs)
    pngs: dict[str, str] = {}
    if png:
        from .png import write_pngs

        stem = os.path.splitext(os.path.basename(html_path))[0]
        pngs = write_pngs(charts, out_dir, prefix=f"{stem}_")
    _write_text(html_path, render_page(runs, charts, pngs, out_dir, embed_images=embed_images and png,
                                       title=title))
    return html_path


class RunReportCallback(TrainerCallback):
    """Writes ``<output_dir>/report.html`` at train end (main process only). Must come *after*
    ``MetricsJsonlCallback`` in the callback list so the ``train_end`` line is already written.
    A failure is logged as a warning, never raised: the report must not break a finished training."""

    def __init__(self, embed_images: bool = False):
        self.embed_images = embed_images
        self.last_report: str | None = None

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        try:
            self.last_report = write_report(args.output_dir, embed_images=self.embed_images)
            logger.info("Run report written to %s", self.last_report)
        except Exception as e:  # noqa: BLE001
            logger.warning("Could not write the run report for %s: %r", args.output_dir, e)


def report_command(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], output: str | None = None,
                   embed_images: bool = False) -> int:
    """Entry point for ``trainwright report PATH... [--output FILE]``: returns a process exit code."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    try:
        path = write_report(list(paths), output, embed_images=embed_images)
    except (FileNotFoundError, ValueError, OSError) as e:
        print(f"trainwright report: error: {e}", file=sys.stderr)
        return 1
    print(f"Report written to {path}")
    return 0
