"""Trackers and metrics.jsonl, driven directly with a replayed sequence of Trainer events."""
from __future__ import annotations

import glob
import json
import math
import os
import struct
import subprocess
import sys
import time
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
    assert resolve_report_to("tensorboard") == ["tensorboard"]
    assert resolve_report_to(["mlflow", "tensorboard", "mlflow", "jsonl"]) == ["mlflow", "tensorboard"]
    assert resolve_report_to("tensorboard,wandb") == ["tensorboard", "wandb"]
    assert resolve_report_to("all") == ["tensorboard", "mlflow", "wandb"]  # all three are in the dev venv
    (cb,) = get_reporting_callbacks(["tensorboard"])
    assert type(cb).__name__ == "TensorBoardCallback"


@pytest.mark.parametrize("bad,nearest", [("tensorbord", "tensorboard"), (["wandb", "mlfow"], "mlflow"),
                                         ("WandB-x", "wandb")])
def test_report_to_unknown_name(bad, nearest):
    with pytest.raises(ConfigError) as e:
        resolve_report_to(bad)
    msg = str(e.value)
    wrong = bad if isinstance(bad, str) else bad[1]
    assert repr(wrong) in msg
    assert f'Did you mean report_to="{nearest}"' in msg
    for name in ("tensorboard", "mlflow", "wandb", "none", "all"):
        assert repr(name) in msg


def test_report_to_transformers_only_integration():
    with pytest.raises(ConfigError, match="'trackio' is a transformers integration that trainwright does not provide"):
        resolve_report_to(["tensorboard", "trackio"])


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
    # "all" only means the installed ones
    assert resolve_report_to("all") == ["tensorboard", "wandb"]


def test_import_is_lazy():
    code = ("import sys, trainwright.loggers, trainwright.report; "
            "bad = [m for m in ('tensorboard', 'mlflow', 'wandb', 'matplotlib', 'torch.utils.tensorboard') "
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


# ------------------------------------------------------------------------------------------------
# MLflow
# ------------------------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_mlflow_params_and_metrics(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "trainwright-test")
    mlflow = pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    (cb,) = get_reporting_callbacks("mlflow")
    args = make_args(tmp_path)
    state = replay([cb], args)
    assert mlflow.active_run() is None                       # ended at train end
    # evaluate() after train(): same run, no new one
    cb.on_log(args, state, TrainerControl(), logs={"eval_accuracy": 0.8, "epoch": 2.0})
    assert mlflow.active_run() is None

    client = MlflowClient()
    exp = client.get_experiment_by_name("trainwright-test")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.run_name == "replay-run" and run.info.status == "FINISHED"
    params = run.data.params
    assert params["learning_rate"] == "5e-05" and params["per_device_train_batch_size"] == "8"
    assert params["model.class"] == "Linear" and params["model.num_parameters"] == "10"
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

    assert len(params["fsdp_config.note"]) == MAX_PARAM_VAL_LENGTH and params["fsdp_config.note"].endswith("...")

    def history(key):
        history = client.get_metric_history(run.info.run_id, key)
        return [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)]

    assert history("loss") == [(s, train_log(s)["loss"]) for s in (5, 10, 15, 20)]
    assert history("learning_rate") == [(s, train_log(s)["learning_rate"]) for s in (5, 10, 15, 20)]
    assert [v for _, v in history("eval_accuracy")] == [0.75, 0.8125, 0.8]
    assert history("train_runtime") == [(20, 12.5)]


# ------------------------------------------------------------------------------------------------
# Weights & Biases (offline)
# ------------------------------------------------------------------------------------------------
def _wandb_records(path):
    """Records of an offline ``run-*.wandb`` file: a 7-byte ':W&B' header, then LevelDB-log blocks
    of 32 KiB whose records are (crc32 u32, length u16, type u8) + data; types 1 full, 2 first,
    3 middle, 4 last. Each assembled record is a ``wandb_internal_pb2.Record`` protobuf."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = open(path, "rb").read()
    assert data[:4] == b":W&B"
    pos, block, pending, out = 7, 32768, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pos += 7
        chunk, pos = data[pos:pos + length], pos + length
        if kind == 1:
            out.append(chunk)
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            out.append(pending + chunk)
    records = []
    for raw in out:
        rec = pb.Record()
        rec.ParseFromString(raw)
        records.append(rec)
    return records


def _complete_wandb_records(path, timeout=60.0):
    """The records once the file ends with wandb's "exit" record: its writer may still be flushing the file when
    ``wandb.finish()`` returns (seen once on a loaded machine). A half-written last record counts as not yet."""
    deadline = time.time() + timeout
    while True:
        try:
            records = _wandb_records(path)
        except Exception:  # a record cut short mid-write
            records = []
        if (records and records[-1].WhichOneof("record_type") == "exit") or time.time() > deadline:
            return records
        time.sleep(0.2)


def _item_key(item):
    return "/".join(item.nested_key) if item.nested_key else item.key


def test_wandb_offline(tmp_path):
    """wandb keeps process-wide state (its service, settings, the current run) that earlier tests in the
    same pytest process can leave behind, so the check runs in a fresh interpreter."""
    pytest.importorskip("wandb")
    import subprocess
    import sys
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_PROJECT": "trainwright-test",
           "WANDB_SILENT": "true", "WANDB_DISABLE_GIT": "true"}
    code = ("import sys, pathlib; sys.path.insert(0, sys.argv[1]); import test_loggers; "
            "test_loggers._wandb_offline_body(pathlib.Path(sys.argv[2]))")
    proc = subprocess.run([sys.executable, "-c", code, os.path.dirname(__file__), str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _wandb_offline_body(tmp_path):
    import wandb

    (cb,) = get_reporting_callbacks("wandb")
    args = make_args(tmp_path / "out")
    state = replay([cb], args)
    assert wandb.run is None                                     # finished at train end
    cb.on_log(args, state, TrainerControl(), logs={"eval_loss": 0.4})  # after finish: warns, no error

    (run_dir,) = glob.glob(str(tmp_path / "wandb" / "offline-run-*"))
    (run_file,) = glob.glob(os.path.join(run_dir, "run-*.wandb"))
    records = _complete_wandb_records(run_file)
    history = []
    for rec in records:
        if rec.WhichOneof("record_type") == "history":
            history.append({_item_key(i): json.loads(i.value_json) for i in rec.history.item})
    losses = [(h["_step"], h["train/loss"]) for h in history if "train/loss" in h]
    assert losses == [(s, train_log(s)["loss"]) for s in (5, 10, 15, 20)]
    evals = [(h["_step"], h["eval/accuracy"]) for h in history if "eval/accuracy" in h]
    assert evals == [(10, 0.75), (20, 0.8125)]
    assert all(h["train/global_step"] == h["_step"] for h in history)

    summary = {}
    for rec in records:
        if rec.WhichOneof("record_type") == "summary":
            for item in rec.summary.update:
                summary[_item_key(item)] = json.loads(item.value_json)
    assert summary["train_runtime"] == 12.5 and summary["train_loss"] == 1.2345
    assert summary["train/loss"] == train_log(20)["loss"]

    (run_rec,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert run_rec.display_name == "replay-run" and run_rec.project == "trainwright-test"
    config = {_item_key(i): json.loads(i.value_json) for r in records
              if r.WhichOneof("record_type") == "config" for i in r.config.update}
    config.update({_item_key(i): json.loads(i.value_json) for i in run_rec.config.update})
    assert config["learning_rate"] == 5e-5 and config["model/num_parameters"] == 10
