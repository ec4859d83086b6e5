"""bench/gpu.sh --smoke: the GPU benchmark's code paths end to end on the CPU with tiny sizes, without `datasets`.

The GPU machine has no `datasets`; the smoke run's workers make `import datasets` fail, so this also checks that
trainwright imports and trains without it. The repository's docs are not touched (results go to --out).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT


@pytest.mark.slow
def test_gpu_benchmark_smoke_runs_end_to_end_without_datasets(tmp_path):
    docs = ROOT / "docs" / "benchmarks.md"
    before = docs.read_text() if docs.exists() else None
    env = {**os.environ, "PYTHON": sys.executable, "OUT": ""}
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu.sh"), "--smoke", "--out", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "gpu_bench.jsonl").read_text().splitlines()]
    assert {(r["kind"], r["scenario"]) for r in rows} == {
        (k, s) for k in ("hf", "ours") for s in ("cls-sst2", "cls-imdb", "clm", "checkpoint")}
    assert not any(r["datasets_importable"] for r in rows)
    for r in rows:
        assert r["steps"] > 0 and r["samples_s"] > 0 and r["tokens_s"] > 0, r
    ckpt = [r for r in rows if r["scenario"] == "checkpoint"]
    assert all(r["ckpt_mib"] > 0 and r["stall_ms"] == r["stall_ms"] for r in ckpt)  # measured (not NaN)
    report = (tmp_path / "gpu_bench.md").read_text()
    assert "SMOKE RUN" in report and "cls-imdb" in report and "checkpoint" in report
    section = (tmp_path / "benchmarks.md").read_text()
    assert "<!-- bench:gpu -->" in section
    assert (docs.read_text() if docs.exists() else None) == before  # the repository's docs untouched
