"""Trainer.create_model_card(): a README.md model card in output_dir, as transformers writes one, that YAML and
huggingface_hub read; written atomically and never fatal."""
import errno
import os

import pytest
import yaml

from conftest import accuracy_metrics
from trainwright import Trainer, TrainingArguments


def _front_matter(text):
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---", 2)[1])


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tokenizer, sst2_small):
    """A tiny BERT trained 2 epochs on 64 SST-2 rows, evaluated each epoch and once more after train()."""
    import torch
    from transformers import BertForSequenceClassification

    from conftest import tiny_bert_config
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("card") / "tiny-sst2"
    train, dev = sst2_small
    args = TrainingArguments(str(out), num_train_epochs=2, eval_strategy="epoch", save_strategy="no",
                             report_to="none", disable_tqdm=True, write_report=False, logging_steps=2,
                             per_device_train_batch_size=16, gradient_accumulation_steps=2, learning_rate=1e-3,
                             warmup_steps=0.1, seed=7)
    trainer = Trainer(BertForSequenceClassification(tiny_bert_config(tokenizer)), args,
                      train_dataset=train.select(range(64)), eval_dataset=dev.select(range(32)),
                      processing_class=tokenizer, compute_metrics=accuracy_metrics)
    trainer.train()
    final = trainer.evaluate()
    return trainer, final


def test_card_after_a_run_has_front_matter_results_table_and_versions(trained):
    from huggingface_hub import ModelCard
    trainer, final = trained
    trainer.create_model_card(license="apache-2.0", language="en", tags=["sentiment"], dataset_tags="sst2",
                              dataset="SST-2", finetuned_from="sentence-transformers/all-MiniLM-L6-v2")
    path = os.path.join(trainer.args.output_dir, "README.md")
    text = open(path, encoding="utf-8").read()
    front = _front_matter(text)
    assert front["license"] == "apache-2.0" and front["language"] == ["en"]
    assert front["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert front["tags"][:2] == ["sentiment", "generated_from_trainer"]
    assert front["datasets"] == ["sst2"] and front["metrics"] == ["accuracy"]
    (index,) = front["model-index"]
    assert index["name"] == "tiny-sst2"
    (result,) = index["results"]
    assert result["task"]["type"] == "text-classification" and result["dataset"] == {"name": "SST-2", "type": "sst2"}
    assert result["metrics"][0]["value"] == pytest.approx(final["eval_accuracy"])
    # the body: base model, dataset, final results, hyperparameters, one table row per evaluation, versions
    assert "fine-tuned version of [sentence-transformers/all-MiniLM-L6-v2]" in text and "the SST-2 dataset" in text
    assert f"- Accuracy: {final['eval_accuracy']}" in text
    for line in ("- learning_rate: 0.001", "- train_batch_size: 16", "- eval_batch_size: 8", "- seed: 7",
                 "- gradient_accumulation_steps: 2", "- total_train_batch_size: 32", "- lr_scheduler_type: linear",
                 "- lr_scheduler_warmup_ratio: 0.1", "- num_epochs: 2", "- optimizer: AdamW with betas=(0.9,0.999)"):
        assert line in text, line
    table = text.split("### Training results")[1].split("###")[0].strip().splitlines()
    header = [c.strip() for c in table[0].strip("|").split("|")]
    assert header == ["Training Loss", "Epoch", "Step", "Validation Loss", "Accuracy"]
    evals = [h for h in trainer.state.log_history if "eval_loss" in h and h["step"] <= trainer.state.max_steps]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table[2:]]
    assert len(rows) == 2 == len(evals) - 1  # the evaluation after train() is the final result, not a row
    assert [r[1] for r in rows] == ["1.0", "2.0"] and [int(r[2]) for r in rows] == [2, 4]
    assert float(rows[1][3]) == pytest.approx(evals[1]["eval_loss"], abs=1e-4)
    import torch
    import transformers
    assert f"- Transformers {transformers.__version__}" in text and f"- Pytorch {torch.__version__}" in text
    assert "- Trainwright " in text and "- Datasets " in text and "- Tokenizers " in text
    # huggingface_hub reads it, model-index included
    card = ModelCard.load(path)
    assert card.data.license == "apache-2.0" and "generated_from_trainer" in card.data.tags
    (evaluation,) = card.data.eval_results
    assert evaluation.metric_type == "accuracy" and evaluation.dataset_type == "sst2"
    assert not [f for f in os.listdir(trainer.args.output_dir) if f.startswith(".README")]


def test_defaults_and_existing_tags(trained):
    """Without arguments (as run_glue.py calls it) the card still loads; an existing card's tags are kept."""
    from huggingface_hub import ModelCard
    trainer, _ = trained
    path = os.path.join(trainer.args.output_dir, "README.md")
    with open(path, "w") as f:
        f.write("---\ntags:\n- my-tag\n---\nold card\n")
    trainer.create_model_card()
    front = _front_matter(open(path).read())
    assert "my-tag" in front["tags"] and "generated_from_trainer" in front["tags"]
    assert "base_model" not in front and front["model-index"] == [{"name": "tiny-sst2", "results": []}]
    assert "trained from scratch on an unknown dataset" in open(path).read()
    assert ModelCard.load(path).data.tags == front["tags"]


def test_write_error_is_a_warning_and_the_old_card_stays(trained, monkeypatch):
    import trainwright.model_card as mc
    trainer, _ = trained
    path = os.path.join(trainer.args.output_dir, "README.md")
    with open(path, "w") as f:
        f.write("---\nlicense: mit\n---\nprevious\n")

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(mc.os, "fsync", full_disk)
    with pytest.warns(RuntimeWarning, match="could not write .*README.md.*No space left"):
        trainer.create_model_card()
    assert open(path).read() == "---\nlicense: mit\n---\nprevious\n"
    assert not [f for f in os.listdir(trainer.args.output_dir) if f.startswith(".README")]


def test_only_the_main_process_writes(tmp_path, tokenizer, make_tiny_model, monkeypatch):
    trainer = Trainer(make_tiny_model(), TrainingArguments(str(tmp_path / "out"), report_to="none"))
    monkeypatch.setattr(trainer, "is_world_process_zero", lambda: False)
    trainer.create_model_card()
    assert not (tmp_path / "out" / "README.md").exists()
