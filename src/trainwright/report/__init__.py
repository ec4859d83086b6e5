"""Run report: one self-contained ``report.html`` (interactive charts) + PNG charts, from one or several runs'
``metrics.jsonl``.

``write_report(run_dirs, output=None) -> str`` (path of the HTML file)

* Input per run directory (the Trainer's ``output_dir``): ``metrics.jsonl``, else the ``log_history`` of the
  newest ``trainer_state.json`` (``runs.py``). A crashed run works; a resumed run is summed over its
  ``train()`` calls (``summary.py``); evaluations outside training are listed, not drawn.
* Output (``writer.output_path``): one run: ``<run_dir>/report.html``; several runs: ``report.html`` in the
  current directory (``compare.html`` when that is one of the runs), never inside a run; ``output`` may be an
  ``.html`` path or a directory. PNGs are written next to it as ``<stem>_<chart>.png`` (``png.py``).
* The page (``page.py``) needs no network and no other file: the charts (``charts.py``) are drawn in the
  browser by the vendored uPlot (``assets/``, MIT) and ``assets/report.js``: hover for values, drag or
  Ctrl+wheel to zoom, legend entries and run checkboxes to hide lines.
* ``RunReportCallback`` writes ``<output_dir>/report.html`` at train end (after ``MetricsJsonlCallback``).

Only the standard library is imported here; matplotlib loads when the PNGs are drawn.
"""
from __future__ import annotations

from .numbers import ema, format_number
from .runs import RunData, Segment, load_run
from .summary import best_of, final_metrics
from .writer import RunReportCallback, output_path, report_command, write_report

__all__ = ["RunData", "Segment", "RunReportCallback", "load_run", "write_report", "report_command", "output_path",
           "format_number", "ema", "best_of", "final_metrics"]
