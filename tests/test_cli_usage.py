"""Using the command line: ``--help`` lists every config key with its default, ``trainwright init TASK`` writes a
template that loads and reads data for every task, options work before or after CONFIG.yaml, and ``evaluate`` on
an unlabelled split says so and points at ``predict``."""
from __future__ import annotations

import json
import re

import pytest
import yaml

from cli_support import read_csv, run, save_tiny_bert, write_config
from trainwright.cli.config import load_config
from trainwright.cli.data import DataLoader, check_split_columns
from trainwright.cli.keys import COMMON_DATA_KEYS, REQUIRED, TOP_KEYS
from trainwright.cli.tasks import TASKS
from trainwright.cli.template import training_defaults, yaml_value


@pytest.fixture(scope="module")
def tiny_model(tokenizer, tmp_path_factory):
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), tokenizer)


def _help(command: str, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        run([command, "--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


# ---------------------------------------------------------------------------------------------------- --help
@pytest.mark.parametrize("command", ["train", "evaluate", "predict"])
def test_help_lists_every_config_key_with_its_default(command, capsys):
    out = _help(command, capsys)
    assert "--set" in out and "trainwright init TASK" in out
    sections = [("top level:", TOP_KEYS), ("data: (every task)", COMMON_DATA_KEYS)]
    sections += [(f"data: (task: {t.name})", t.data_keys) for t in TASKS.values() if t.data_keys]
    for title, keys in sections:
        block = out.split(title, 1)[1].split("\n\n", 1)[0]
        for key in keys:
            shown = "required" if key.default is REQUIRED else "-" if key.default is None else yaml_value(key.default)
            assert re.search(rf"^\s+{key.name}\s+{re.escape(shown)}\s", block, re.M), (title, key.name, shown)
    assert "report_to: none" in out and "task seq2seq: predict_with_generate: true" in out
    assert "text-classification [accuracy, f1]" in out


# ---------------------------------------------------------------------------------------------------- init
def _task_data(task: str, tmp_path) -> list[str]:
    """A small training file in the form the task's template expects, as --set overrides."""
    if task == "text-classification":
        (tmp_path / "train.csv").write_text("text,label\ngood film,pos\nbad film,neg\nfine film,pos\n")
        return [f"data.train={tmp_path / 'train.csv'}"]
    if task == "regression":
        (tmp_path / "train.csv").write_text("text,label\ngood film,0.9\nbad film,0.1\nfine film,0.6\n")
        return [f"data.train={tmp_path / 'train.csv'}"]
    if task == "token-classification":
        rows = [{"tokens": ["EU", "rejects", "it"], "ner_tags": ["B-ORG", "O", "O"]},
                {"tokens": ["Peter", "Blackburn"], "ner_tags": ["B-PER", "I-PER"]}]
        (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        return [f"data.train={tmp_path / 'train.jsonl'}"]
    if task == "instruction":
        (tmp_path / "train.csv").write_text("text,label\ngood film,positive\nbad film,negative\n")
        return [f"data.train={tmp_path / 'train.csv'}"]
    if task == "causal-lm":
        (tmp_path / "train.txt").write_text("To be, or not to be.\n\nThat is the question.\n")
        return [f"data.train={tmp_path / 'train.txt'}"]
    (tmp_path / "train.en").write_text("a dog runs\na cat sleeps\n")
    (tmp_path / "train.de").write_text("ein hund rennt\neine katze schläft\n")
    return [f"data.train.source_file={tmp_path / 'train.en'}", f"data.train.target_file={tmp_path / 'train.de'}"]


@pytest.mark.parametrize("task", list(TASKS))
def test_init_template_has_every_key_with_its_default_and_loads(task, tmp_path, capsys):
    code, out, err = run(["init", task], capsys)
    assert code == 0, err
    path = tmp_path / f"{task}.yaml"
    code, _, err = run(["init", task, "--output", path], capsys)
    assert code == 0 and path.read_text() == out
    raw = yaml.safe_load(out)
    t = TASKS[task]
    assert raw["task"] == task and raw["metrics"] == list(t.default_metrics)
    assert set(raw) == {k.name for k in TOP_KEYS} - {"peft"}  # peft: is there, commented out (test_cli_peft.py)
    for key in COMMON_DATA_KEYS + t.data_keys:
        if key.name in t.unused_data_keys or key.default is REQUIRED:
            continue
        assert raw["data"][key.name] == key.default, key.name
    assert raw["training"] == training_defaults(t)
    assert "# eval_strategy: epoch" in out  # left to the CLI's default (epoch with validation data)

    cfg = load_config(str(path), _task_data(task, tmp_path) + [f"output_dir={tmp_path / 'out'}"])
    assert cfg.task is t
    loader = DataLoader(cfg)
    train = loader.load(("train",))["train"]
    check_split_columns(cfg, train, loader.where["train"], with_labels=True)  # the template's columns are there
    t.label_info(train, cfg.data)
    code, _, err = run(["init", task, "--output", path], capsys)
    assert code == 1 and "already exists" in err  # never overwrites


def test_init_unknown_task(capsys):
    code, _, err = run(["init", "txt-classification"], capsys)
    assert code == 1 and "Did you mean 'text-classification'" in err


# ---------------------------------------------------------------------------------------------------- options, splits
def test_options_before_the_config_and_an_unlabelled_test_split(tiny_model, tmp_path, capsys):
    (tmp_path / "train.csv").write_text("text,label\ngood film,pos\nbad film,neg\nfine film,pos\npoor film,neg\n")
    (tmp_path / "test.csv").write_text("id,text\n7,great film\n8,awful film\n9,okay film\n")
    config = write_config(tmp_path / "c.yaml", {
        "model": tiny_model, "data": {"train": str(tmp_path / "train.csv"), "test": str(tmp_path / "test.csv")},
        "training": {"save_strategy": "no"}, "output_dir": str(tmp_path / "out")})
    # --set before CONFIG.yaml (it used to swallow the path: "the CONFIG.yaml argument is required")
    code, _, err = run(["train", "--set", "training.max_steps=2", "data.max_length=16", config], capsys)
    assert code == 0, err
    saved = yaml.safe_load((tmp_path / "out" / "trainwright_config.yaml").read_text())
    assert saved["training"]["max_steps"] == 2 and saved["data"]["max_length"] == 16

    code, _, err = run(["evaluate", "--split", "test", "--set", "data.max_length=16", config], capsys)
    assert code == 1
    assert "has no labels (no 'label' column" in err and f"trainwright predict {config} --split test" in err
    assert "test.csv" in err and "Fix data.label_column" not in err
    assert not (tmp_path / "out" / "eval_results.json").exists()

    code, _, err = run(["predict", "--split", "test", "--set", "data.max_length=16", config], capsys)
    assert code == 0, err
    rows = read_csv(tmp_path / "out" / "predictions.csv")
    assert [r["id"] for r in rows] == ["7", "8", "9"] and "label" not in rows[0]
    assert {r["predicted_label"] for r in rows} <= {"neg", "pos"}


def test_missing_config_path_is_a_usage_error(capsys):
    for argv in (["train", "--set", "a=b"], ["evaluate"], ["predict", "--split", "test"]):
        with pytest.raises(SystemExit) as e:
            run(argv)
        assert e.value.code == 2
        assert "the CONFIG.yaml argument is required" in capsys.readouterr().err


def test_library_never_imports_the_cli():
    """The command line is an application on top of the library: no module outside trainwright/cli imports it."""
    import ast
    from pathlib import Path

    import trainwright
    root = Path(trainwright.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root)
        if rel.parts[0] == "cli":
            continue
        depth = len(rel.parts) - 1  # package depth below trainwright/
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.ImportFrom):
                module = node.module or ""
                if node.level:  # relative: resolve against trainwright/
                    if node.level - 1 != depth:
                        continue
                    module = f"trainwright.{module}" if module else "trainwright"
                names = [module] + [f"{module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            if any(n == "trainwright.cli" or n.startswith("trainwright.cli.") for n in names):
                offenders.append(f"{rel}:{node.lineno}")
    assert offenders == []
