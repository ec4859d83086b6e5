"""report_to through real training runs (issue 18 item 1): transformers' own integration callbacks run inside
trainwright, and what each tracker stored is read back through the tracker's own reader (TensorBoard's
EventAccumulator, MlflowClient on the sqlite store, W&B's offline run file). Also report_to="all", unknown
names, and a transformers integration trainwright has no code of its own for (trackio, faked here)."""
from __future__ import annotations

import errno
import glob
import json
import logging
import os
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from conftest import minilm_path, tiny_bert_config
from trainwright import Trainer, TrainingArguments
from trainwright.errors import ConfigError

STEPS, LOG_EVERY, EVAL_EVERY = 6, 2, 3


def _data(tokenizer, n=24):
    from datasets import Dataset
    words = ["good movie", "bad film", "a fine and pleasant story", "terrible", "ok", "great acting here"]
    texts = [words[i % 6] + " " + words[(i * 5) % 6] for i in range(n)]
    return Dataset.from_dict({**tokenizer(texts), "label": [i % 2 for i in range(n)]})


def _trainer(out, tokenizer, report_to, **kw) -> Trainer:
    from transformers import BertForSequenceClassification
    torch.manual_seed(0)
    data = _data(tokenizer)
    args = TrainingArguments(**{**dict(
        output_dir=str(out), run_name="tracked", report_to=report_to, per_device_train_batch_size=4,
        per_device_eval_batch_size=8, learning_rate=1e-3, max_steps=STEPS, logging_steps=LOG_EVERY,
        eval_strategy="steps", eval_steps=EVAL_EVERY, save_strategy="no", disable_tqdm=True, write_report=False,
        seed=3), **kw})
    return Trainer(BertForSequenceClassification(tiny_bert_config(tokenizer)), args, train_dataset=data,
                   eval_dataset=data.select(range(8)), processing_class=tokenizer)


def _logged(trainer, key):
    return [(h["step"], h[key]) for h in trainer.state.log_history if key in h]


def _files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())


# ------------------------------------------------------------------------------------------------
# TensorBoard
# ------------------------------------------------------------------------------------------------
def test_tensorboard_run_read_back(tmp_path, tokenizer):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from transformers.integrations import TensorBoardCallback as HFTensorBoardCallback

    trainer = _trainer(tmp_path / "out", tokenizer, "tensorboard")
    (cb,) = [c for c in trainer.callback_handler.callbacks if isinstance(c, HFTensorBoardCallback)]
    trainer.train()
    ea = EventAccumulator(str(tmp_path / "out" / "runs" / "tracked"), size_guidance={"scalars": 0, "tensors": 0})
    ea.Reload()

    def scalars(tag):
        return [(e.step, pytest.approx(e.value, rel=1e-6)) for e in ea.Scalars(tag)]

    assert scalars("train/loss") == _logged(trainer, "loss") and len(_logged(trainer, "loss")) == STEPS // LOG_EVERY
    assert scalars("train/learning_rate") == _logged(trainer, "learning_rate")
    assert scalars("eval/loss") == _logged(trainer, "eval_loss") and [s for s, _ in scalars("eval/loss")] == [3, 6]
    assert scalars("train/train_loss") == _logged(trainer, "train_loss")

    def text(tag):
        return ea.Tensors(f"{tag}/text_summary")[0].tensor_proto.string_val[0].decode()

    assert json.loads(text("args"))["learning_rate"] == 1e-3                   # transformers' args text
    assert json.loads(text("model_config"))["hidden_size"] == 32                # and the model config
    from tensorboard.plugins.hparams import plugin_data_pb2  # trainwright's HParams
    start = plugin_data_pb2.HParamsPluginData.FromString(
        ea.PluginTagToContent("hparams")["_hparams_/session_start_info"])
    assert start.session_start_info.hparams["learning_rate"].number_value == pytest.approx(1e-3)


# ------------------------------------------------------------------------------------------------
# MLflow 3.x
# ------------------------------------------------------------------------------------------------
@pytest.fixture
def mlflow_unset(monkeypatch, tmp_path):
    """No tracking URI set anywhere, the current directory empty; mlflow's global URI reset afterwards."""
    mlflow = pytest.importorskip("mlflow")
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID", "MLFLOW_ALLOW_FILE_STORE",
                "DISABLE_MLFLOW_INTEGRATION"):
        monkeypatch.delenv(var, raising=False)
    mlflow.set_tracking_uri(None)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    yield mlflow
    if mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(None)


def _mlflow_run(tmp_path, tokenizer, name):
    """A run through report_to="mlflow" with no tracking URI set, then evaluate(); its run read back from
    <output_dir>/mlflow.db with MlflowClient."""
    from mlflow import MlflowClient

    trainer = _trainer(tmp_path / name, tokenizer, "mlflow", run_name=f"run-{name}")
    trainer.train()
    after = trainer.evaluate()  # after train(): logged to the same run, not to a new one
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / name}/mlflow.db")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.info.run_name == f"run-{name}" and run.info.status == "FINISHED"
    return trainer, after, client, run


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_mlflow_local_default_is_a_sqlite_store_in_output_dir(tmp_path, tokenizer, mlflow_unset):
    trainer, after, client, run = _mlflow_run(tmp_path, tokenizer, "a")
    assert _files_under(tmp_path / "cwd") == []                                # nothing in the current directory
    params = run.data.params
    # the model config as transformers logs it, with the arguments
    assert params["hidden_size"] == "32" and params["model_type"] == "bert" and params["num_hidden_layers"] == "2"
    assert params["learning_rate"] == "0.001" and params["run_name"] == "run-a"

    def history(key):
        return sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))

    assert history("loss") == [(s, pytest.approx(v)) for s, v in _logged(trainer, "loss")]
    assert history("eval_loss") == [(s, pytest.approx(v)) for s, v in _logged(trainer, "eval_loss")]
    assert len(history("eval_loss")) == 3                                       # steps 3, 6 and the evaluate()
    assert after["eval_loss"] == pytest.approx(history("eval_loss")[-1][1])
    assert history("train_runtime") == [(STEPS, pytest.approx(trainer.state.log_history[-2]["train_runtime"]))]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_mlflow_second_run_in_the_process_goes_to_its_own_output_dir(tmp_path, tokenizer, mlflow_unset):
    """The default URI trainwright set for the first run is not taken for a user's setting."""
    for name in ("a", "b"):
        _mlflow_run(tmp_path, tokenizer, name)
    assert _files_under(tmp_path / "cwd") == []


@pytest.mark.parametrize("uri", ["file:./mlruns", "./mlruns"])
def test_mlflow_file_store_is_a_clear_error_before_training(tmp_path, tokenizer, mlflow_unset, monkeypatch, uri):
    mlflow = mlflow_unset
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with pytest.raises(ConfigError) as e:
        _trainer(tmp_path / "out", tokenizer, "mlflow")
    msg = str(e.value)
    assert f"{uri!r} (MLFLOW_TRACKING_URI) is MLflow's file store" in msg and mlflow.__version__ in msg
    assert "Unset MLFLOW_TRACKING_URI" in msg and "sqlite:///" in msg and "MLFLOW_ALLOW_FILE_STORE=true" in msg
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")                    # the user's opt-in is respected
    _trainer(tmp_path / "out", tokenizer, "mlflow")


# ------------------------------------------------------------------------------------------------
# Weights & Biases, offline
# ------------------------------------------------------------------------------------------------
def _wandb_records(path):
    """Records of an offline ``run-*.wandb`` file: a 7-byte ':W&B' header, then LevelDB-log blocks of 32 KiB whose
    records are (crc32 u32, length u16, type u8) + data; types 1 full, 2 first, 3 middle, 4 last. Each assembled
    record is a ``wandb_internal_pb2.Record`` protobuf."""
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
    """The records once the file ends with wandb's "exit" record (its writer may still be flushing when
    ``wandb.finish()`` returns); a half-written last record counts as not yet."""
    deadline = time.time() + timeout
    while True:
        try:
            records = _wandb_records(path)
        except Exception:
            records = []
        if (records and records[-1].WhichOneof("record_type") == "exit") or time.time() > deadline:
            return records
        time.sleep(0.2)


def _item_key(item):
    return "/".join(item.nested_key) if item.nested_key else item.key


@pytest.mark.slow
def test_wandb_offline_run_read_back(tmp_path):
    """wandb keeps process-wide state (its service, settings, the current run), so the run happens in a fresh
    interpreter. WANDB_DIR is not set: the files go to output_dir/wandb. WANDB_LOG_MODEL=end: the final model is
    logged as an artifact (transformers' callback would build a transformers.Trainer for it and fail)."""
    pytest.importorskip("wandb")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(WANDB_MODE="offline", WANDB_PROJECT="trainwright-test", WANDB_SILENT="true", WANDB_DISABLE_GIT="true",
               WANDB_LOG_MODEL="end", PYTHONPATH=os.pathsep.join(p for p in sys.path if p),
               WANDB_DATA_DIR=str(tmp_path / "wandb-data"), WANDB_CACHE_DIR=str(tmp_path / "wandb-cache"))  # not ~
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    code = ("import sys, pathlib; sys.path.insert(0, sys.argv[1]); import test_trackers; "
            "test_trackers._wandb_run(pathlib.Path(sys.argv[2]))")
    proc = subprocess.run([sys.executable, "-c", code, os.path.dirname(__file__), str(tmp_path)], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert _files_under(cwd) == []
    expected = json.loads((tmp_path / "logged.json").read_text())

    (run_file,) = glob.glob(str(tmp_path / "out" / "wandb" / "offline-run-*" / "run-*.wandb"))
    records = _complete_wandb_records(run_file)
    kinds = [r.WhichOneof("record_type") for r in records]
    history = [{_item_key(i): json.loads(i.value_json) for i in r.history.item} for r in records
               if r.WhichOneof("record_type") == "history"]
    # transformers' layout: train/<key>, eval/<key>, with train/global_step as the x axis
    assert [(h["train/global_step"], h["train/loss"]) for h in history if "train/loss" in h] == \
        [tuple(x) for x in expected["loss"]]
    assert [(h["train/global_step"], h["eval/loss"]) for h in history if "eval/loss" in h] == \
        [tuple(x) for x in expected["eval_loss"]]
    summary = {}
    for r in records:
        if r.WhichOneof("record_type") == "summary":
            summary.update({_item_key(i): json.loads(i.value_json) for i in r.summary.update})
    assert summary["train_loss"] == expected["train_loss"] and "train_runtime" in summary
    (run_rec,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert run_rec.display_name == "tracked" and run_rec.project == "trainwright-test"
    config = {_item_key(i): json.loads(i.value_json) for r in records
              if r.WhichOneof("record_type") == "config" for i in r.config.update}
    config.update({_item_key(i): json.loads(i.value_json) for i in run_rec.config.update})
    assert config["learning_rate"] == 1e-3 and config["hidden_size"] == 32 and config["model_type"] == "bert"
    assert config["model/num_parameters"] == expected["num_parameters"]
    # the final model artifact, saved by trainwright (safetensors, no pickle), no temporary directory left
    artifacts = [r.artifact for r in records if r.WhichOneof("record_type") == "artifact"]
    assert sorted(a for art in artifacts for a in art.aliases if a.endswith("_model")) == ["base_model", "final_model"]
    (artifact,) = [a for a in artifacts if "final_model" in a.aliases]
    assert artifact.type == "model" and artifact.name == "model-tracked"
    files = {e.path for e in artifact.manifest.contents}
    assert {"model.safetensors", "config.json", "model_architecture.txt"} <= files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl"))]
    assert "exit" in kinds and not glob.glob(str(tmp_path / "out" / ".wandb-final-model-*"))


def _wandb_run(tmp_path):
    import wandb
    from transformers import AutoTokenizer

    trainer = _trainer(tmp_path / "out", AutoTokenizer.from_pretrained(minilm_path()), "wandb")
    trainer.train()
    assert wandb.run is not None                    # as transformers: the run stays open for evaluate()
    wandb.finish()
    (tmp_path / "logged.json").write_text(json.dumps({
        "loss": _logged(trainer, "loss"), "eval_loss": _logged(trainer, "eval_loss"),
        "train_loss": trainer.state.log_history[-1]["train_loss"],
        "num_parameters": trainer.model.num_parameters()}))


# ------------------------------------------------------------------------------------------------
# report_to="all", unknown names
# ------------------------------------------------------------------------------------------------
def test_report_to_all_builds_transformers_available_integrations(tmp_path, tokenizer, mlflow_unset):
    pytest.importorskip("tensorboard")
    pytest.importorskip("wandb")
    from transformers.integrations.integration_utils import (
        INTEGRATION_TO_CALLBACK,
        get_available_reporting_integrations,
    )

    trainer = _trainer(tmp_path / "out", tokenizer, "all")
    names = get_available_reporting_integrations()
    assert {"tensorboard", "mlflow", "wandb"} <= set(names)
    trackers = [cb for cb in trainer.callback_handler.callbacks
                if type(cb).__module__.startswith("trainwright.loggers.")
                and type(cb).__name__ != "MetricsJsonlCallback"]
    assert [type(cb).__name__ for cb in trackers] == [INTEGRATION_TO_CALLBACK[n].__name__ for n in names]
    assert all(isinstance(cb, INTEGRATION_TO_CALLBACK[n]) for cb, n in zip(trackers, names))
    # transformers' class finds trainwright's subclass
    assert trainer.pop_callback(INTEGRATION_TO_CALLBACK["tensorboard"]) is trackers[names.index("tensorboard")]


def test_report_to_unknown_name_fails_when_the_trainer_is_built(tmp_path, tokenizer):
    with pytest.raises(ConfigError) as e:
        _trainer(tmp_path / "out", tokenizer, ["tensorbord"])
    msg = str(e.value)
    assert "unknown tracker 'tensorbord'" in msg and 'Did you mean report_to="tensorboard"?' in msg
    assert "Installed here: mlflow, tensorboard, wandb." in msg


# ------------------------------------------------------------------------------------------------
# a transformers integration without trainwright code of its own: trackio (a stand-in package)
# ------------------------------------------------------------------------------------------------
FAKE_TRACKIO = '''
"""A stand-in for the trackio package with the calls transformers' TrackioCallback makes; it records them."""
import contextvars
import errno
import os

__version__ = "0.30.0"
calls = []
fail_log_at_step = None
context_vars = type("CV", (), {"current_space_id": contextvars.ContextVar("s", default=None),
                               "current_project": contextvars.ContextVar("p", default=None)})


class _Config(dict):
    def update(self, d, allow_val_change=False):
        super().update(d)


config = _Config()


def init(**kw):
    calls.append(("init", kw))


def log(values):
    if fail_log_at_step is not None and values.get("train/global_step") == fail_log_at_step:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    calls.append(("log", dict(values)))


def finish():
    calls.append(("finish", {}))
'''


@pytest.fixture
def fake_trackio(tmp_path, monkeypatch):
    import importlib
    pkg = tmp_path / "site" / "trackio"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(textwrap.dedent(FAKE_TRACKIO))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    importlib.invalidate_caches()
    module = importlib.import_module("trackio")
    yield module
    sys.modules.pop("trackio", None)


def test_transformers_integration_runs_unchanged(tmp_path, tokenizer, fake_trackio, caplog):
    from transformers.integrations import TrackioCallback

    from trainwright.checkpoint import safe_fs

    safe_fs.reset_warnings()
    fake_trackio.fail_log_at_step = 4  # a full disk inside the tracker: one warning, training goes on
    trainer = _trainer(tmp_path / "out", tokenizer, "trackio", project="my-project")
    assert any(isinstance(cb, TrackioCallback) for cb in trainer.callback_handler.callbacks)
    with caplog.at_level(logging.WARNING):
        trainer.train()
    assert trainer.state.global_step == STEPS
    calls = fake_trackio.calls
    (init,) = [kw for name, kw in calls if name == "init"]
    assert init["project"] == "my-project" and init["name"] == "tracked" and init["space_id"] is None
    assert fake_trackio.config["hidden_size"] == 32 and fake_trackio.config["learning_rate"] == 1e-3
    assert fake_trackio.config["model/num_parameters"] == trainer.model.num_parameters()
    logged = [v for name, v in calls if name == "log"]
    assert [(v["train/global_step"], v["train/loss"]) for v in logged if "train/loss" in v] == \
        [(s, v) for s, v in _logged(trainer, "loss") if s != 4]
    assert [(v["train/global_step"], v["eval/loss"]) for v in logged if "eval/loss" in v] == \
        _logged(trainer, "eval_loss")
    assert calls[-1][0] == "finish"
    warnings = [r.getMessage() for r in caplog.records if "the trackio run" in r.getMessage()]
    assert len(warnings) == 1 and os.strerror(errno.ENOSPC) in warnings[0]
