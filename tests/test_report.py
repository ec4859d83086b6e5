"""report.html + PNG charts from metrics.jsonl written by a replayed sequence of Trainer events."""
from __future__ import annotations

import json
import math
import os
import re
import types

import pytest
import torch

from trainwright.callbacks import TrainerControl
from trainwright.loggers import MetricsJsonlCallback
from trainwright.report import RunReportCallback, ema, format_number, load_run, report_command, write_report
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
    return {"loss": scale * 2.0 / (1 + 0.1 * step) + 0.05 * math.sin(step), "grad_norm": 3.0 / math.sqrt(step),
            "learning_rate": 5e-5 * (1 - step / N_STEPS), "epoch": step / STEPS_PER_EPOCH,
            "samples_per_second": 100.0 + step % 7, "tokens_per_second": 3200.0 + 25 * (step % 5),
            "num_input_tokens_seen": 256 * step}


EVALS = {10: (0.9, 0.625), 20: (0.7, 0.75), 30: (0.55, 0.8125), 40: (0.56, 0.8)}  # best accuracy at 30


def eval_log(step, scale=1.0):
    loss, acc = EVALS[step]
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
    assert "<script" not in text.lower()

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
    assert "train_loss" not in re.findall(r"<tr><th>(.*?)</th>", text)
    for name in ("loss", "learning_rate", "grad_norm", "eval_accuracy", "throughput"):
        assert_png(run / f"report_{name}.png")


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
    assert cells(text, "eval_accuracy") == ["0.8", "0.75"]
    assert cells(text, "train_runtime") == ["83.25", "—"]
    assert cells(text, "status")[0].startswith("finished") and cells(text, "status")[1].startswith("incomplete")
    for name in ("loss", "learning_rate", "grad_norm", "eval_accuracy", "throughput"):
        assert_png(tmp_path / "compare" / f"compare_{name}.png")
    # default output for several runs: the first run's directory
    assert write_report([a, b]) == str(a / "report.html")


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
