"""report.html + PNG charts from metrics.jsonl written by a replayed sequence of Trainer events."""
from __future__ import annotations

import json
import math
import os
import re
import time
import types

import pytest
import torch

from trainwright.callbacks import TrainerCallback, TrainerControl
from trainwright.loggers import MetricsJsonlCallback
from trainwright.report import RunReportCallback, ema, format_number, load_run, report_command, write_report
from trainwright.report.numbers import fmt_duration
from trainwright.state import TrainerState

N_STEPS, LOG_EVERY, EVAL_EVERY, STEPS_PER_EPOCH = 40, 4, 10, 20
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class FakeArgs(types.SimpleNamespace):
    def to_dict(self):
        return dict(vars(self))


def make_args(out, **kw):
    base = dict(output_dir=str(out), run_name=os.path.basename(str(out)), logging_dir=None, report_to=[],
                learning_rate=5e-5, num_train_epochs=2, max_steps=-1, per_device_train_batch_size=8,
                gradient_accumulation_steps=2, weight_decay=0.01, lr_scheduler_type="linear",
                warmup_steps=0, warmup_ratio=0.1, bf16=True, fp16=False, seed=42, optim="adamw_torch",
                metric_for_best_model="accuracy", greater_is_better=True)
    base.update(kw)
    return FakeArgs(**base)


def train_log(step, scale=1.0):
    return {"loss": scale * 2.0 / (1 + 0.1 * step) + 0.05 * math.sin(step), "grad_norm": scale * 3.0 / math.sqrt(step),
            "learning_rate": scale * 5e-5 * (1 - step / N_STEPS), "epoch": step / STEPS_PER_EPOCH,
            "samples_per_second": (100.0 + step % 7) / scale, "tokens_per_second": (3200.0 + 25 * (step % 5)) / scale,
            "num_input_tokens_seen": 256 * step}


EVALS = {10: (0.9, 0.625), 20: (0.7, 0.75), 30: (0.55, 0.8125), 40: (0.56, 0.8)}  # best accuracy at 30


def eval_log(step, scale=1.0):
    loss, acc = EVALS[step]
    acc = round(acc - 0.1 * (scale - 1), 4)
    return {"eval_loss": loss * scale, "eval_accuracy": acc, "eval_f1": round(acc - 0.05, 4),
            "eval_runtime": 1.25, "eval_samples_per_second": 80.0, "eval_steps_per_second": 10.0,
            "epoch": step / STEPS_PER_EPOCH}


FINAL = {"train_runtime": 83.25, "train_samples_per_second": 25.6, "train_steps_per_second": 0.48,
         "train_loss": 1.2345, "total_flos": 1.0e12, "epoch": 2.0}


def replay(out, *, stop=N_STEPS, crash=False, scale=1.0, nan_at=None, save_states=False, extra=(), **kw):
    """Drive MetricsJsonlCallback like the Trainer would; optionally write trainer_state.json files."""
    args = make_args(out, **kw)
    cbs = [MetricsJsonlCallback(), *extra]
    state, control = TrainerState(max_steps=N_STEPS), TrainerControl()
    model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.Linear(4, 2))
    model[0].weight.requires_grad_(False)
    ekw = dict(model=model, processing_class=None, optimizer=None, lr_scheduler=None,
               train_dataloader=None, eval_dataloader=None)

    def log(logs):
        state.log_history.append({**logs, "step": state.global_step})
        for cb in cbs:
            cb.on_log(args, state, control, logs=dict(logs), **ekw)

    for cb in cbs:
        cb.on_train_begin(args, state, control, **ekw)
    for step in range(1, stop + 1):
        state.global_step, state.epoch = step, step / STEPS_PER_EPOCH
        state.num_input_tokens_seen = 256 * step
        if step % LOG_EVERY == 0:
            logs = train_log(step, scale)
            if step == nan_at:
                logs["loss"] = float("nan")
            log(logs)
        if step % EVAL_EVERY == 0:
            metrics = eval_log(step, scale)
            log(metrics)
            if state.best_metric is None or metrics["eval_accuracy"] > state.best_metric:
                state.best_metric, state.best_global_step = metrics["eval_accuracy"], step
                state.best_model_checkpoint = os.path.join(str(out), f"checkpoint-{step}")
            if save_states:
                ckpt = os.path.join(str(out), f"checkpoint-{step}")
                os.makedirs(ckpt, exist_ok=True)
                state.save_to_json(os.path.join(ckpt, "trainer_state.json"))
    if not crash:
        log(FINAL)
        for cb in cbs:
            cb.on_train_end(args, state, control, **ekw)
        if save_states:
            state.save_to_json(os.path.join(str(out), "trainer_state.json"))
    return state


def assert_png(path, min_bytes=8000):
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) > min_bytes, (path, len(data))
    import matplotlib.image

    img = matplotlib.image.imread(path)
    assert img.shape[0] >= 300 and img.shape[1] >= 600


def chart_data(html_text) -> dict:
    """The JSON the page's charts are drawn from."""
    m = re.search(r'<script type="application/json" id="tw-report-data">(.*?)</script>', html_text, re.S)
    assert m
    return json.loads(m.group(1))


def assert_self_contained(html_text):
    """Nothing the page loads when viewed: no external script, style, frame, font or image (the PNG links and
    the <noscript> images are not loaded while JavaScript runs), no URL but uPlot's banner comment."""
    low = html_text.lower()
    for bad in ("<link", "<iframe", "@import", "url(", "xmlhttprequest", "fetch("):
        assert bad not in low, bad
    assert not re.search(r"<script[^>]*\ssrc\s*=", low)
    refs = re.findall(r'(?:src|href)="([^"]+)"', html_text)
    assert all(r.startswith("data:image/png;base64,") or re.fullmatch(r"[\w.-]+\.png", r) for r in refs), refs
    assert re.findall(r"https?://[^\s\"')]*", html_text) == ["https://github.com/leeoniya/uPlot"]
    assert html_text.count("<script") == 3  # chart data (JSON), uPlot, report.js


def cells(html_text, row):
    """Text of the <td> cells of the table row whose header is ``row``."""
    m = re.search(r"<tr><th>" + re.escape(row) + r"</th>(.*?)</tr>", html_text)
    assert m, row
    return re.findall(r"<td[^>]*>(.*?)</td>", m.group(1))


# ------------------------------------------------------------------------------------------------
def test_single_finished_run(tmp_path):
    run = tmp_path / "run-a"
    state = replay(run, save_states=True)
    path = write_report(str(run))
    assert path == str(run / "report.html")
    text = (run / "report.html").read_text()
    for name in ("loss", "learning_rate", "grad_norm", "eval_accuracy", "eval_f1", "throughput"):
        png = run / f"report_{name}.png"
        assert_png(png)
        assert f'src="report_{name}.png"' in text                         # relative path
    assert not (run / "report_eval_runtime.png").exists()
    assert_self_contained(text)
    data = chart_data(text)
    assert [c["key"] for c in data["charts"]] == ["loss", "learning_rate", "grad_norm", "eval_accuracy", "eval_f1",
                                                  "samples_per_second", "tokens_per_second"]
    loss = {s["label"]: s for s in data["charts"][0]["series"]}
    assert loss["eval loss"]["x"] == [10, 20, 30, 40] and loss["eval loss"]["y"] == [0.9, 0.7, 0.55, 0.56]
    assert loss["train loss (raw)"]["x"] == list(range(4, 41, 4))

    # numbers equal the logged ones
    assert cells(text, "eval_accuracy") == ["0.8"]                        # final evaluation (step 40)
    assert cells(text, "eval_f1") == ["0.75"]
    assert cells(text, "eval_loss") == ["0.56"]
    assert cells(text, "train_loss") == ["1.2345"]
    assert cells(text, "last training loss") == [format_number(state.log_history[-3]["loss"])]
    best = cells(text, "best metric")[0]
    assert best == "eval_accuracy = 0.8125 at step 30 (from trainer_state.json)"
    assert cells(text, "best checkpoint") == [str(run / "checkpoint-30")]
    assert cells(text, "runtime") == ["83.25 s (0:01:23)"]
    assert cells(text, "tokens seen") == ["10,240"]
    assert cells(text, "learning_rate") == ["5e-05"]
    assert cells(text, "per_device_train_batch_size") == ["8"]
    assert cells(text, "gradient_accumulation_steps") == ["2"]
    assert cells(text, "num_train_epochs") == ["2"]
    assert cells(text, "weight_decay") == ["0.01"]
    assert cells(text, "lr_scheduler_type") == ["linear"]
    assert cells(text, "warmup") == ["ratio 0.1"]
    assert cells(text, "precision") == ["bf16"]
    assert cells(text, "seed") == ["42"]
    assert cells(text, "status") == ["finished at step 40"]
    assert cells(text, "model") == ["Sequential (46 params, 14 trainable)"]
    hw = cells(text, "hardware")[0]
    assert hw.startswith("cpu, ") and f"torch {torch.__version__}" in hw


def test_crashed_run_without_train_end(tmp_path):
    run = tmp_path / "crashed"
    replay(run, stop=23, crash=True, nan_at=8)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 24, "loss": 0.3, "learn')                        # cut short by the crash
    path = write_report(run)
    text = open(path).read()
    status = cells(text, "status")[0]
    assert status.startswith("incomplete") and "step 20" in status
    assert 'class="warn"' in text
    assert cells(text, "eval_accuracy") == ["0.75"]                       # last evaluation (step 20)
    assert cells(text, "best metric") == ["eval_accuracy = 0.75 at step 20 (from eval logs)"]
    assert cells(text, "non-finite training losses") == ["1"]
    assert "approximate" in cells(text, "runtime")[0]
    assert cells(text, "samples seen") == ["320 (approximate)"]                 # 20 steps x 8 x 2 accumulation
    assert "train_loss" not in re.findall(r"<tr><th>(.*?)</th>", text)
    for name in ("loss", "learning_rate", "grad_norm", "eval_accuracy", "throughput"):
        assert_png(run / f"report_{name}.png")


@pytest.mark.slow
def test_several_runs_one_report(tmp_path):
    a, b = tmp_path / "lr-5e-5", tmp_path / "lr-1e-4"
    replay(a)
    replay(b, scale=1.3, stop=27, crash=True, learning_rate=1e-4, run_name="lr-1e-4")
    out = tmp_path / "compare" / "compare.html"
    path = write_report([str(a), str(b)], output=str(out))
    assert path == str(out)
    text = out.read_text()
    assert re.search(r"<tr><th></th><th>lr-5e-5</th><th>lr-1e-4</th></tr>", text)
    assert cells(text, "learning_rate") == ["5e-05", "0.0001"]
    assert cells(text, "eval_accuracy") == ["0.8", "0.72"]
    assert cells(text, "train_runtime") == ["83.25", "—"]
    assert cells(text, "status")[0].startswith("finished") and cells(text, "status")[1].startswith("incomplete")
    for name in ("loss", "learning_rate", "grad_norm", "eval_accuracy", "throughput"):
        assert_png(tmp_path / "compare" / f"compare_{name}.png")
    data = chart_data(text)
    assert data["runs"] == [{"name": "lr-5e-5", "colour": "#1f77b4"}, {"name": "lr-1e-4", "colour": "#d62728"}]
    lr = data["charts"][1]["series"]
    assert [(s["label"], s["run"]) for s in lr] == [("lr-5e-5", 0), ("lr-1e-4", 1)]
    assert lr[1]["x"] == [4.0, 8.0, 12.0, 16.0, 20.0, 24.0] and lr[1]["y"][0] == pytest.approx(1.3 * 4.5e-5)
    assert 'data-run="0"' in text and 'data-run="1"' in text                # the run checkboxes


@pytest.mark.slow
def test_fallback_to_trainer_state_of_newest_checkpoint(tmp_path):
    run = tmp_path / "no-jsonl"
    replay(run, stop=30, crash=True, save_states=True)
    os.remove(run / "metrics.jsonl")
    loaded = load_run(run)
    assert loaded.source == str(run / "checkpoint-30" / "trainer_state.json")
    text = open(write_report(run)).read()
    assert "checkpoint-30/trainer_state.json" in cells(text, "status")[0]
    assert cells(text, "eval_accuracy") == ["0.8125"]
    # no metrics.jsonl -> no arguments -> the best metric's name is unknown
    assert cells(text, "best metric") == ["0.8125 at step 30 (from checkpoint-30/trainer_state.json)"]
    assert cells(text, "learning_rate") == ["—"]
    assert_png(run / "report_loss.png")
    # a training_args.json next to the state supplies the arguments
    with open(run / "checkpoint-30" / "training_args.json", "w") as f:
        json.dump(make_args(run).to_dict(), f)
    text = open(write_report(run)).read()
    assert cells(text, "best metric") == [
        "eval_accuracy = 0.8125 at step 30 (from checkpoint-30/trainer_state.json)"]
    assert cells(text, "learning_rate") == ["5e-05"]


def test_embedded_images(tmp_path):
    run = tmp_path / "embed"
    replay(run, stop=12, crash=True)
    text = open(write_report(run, output=str(tmp_path / "single.html"), embed_images=True)).read()
    assert text.count('src="data:image/png;base64,') >= 4
    assert (tmp_path / "single_loss.png").exists()


def test_run_report_callback(tmp_path, caplog):
    run = tmp_path / "auto"
    cb = RunReportCallback()
    replay(run, stop=20, extra=[cb])
    assert cb.last_report == str(run / "report.html")
    assert cells((run / "report.html").read_text(), "status") == ["finished at step 20"]
    # a failing report is a warning, not an exception
    broken = tmp_path / "broken"
    args = make_args(broken)
    cb.on_train_end(args, TrainerState(), TrainerControl())
    assert "Could not write the run report" in caplog.text


def test_report_command(tmp_path, capsys):
    run = tmp_path / "cli"
    replay(run, stop=12, crash=True)
    assert report_command([str(run)]) == 0
    assert str(run / "report.html") in capsys.readouterr().out
    assert report_command([str(tmp_path / "nothing-here")]) == 1
    err = capsys.readouterr().err
    assert "nothing-here" in err and "metrics.jsonl" in err
    with pytest.raises(FileNotFoundError):
        write_report(str(tmp_path / "nothing-here"))


def test_number_format_and_ema():
    assert format_number(0.8125) == "0.8125" and format_number(5e-5) == "5e-05"
    assert format_number(10240) == "10,240" and format_number(None) == "—"
    assert format_number(float("nan")) == "NaN" and format_number(2.0) == "2"
    assert ema([3.0] * 50) == pytest.approx([3.0] * 50)                   # debiased: no warm-up dip
    smoothed = ema([1.0, float("nan"), 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0], weight=0.5)
    assert math.isnan(smoothed[1]) and smoothed[0] == 1.0
    assert max(smoothed[5:]) < 0.8 and min(x for x in smoothed[5:] if not math.isnan(x)) > 0.2


# ------------------------------------------------------------------------------------------------
# where a report of several runs goes
# ------------------------------------------------------------------------------------------------
def _files(d):
    return {p.name: p.read_bytes() for p in d.iterdir() if p.is_file()}


def test_several_runs_never_write_into_a_run(tmp_path, monkeypatch, capsys):
    from trainwright.cli import main

    a, b = tmp_path / "runs" / "a", tmp_path / "runs" / "b"
    replay(a, stop=12, crash=True)
    replay(b, stop=12, crash=True, scale=1.2)
    write_report(a, png=False)
    before_a, before_b = _files(a), _files(b)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert main(["report", str(a), str(b)]) == 0                             # the CLI
    assert f"Report written to {work / 'report.html'}" in capsys.readouterr().out
    assert (work / "report.html").is_file() and (work / "report_loss.png").is_file()
    assert write_report([a, b], png=False) == str(work / "report.html")      # the API
    assert _files(a) == before_a and _files(b) == before_b                   # neither run touched
    # from inside a run directory: a name no run uses, that run's own report stays
    monkeypatch.chdir(a)
    assert write_report([a, b], png=False) == str(a / "compare.html")
    assert (a / "report.html").read_bytes() == before_a["report.html"]
    # one run: its own directory; --output: where it says
    assert write_report(b, png=False) == str(b / "report.html")
    out = tmp_path / "out" / "cmp.html"
    assert main(["report", str(a), str(b), "--output", str(out)]) == 0 and out.is_file()


# ------------------------------------------------------------------------------------------------
# evaluations outside training are not training evaluations
# ------------------------------------------------------------------------------------------------
def _trainer(out, tokenizer, make_tiny_model, data, callbacks=(), **kw):
    from transformers import DataCollatorWithPadding

    from trainwright import Trainer, TrainingArguments

    base = dict(max_steps=40, per_device_train_batch_size=8, logging_steps=4, eval_strategy="steps",
                eval_steps=10, save_steps=10, learning_rate=1e-3, report_to="none", seed=0,
                write_report=False, disable_tqdm=True)
    base.update(kw)
    return Trainer(make_tiny_model(), TrainingArguments(str(out), **base), train_dataset=data[0],
                   eval_dataset=data[1], data_collator=DataCollatorWithPadding(tokenizer),
                   callbacks=list(callbacks))


def test_standalone_evaluations_are_not_drawn(tmp_path, tokenizer, make_tiny_model, sst2_small):
    out = tmp_path / "run"
    data = (sst2_small[0], sst2_small[1].select(range(32)))
    trainer = _trainer(out, tokenizer, make_tiny_model, data, max_steps=20, save_steps=20)
    trainer.train()
    trainer.evaluate()                                                       # the user's, after training
    _trainer(out, tokenizer, make_tiny_model, data).evaluate()               # as `trainwright evaluate`: step 0
    lines = read_lines(out)
    marked = [r for r in lines if r.get("standalone")]
    assert [r["step"] for r in marked] == [20, 0] and all("eval_loss" in r for r in marked)
    assert not any(r.get("standalone") for r in lines if "loss" in r or r.get("event"))
    run = load_run(out)
    assert [r["step"] for r in run.eval_logs] == [10, 20]
    assert [r["step"] for r in run.standalone] == [20, 0]
    text = open(write_report(out)).read()
    loss = {s["label"]: s for s in chart_data(text)["charts"][0]["series"]}
    assert loss["eval loss"]["x"] == [10, 20]                                # no step-0 point, no second 20
    assert "<h2>Evaluations outside training</h2>" in text
    header = re.search(r"<h2>Evaluations outside training</h2>.*?<tr>(.*?)</tr>", text, re.S).group(1)
    assert re.findall(r"<th>(step \d+)", header) == ["step 20", "step 0"]
    assert cells(text, "eval_loss")[0] == format_number(run.eval_logs[-1]["eval_loss"])  # final metrics: training's


def read_lines(out):
    from trainwright.loggers.jsonl import read_jsonl
    return read_jsonl(os.path.join(str(out), "metrics.jsonl"))


def test_standalone_evaluation_after_a_crash_and_in_older_files(tmp_path):
    # a crashed run (no train_end) evaluated by a new Trainer: the line is marked, so it is not a training point
    run = tmp_path / "crashed"
    replay(run, stop=23, crash=True)
    args, state = make_args(run), TrainerState()
    MetricsJsonlCallback().on_log(args, state, TrainerControl(), logs=eval_log(10))
    assert read_lines(run)[-1]["standalone"] is True
    loaded = load_run(run)
    assert [r["step"] for r in loaded.eval_logs] == [10, 20] and [r["step"] for r in loaded.standalone] == [0]
    # a file written before the marker existed: a line after train_end is outside training too
    old = tmp_path / "old"
    replay(old, stop=20)
    with open(old / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 0, "epoch": None, "time": 1.0, **eval_log(20)}) + "\n")
    loaded = load_run(old)
    assert [r["step"] for r in loaded.eval_logs] == [10, 20] and [r["step"] for r in loaded.standalone] == [0]
    # trainer_state.json only: the records after the end-of-training summary
    os.remove(old / "metrics.jsonl")
    state = replay(tmp_path / "st", stop=20)
    state.log_history.append({**eval_log(20), "step": 20})
    state.save_to_json(str(old / "trainer_state.json"))
    loaded = load_run(old)
    assert [r["step"] for r in loaded.eval_logs] == [10, 20] and [r["step"] for r in loaded.standalone] == [20]


# ------------------------------------------------------------------------------------------------
# a resumed run is summed over its train() calls
# ------------------------------------------------------------------------------------------------
class _SlowThenCrash(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 22:
            time.sleep(0.4)                                                  # time the resumed call redoes
        if state.global_step == 27:
            raise RuntimeError("simulated crash")


def test_resumed_run_sums_runtime_and_samples(tmp_path, tokenizer, make_tiny_model, sst2_small):
    data = (sst2_small[0], sst2_small[1].select(range(32)))
    whole = _trainer(tmp_path / "whole", tokenizer, make_tiny_model, data).train()
    out = tmp_path / "resumed"
    with pytest.raises(RuntimeError, match="simulated crash"):
        _trainer(out, tokenizer, make_tiny_model, data, callbacks=[_SlowThenCrash()]).train()
    resumed = _trainer(out, tokenizer, make_tiny_model, data).train(resume_from_checkpoint=True)
    assert resumed.training_loss == whole.training_loss                     # the Trainer restores the loss sums

    lines = read_lines(out)
    begins = [r for r in lines if r.get("event") == "train_begin"]
    final = next(r for r in lines if "train_runtime" in r)
    assert len(begins) == 2 and begins[1]["resumed_from_step"] == 20
    first_call = begins[1]["previous_last_time"] - begins[0]["time"]        # up to the trimmed step-24 line
    assert first_call > 0.4
    expected = first_call + final["train_runtime"]
    run = load_run(out)
    assert len(run.segments) == 2 and run.resumed
    text = open(write_report(out, png=False)).read()
    assert cells(text, "status") == ["finished at step 40 (resumed at step 20)"]
    assert cells(text, "runtime") == [f"{fmt_duration(expected)} (wall clock, approximate), over 2 train() calls"]
    assert cells(text, "samples seen") == ["320"] and lines[-1]["samples_seen"] == 320
    assert cells(text, "train_runtime") == [format_number(round(expected, 4))]
    assert cells(text, "train_samples_per_second") == [format_number(round(320 / expected, 3))]
    assert cells(text, "train_steps_per_second") == [format_number(round(40 / expected, 3))]
    assert cells(text, "train_loss") == [format_number(whole.training_loss)]
    # the uninterrupted run: the Trainer's own figures
    text = open(write_report(tmp_path / "whole", png=False)).read()
    assert cells(text, "train_runtime") == [format_number(whole.metrics["train_runtime"])]
    assert cells(text, "samples seen") == ["320"] and cells(text, "status") == ["finished at step 40"]


def test_segments_from_replayed_lines(tmp_path):
    """Two finished calls (train to 20, then resumed to 40): runtimes add up; rates are recomputed."""
    run = tmp_path / "two"
    replay(run, stop=20)
    lines = read_lines(run)
    lines[-2]["train_runtime"] = 10.0                                        # the first call's summary
    second = [dict(lines[0], step=20, resumed_from_step=20, time=lines[-1]["time"] + 5),
              {"step": 40, "epoch": 2.0, "time": lines[-1]["time"] + 30, "loss": 0.5},
              {"step": 40, "epoch": 2.0, "time": lines[-1]["time"] + 31, **FINAL, "train_runtime": 30.0},
              {"event": "train_end", "step": 40, "time": lines[-1]["time"] + 31, "samples_seen": 640}]
    with open(run / "metrics.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in lines + second)
    text = open(write_report(run, png=False)).read()
    assert cells(text, "runtime") == ["40 s (0:00:40), over 2 train() calls"]
    assert cells(text, "train_runtime") == ["40"]
    assert cells(text, "train_samples_per_second") == ["16"]                # 640 samples / 40 s
    assert cells(text, "train_steps_per_second") == ["1"]
    assert cells(text, "train_loss") == [format_number(FINAL["train_loss"])]


# ------------------------------------------------------------------------------------------------
# PNG: the y-axis label stays inside the image
# ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_png_axis_label_not_clipped(tmp_path):
    import matplotlib.image

    run = tmp_path / "lr"
    replay(run, stop=20)
    lines = read_lines(run)
    for r in lines:
        if "learning_rate" in r:
            r["learning_rate"] = 1.5e-4 * (1 - r["step"] / 40)              # tick labels such as 0.00014
    with open(run / "metrics.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in lines)
    write_report(run)
    img = matplotlib.image.imread(run / "report_learning_rate.png")
    ink = (img[:, :, :3].mean(axis=2) < 0.5).any(axis=0)                     # columns holding dark pixels
    assert not ink[:3].any(), "the y-axis label touches the left edge"
    assert ink[:40].any()                                                   # ... and is there
