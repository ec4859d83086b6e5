"""The report opened in a real headless Chromium (tests/browser_support.py): every chart is drawn, the page
raises no error and loads nothing, and hover, zoom, legend and run toggles work as a user drives them."""
from __future__ import annotations

import json
import re

import pytest

from browser_support import check_report, chromium_path
from test_report import MetricsJsonlCallback, TrainerControl, TrainerState, eval_log, make_args, replay
from trainwright.report import write_report

pytestmark = pytest.mark.skipif(
    chromium_path() is None,
    reason="Chromium is not installed (Debian package `chromium`): `make browser` installs it; CI runs it")


def _numbers(values):
    return [v for v in values if re.fullmatch(r"-?[\d.]+(e-?\d+)?", v)]


def _assert_every_chart_drawn(result, html_path):
    data = json.loads(re.search(r'id="tw-report-data">(.*?)</script>', open(html_path).read(), re.S).group(1))
    assert result["errors"] == []
    assert result["resources"] == []                                        # no file, no network
    assert result["containers"] == len(data["charts"]) == len(result["charts"])
    for chart in result["charts"]:
        assert chart["drawn"], chart
        assert chart["canvas"][0] >= 280 and chart["canvas"][1] >= 200, chart
        assert chart["yAxisFits"], chart


@pytest.mark.slow
def test_three_runs_compared(tmp_path):
    a, b, c = tmp_path / "lr-5e-5", tmp_path / "lr-1e-4", tmp_path / "crashed"
    replay(a)
    replay(b, scale=1.3, learning_rate=1e-4)
    replay(c, scale=0.8, stop=23, crash=True, nan_at=12)
    path = write_report([a, b, c], output=str(tmp_path / "cmp" / "report.html"), png=False)
    result = check_report(path)
    _assert_every_chart_drawn(result, path)
    keys = [ch["key"] for ch in result["charts"]]
    assert keys == ["loss", "learning_rate", "grad_norm", "eval_accuracy", "eval_f1", "samples_per_second",
                    "tokens_per_second"]
    assert result["charts"][1]["yTicks"][-1] in ("6e-5", "7e-5", "8e-5")   # learning rate: compact ticks
    loss = result["charts"][0]
    assert set(loss["runPixels"]) == {"0", "1", "2"}                         # each run's lines are on it
    steps = result["steps"]
    # hover: the legend shows the step and values; the other charts' cursors follow
    assert steps["hover"]["idx"] is not None and len(_numbers(steps["hover"]["values"])) >= 4
    assert all(i is not None for i in steps["hover"]["others"])
    # drag zooms the x range, double-click resets, a plain wheel scrolls the page, Ctrl+wheel zooms
    full = steps["drag"]["full"]
    assert full == [4, 40]
    lo, hi = steps["drag"]["zoomed"]
    assert full[0] < lo < hi < full[1] and hi - lo < 0.7 * (full[1] - full[0])
    assert steps["dblclick"] == full and steps["plainWheel"] == full
    lo, hi = steps["ctrlWheel"]
    assert full[0] <= lo < hi <= full[1] and hi - lo < full[1] - full[0]
    # a click on a legend entry hides that line
    assert steps["legendClick"] == {"shown": False}
    # the run checkbox hides run 1 on every chart, and shows it again
    toggle = steps["toggle"]
    assert toggle["present"] and toggle["hidden"] == [0] * len(keys)
    assert toggle["pixelsOff"] == [0] * len(keys)
    assert toggle["pixelsBack"][0] > 20 and toggle["pixelsBack"][1] > 20


def test_single_crashed_run_with_standalone_evaluation(tmp_path):
    run = tmp_path / "crashed"
    replay(run, stop=27, crash=True, nan_at=8)
    MetricsJsonlCallback().on_log(make_args(run), TrainerState(), TrainerControl(), logs=eval_log(30))
    path = write_report(run, embed_images=True)
    text = open(path).read()
    assert "Evaluations outside training" in text and 'id="run-toggles"' not in text
    result = check_report(path)
    _assert_every_chart_drawn(result, path)
    assert result["steps"]["toggle"] == {"present": False}
    assert result["steps"]["legendClick"] == {"shown": False}
