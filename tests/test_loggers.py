"""Trackers and metrics.jsonl, driven directly with a replayed sequence of Trainer events (real training runs
through each tracker: tests/test_trackers.py)."""
from __future__ import annotations

import glob
import importlib.util
import json
import math
import os
import subprocess
import sys
import types

import pytest
import torch

from trainwright.callbacks import TrainerControl
from trainwright.errors import ConfigError
from trainwright.loggers import MetricsJsonlCallback, get_reporting_callbacks, resolve_report_to
from trainwright.loggers import jsonl as jsonl_mod
from trainwright.state import TrainerState

N_STEPS, LOG_EVERY, EVAL_EVERY, STEPS_PER_EPOCH = 20, 5, 10, 10


# ------------------------------------------------------------------------------------------------
# a replayed training run
# ------------------------------------------------------------------------------------------------
class FakeArgs(types.SimpleNamespace):
    def to_dict(self):
        return {k: v for k, v in vars(self).items()}

    def to_json_string(self):
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def make_args(out, **kw):
    base = dict(
        output_dir=str(out), run_name="replay-run", logging_dir=None, report_to=[],
        learning_rate=5e-5, num_train_epochs=2, max_steps=-1, per_device_train_batch_size=8,
        gradient_accumulation_steps=2, weight_decay=0.01, lr_scheduler_type="linear", warmup_steps=0,
        warmup_ratio=0.1, bf16=False, fp16=False, seed=42, logging_steps=LOG_EVERY, eval_steps=EVAL_EVERY,
        metric_for_best_model="accuracy", greater_is_better=True, label_names=["labels"],
        fsdp_config={"note": "x" * 7000},
    )
    base.update(kw)
    return FakeArgs(**base)


def train_log(step):
    return {"loss": round(2.0 / (1 + 0.1 * step), 4), "grad_norm": 1.5 / step,
            "learning_rate": 5e-5 * (1 - step / N_STEPS), "epoch": step / STEPS_PER_EPOCH,
            "samples_per_second": 100.0 + step, "tokens_per_second": 3200.0 + 10 * step,
            "num_input_tokens_seen": 512 * step}


EVALS = {10: {"eval_loss": 0.6, "eval_accuracy": 0.75}, 20: {"eval_loss": 0.45, "eval_accuracy": 0.8125}}


def eval_log(step):
    return {**EVALS[step], "eval_runtime": 1.25, "eval_samples_per_second": 80.0,
            "eval_steps_per_second": 10.0, "epoch": step / STEPS_PER_EPOCH}


FINAL = {"train_runtime": 12.5, "train_samples_per_second": 25.6, "train_steps_per_second": 1.6,
         "train_loss": 1.2345, "total_flos": 1.0e12, "epoch": 2.0}


def replay(callbacks, args, state=None, *, start=0, stop=N_STEPS, crash=False, model=None, nan_at=None):
    """on_train_begin, then per step: a training log every LOG_EVERY steps, an evaluation every
    EVAL_EVERY steps; then the final train log and on_train_end (unless ``crash``)."""
    state = state or TrainerState()
    state.global_step = start
    state.max_steps = N_STEPS
    state.epoch = start / STEPS_PER_EPOCH
    control = TrainerControl()
    model = model if model is not None else torch.nn.Linear(4, 2)
    kw = dict(model=model, processing_class=None, optimizer=None, lr_scheduler=None,
              train_dataloader=None, eval_dataloader=None)

    def log(logs):
        state.log_history.append({**logs, "step": state.global_step})
        for cb in callbacks:
            cb.on_log(args, state, control, logs=dict(logs), **kw)

    for cb in callbacks:
        cb.on_train_begin(args, state, control, **kw)
    for step in range(start + 1, stop + 1):
        state.global_step = step
        state.epoch = step / STEPS_PER_EPOCH
        state.num_input_tokens_seen = 512 * step
        if step % LOG_EVERY == 0:
            logs = train_log(step)
            if nan_at == step:
                logs["loss"] = float("nan")
                logs["grad_norm"] = float("inf")
            log(logs)
        if step % EVAL_EVERY == 0:
            metrics = eval_log(step)
            log(metrics)
            if state.best_metric is None or metrics["eval_accuracy"] > state.best_metric:
                state.best_metric = metrics["eval_accuracy"]
                state.best_global_step = step
                state.best_model_checkpoint = os.path.join(args.output_dir, f"checkpoint-{step}")
            for cb in callbacks:
                cb.on_evaluate(args, state, control, metrics=metrics, **kw)
    if not crash:
        log(FINAL)
        for cb in callbacks:
            cb.on_train_end(args, state, control, **kw)
    return state


# ------------------------------------------------------------------------------------------------
# report_to resolution
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [None, "none", [], "jsonl", ["jsonl"], ["none"], "", "NONE"])
def test_report_to_nothing(value):
    assert resolve_report_to(value) == []
    assert get_reporting_callbacks(value) == []


def test_report_to_names_lists_and_all():
    for pkg in ("tensorboard", "mlflow", "wandb"):  # all in the dev extra
        pytest.importorskip(pkg)
    from transformers.integrations.integration_utils import get_available_reporting_integrations

    assert resolve_report_to("tensorboard") == ["tensorboard"]
    assert resolve_report_to(["mlflow", "tensorboard", "mlflow", "jsonl"]) == ["mlflow", "tensorboard"]
    assert resolve_report_to("tensorboard,wandb") == ["tensorboard", "wandb"]
    assert resolve_report_to("all") == get_available_reporting_integrations()  # transformers' "all"
    assert {"tensorboard", "mlflow", "wandb"} <= set(resolve_report_to(["all"]))
    (cb,) = get_reporting_callbacks(["tensorboard"])
    from transformers.integrations import TensorBoardCallback as HFTensorBoardCallback

    assert type(cb).__name__ == "TensorBoardCallback" and isinstance(cb, HFTensorBoardCallback)


@pytest.mark.parametrize("bad,nearest", [("tensorbord", "tensorboard"), (["wandb", "mlfow"], "mlflow"),
                                         ("WandB-x", "wandb"), ("comet", "comet_ml")])
def test_report_to_unknown_name(bad, nearest):
    with pytest.raises(ConfigError) as e:
        resolve_report_to(bad)
    msg = str(e.value)
    wrong = bad if isinstance(bad, str) else bad[1]
    assert repr(wrong) in msg
    assert f'Did you mean report_to="{nearest}"' in msg
    installed = [n for n in ("mlflow", "tensorboard", "wandb") if importlib.util.find_spec(n)]
    assert f"Installed here: {', '.join(installed)}." in msg  # the installed trackers, in transformers' order
    for name in ("tensorboard", "mlflow", "wandb", "comet_ml", "clearml", "trackio", "none", "all"):
        assert name in msg


@pytest.mark.parametrize("name,pip", [("trackio", "pip install trackio"), ("comet_ml", "pip install comet_ml"),
                                      ("clearml", "pip install clearml")])
def test_report_to_transformers_integration_not_installed(name, pip):
    if importlib.util.find_spec(name):
        pytest.skip(f"{name} is installed here")
    with pytest.raises(ConfigError) as e:
        resolve_report_to(["tensorboard", name])
    assert f'report_to="{name}" needs the {name} package: {pip}' in str(e.value)


def test_report_to_wrong_type():
    with pytest.raises(ConfigError, match="report_to=3"):
        resolve_report_to(3)


def test_report_to_missing_package(monkeypatch):
    import trainwright.loggers as loggers

    for pkg in ("tensorboard", "wandb"):
        pytest.importorskip(pkg)
    real = loggers._is_installed
    monkeypatch.setattr(loggers, "_is_installed", lambda pkg: pkg != "mlflow" and real(pkg))
    with pytest.raises(ConfigError) as e:
        get_reporting_callbacks(["tensorboard", "mlflow"])
    assert 'report_to="mlflow" needs the mlflow package: pip install "trainwright[mlflow]"' in str(e.value)


def test_report_to_mlflow_disabled(monkeypatch):
    """transformers' DISABLE_MLFLOW_INTEGRATION: "all" leaves MLflow out; naming it is a clear error."""
    pytest.importorskip("mlflow")
    monkeypatch.setenv("DISABLE_MLFLOW_INTEGRATION", "TRUE")
    assert "mlflow" not in resolve_report_to("all")
    with pytest.raises(ConfigError, match="DISABLE_MLFLOW_INTEGRATION=TRUE"):
        resolve_report_to("mlflow")


def test_import_is_lazy():
    code = ("import sys, trainwright.loggers, trainwright.report; "
            "bad = [m for m in ('tensorboard', 'mlflow', 'wandb', 'matplotlib', 'torch.utils.tensorboard', "
            "'transformers.integrations.integration_utils') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


# ------------------------------------------------------------------------------------------------
# metrics.jsonl
# ------------------------------------------------------------------------------------------------
def _strict_lines(path):
    def no_constants(name):
        raise AssertionError(f"non-standard JSON constant {name}")

    with open(path, encoding="utf-8") as f:
        return [json.loads(line, parse_constant=no_constants) for line in f]


def test_jsonl_full_run(tmp_path):
    args = make_args(tmp_path)
    state = replay([MetricsJsonlCallback()], args, nan_at=15)
    lines = _strict_lines(tmp_path / "metrics.jsonl")
    begin, *logs, end = lines
    assert begin["event"] == "train_begin" and begin["run_name"] == "replay-run"
    assert begin["args"]["learning_rate"] == 5e-5 and begin["args"]["label_names"] == ["labels"]
    assert begin["model"] == "Linear" and begin["num_parameters"] == 10 and begin["trainable_parameters"] == 10
    hw = begin["hardware"]
    assert hw["device"] == "cpu" and hw["torch"] == torch.__version__ and hw["cpu_count"] == os.cpu_count()
    assert "cuda" in hw
    assert end["event"] == "train_end" and end["step"] == N_STEPS and end["best_metric"] == 0.8125
    assert [r["step"] for r in logs] == [5, 10, 10, 15, 20, 20, 20]
    # one JSON object per on_log: step/epoch/time + the logs, same values as state.log_history
    for rec, hist in zip(logs, state.log_history):
        assert isinstance(rec["time"], float)
        for k, v in hist.items():
            if isinstance(v, float) and not math.isfinite(v):
                continue
            assert rec[k] == v, k
    # NaN/inf are written as strings and read back as floats
    nan_line = logs[3]
    assert nan_line["loss"] == "nan" and nan_line["grad_norm"] == "inf"
    decoded = jsonl_mod.read_jsonl(tmp_path / "metrics.jsonl")
    assert math.isnan(decoded[4]["loss"]) and decoded[4]["grad_norm"] == float("inf")
    assert logs[-1]["train_runtime"] == 12.5


def test_jsonl_is_flushed_while_running(tmp_path):
    """A crashed run (no on_train_end, process still holding the file) already has its lines on disk."""
    args = make_args(tmp_path)
    cb = MetricsJsonlCallback()
    replay([cb], args, stop=12, crash=True)
    lines = _strict_lines(tmp_path / "metrics.jsonl")
    assert [r.get("event") for r in lines] == ["train_begin", None, None, None]
    assert [r["step"] for r in lines[1:]] == [5, 10, 10]


def test_jsonl_resume_drops_redone_steps(tmp_path):
    args = make_args(tmp_path)
    replay([MetricsJsonlCallback()], args, stop=17, crash=True)  # logged steps 5, 10, 10, 15; crash at 17
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 16, "loss": 0.1')                       # a line cut in half by the crash
    # resume from checkpoint-10: steps 11..20 are redone
    replay([MetricsJsonlCallback()], args, start=10)
    lines = _strict_lines(tmp_path / "metrics.jsonl")
    events = [r.get("event") for r in lines]
    assert events.count("train_begin") == 2 and events[-1] == "train_end"
    assert lines[4]["event"] == "train_begin" and lines[4]["resumed_from_step"] == 10
    steps = [r["step"] for r in lines if "event" not in r and "loss" in r]
    assert steps == [5, 10, 15, 20]                              # 15 appears once
    assert [r["step"] for r in lines if "eval_loss" in r] == [10, 20]


def test_jsonl_fresh_run_rotates_old_file(tmp_path):
    args = make_args(tmp_path)
    replay([MetricsJsonlCallback()], args)
    replay([MetricsJsonlCallback()], args)
    assert (tmp_path / "metrics.prev.jsonl").exists()
    assert [r.get("event") for r in _strict_lines(tmp_path / "metrics.jsonl")].count("train_begin") == 1


def test_jsonl_only_main_process(tmp_path):
    args = make_args(tmp_path)
    replay([MetricsJsonlCallback()], args, state=TrainerState(is_world_process_zero=False))
    assert not (tmp_path / "metrics.jsonl").exists()


def test_jsonl_tensor_values_and_log_after_train(tmp_path):
    args = make_args(tmp_path)
    cb = MetricsJsonlCallback()
    state = replay([cb], args)
    cb.on_log(args, state, TrainerControl(), logs={"eval_loss": torch.tensor(0.5), "eval_f1": torch.tensor([0.25])})
    last = _strict_lines(tmp_path / "metrics.jsonl")[-1]
    assert last["eval_loss"] == 0.5 and last["eval_f1"] == 0.25


# ------------------------------------------------------------------------------------------------
# TensorBoard
# ------------------------------------------------------------------------------------------------
def _accumulator(logdir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "tensors": 0})
    ea.Reload()
    return ea


def test_tensorboard_scalars_and_hparams(tmp_path):
    pytest.importorskip("tensorboard")
    from trainwright.loggers.tensorboard import TensorBoardCallback

    args = make_args(tmp_path)
    replay([TensorBoardCallback()], args)
    logdir = tmp_path / "runs" / "replay-run"
    assert glob.glob(str(logdir / "events.out.tfevents.*"))
    ea = _accumulator(logdir)
    scalars = ea.Tags()["scalars"]
    for tag in ("train/loss", "train/learning_rate", "train/grad_norm", "train/tokens_per_second",
                "eval/loss", "eval/accuracy", "eval/runtime", "train/train_runtime", "train/epoch"):
        assert tag in scalars, tag

    def values(tag):  # TensorBoard stores float32
        return [e.step for e in ea.Scalars(tag)], [e.value for e in ea.Scalars(tag)]

    def expected(pairs):
        return [s for s, _ in pairs], pytest.approx([v for _, v in pairs], rel=1e-6)

    assert values("train/loss") == expected([(s, train_log(s)["loss"]) for s in (5, 10, 15, 20)])
    assert values("train/learning_rate") == expected([(s, train_log(s)["learning_rate"]) for s in (5, 10, 15, 20)])
    assert values("eval/loss") == expected([(10, 0.6), (20, 0.45)])
    assert values("eval/accuracy") == expected([(10, 0.75), (20, 0.8125)])

    # args as JSON text
    text_tags = ea.Tags()["tensors"]
    assert "args/text_summary" in text_tags
    text = ea.Tensors("args/text_summary")[0].tensor_proto.string_val[0].decode()
    assert json.loads(text)["learning_rate"] == 5e-5

    # hyperparameters through the HParams plugin
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = ea.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hp = start.session_start_info.hparams
    assert hp["learning_rate"].number_value == pytest.approx(5e-5)
    assert hp["lr_scheduler_type"].string_value == "linear"
    assert hp["bf16"].bool_value is False
    exp = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    assert {m.name.tag for m in exp.experiment.metric_infos} >= {"train/loss", "eval/loss", "eval/accuracy"}


def test_tensorboard_logging_dir(tmp_path):
    pytest.importorskip("tensorboard")
    from trainwright.loggers.tensorboard import TensorBoardCallback

    args = make_args(tmp_path / "out", logging_dir=str(tmp_path / "tb"))
    replay([TensorBoardCallback()], args, stop=5)
    assert glob.glob(str(tmp_path / "tb" / "events.out.tfevents.*"))
    assert not (tmp_path / "out" / "runs").exists()


def test_tensorboard_env_dir_and_trial_names_stay_inside(tmp_path, monkeypatch):
    """$TENSORBOARD_LOGGING_DIR (transformers' variable) wins over logging_dir; a trial's name nests inside the
    run's directory and cannot lead out of it."""
    pytest.importorskip("tensorboard")
    from trainwright.loggers.tensorboard import TensorBoardCallback

    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "env"))
    replay([TensorBoardCallback()], make_args(tmp_path / "out", logging_dir=str(tmp_path / "tb")), stop=5)
    assert glob.glob(str(tmp_path / "env" / "events.out.tfevents.*")) and not (tmp_path / "tb").exists()
    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR")
    state = TrainerState(is_hyper_param_search=True, trial_name="../../trial-1")
    replay([TensorBoardCallback()], make_args(tmp_path / "out"), state=state, stop=5)
    assert glob.glob(str(tmp_path / "out" / "runs" / "replay-run" / "trial-1" / "events.out.tfevents.*"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["env", "out"]
