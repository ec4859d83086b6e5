"""Seed conformance: the four scripts in ../shared/seeds, with only the import line changed to trainwright
and hub names swapped for local copies (SST-2 / MRPC / IMDB sample from ../shared/data, MiniLM or a tiny
model saved to a local directory), run to completion on small subsets and give what the seeds describe.

Each test body below is the seed's code; lines that differ from the seed carry a `# seed:` comment that
shows the original."""
import csv

import numpy as np
import pytest

from conftest import DATA, minilm_path, mrpc_dataset, sst2_dataset, tiny_bert_config


def load_dataset(name, config=None, **kw):
    """Stands in for datasets.load_dataset(<hub name>) with the local copies."""
    from datasets import Dataset, DatasetDict
    if (name, config) == ("glue", "sst2"):
        return DatasetDict({"train": sst2_dataset("train", 96), "validation": sst2_dataset("dev", 96)})
    if (name, config) == ("glue", "mrpc"):
        return DatasetDict({"train": mrpc_dataset("train", 64), "validation": mrpc_dataset("dev")})
    if name == "imdb":
        with open(DATA / "imdb" / "texts.csv", encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
        split = {"train": [r for r in rows if r["is_valid"] == "False"],
                 "test": [r for r in rows if r["is_valid"] == "True"]}
        return DatasetDict({k: Dataset.from_dict({"text": [r["text"] for r in v],
                                                  "label": [int(r["label"] == "positive") for r in v]})
                            for k, v in split.items()})
    raise KeyError(name)


@pytest.fixture
def tiny_checkpoint(tmp_path, tokenizer):
    """A local stand-in for 'distilbert-base-uncased': a tiny BERT + the MiniLM tokenizer in one directory."""
    from transformers import BertForSequenceClassification
    path = tmp_path / "tiny-bert"
    BertForSequenceClassification(tiny_bert_config(tokenizer, max_position_embeddings=512)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.mark.pretrained
@pytest.mark.slow
def test_seed_000_sst2_best_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from transformers import (  # seed: one `from transformers import (...)`
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )

    from trainwright import DataCollatorWithPadding, Trainer, TrainingArguments  # for all five names
    from trainwright import metrics as evaluate  # seed: import evaluate

    # 1. Load dataset and tokenizer
    dataset = load_dataset("glue", "sst2")
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())  # seed: "bert-base-uncased"

    # 2. Preprocess data
    def preprocess_function(examples):
        return tokenizer(examples["sentence"], truncation=True, max_length=128)

    tokenized_datasets = dataset.map(preprocess_function, batched=True)

    # 3. Load model
    model = AutoModelForSequenceClassification.from_pretrained(minilm_path(), num_labels=2)  # seed: "bert-base-uncased"

    # 4. Define metrics
    metric = evaluate.load("accuracy")

    def compute_metrics(eval_pred):
        logits, labels = eval_pred
        predictions = np.argmax(logits, axis=-1)
        return metric.compute(predictions=predictions, references=labels)

    # 5. Set up Trainer
    with pytest.warns(FutureWarning):  # evaluation_strategy and tokenizer= are old names: one notice each
        training_args = TrainingArguments(
            output_dir="./results",
            learning_rate=2e-5,
            per_device_train_batch_size=16,
            per_device_eval_batch_size=16,
            num_train_epochs=3,
            weight_decay=0.01,
            evaluation_strategy="epoch",
            save_strategy="epoch",
            load_best_model_at_end=True,
            metric_for_best_model="accuracy",
        )
        data_collator = DataCollatorWithPadding(tokenizer=tokenizer)
        trainer = Trainer(
            model=model,
            args=training_args,
            train_dataset=tokenized_datasets["train"],
            eval_dataset=tokenized_datasets["validation"],
            tokenizer=tokenizer,
            data_collator=data_collator,
            compute_metrics=compute_metrics,
        )

    # 6. Train!
    trainer.train()
    history = list(trainer.state.log_history)

    # 7. Evaluate
    eval_results = trainer.evaluate()
    print(f"Evaluation results: {eval_results}")

    evals = [h for h in history if "eval_accuracy" in h]
    assert [e["epoch"] for e in evals] == [1.0, 2.0, 3.0]
    best = max(e["eval_accuracy"] for e in evals)
    assert trainer.state.best_metric == best
    assert eval_results["eval_accuracy"] == pytest.approx(best)  # the best model was loaded at the end
    assert sorted(p.name for p in (tmp_path / "results").iterdir() if p.name.startswith("checkpoint-")) \
        == ["checkpoint-12", "checkpoint-18", "checkpoint-6"]


@pytest.mark.slow
def test_seed_001_imdb_lazy_way(tmp_path, monkeypatch, tiny_checkpoint):
    monkeypatch.chdir(tmp_path)
    ds = load_dataset("imdb")
    print(ds)
    train_ds = ds["train"].shuffle(seed=0).select(range(160))  # seed: range(2000)
    eval_ds = ds["test"].shuffle(seed=0).select(range(48))  # seed: range(500)

    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(tiny_checkpoint)  # seed: "distilbert-base-uncased"

    def tok_fn(batch):
        return tok(batch["text"], truncation=True)

    train_ds = train_ds.map(tok_fn, batched=True)
    eval_ds = eval_ds.map(tok_fn, batched=True)

    from transformers import AutoModelForSequenceClassification
    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_checkpoint, num_labels=2,  # seed: "distilbert-base-uncased"
    )

    from trainwright import TrainingArguments  # seed: from transformers import TrainingArguments
    args = TrainingArguments(
        output_dir="out",
        num_train_epochs=2,
        per_device_train_batch_size=8,
        per_device_eval_batch_size=8,
        eval_strategy="epoch",
    )

    from trainwright import Trainer  # seed: from transformers import Trainer
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tok,
    )
    result = trainer.train()

    assert result.global_step == 2 * 20
    evals = [h for h in trainer.state.log_history if "eval_loss" in h]
    assert [e["epoch"] for e in evals] == [1.0, 2.0]  # "evaluating after each epoch"
    assert (tmp_path / "out" / "checkpoint-40").is_dir()  # "saves the model here as it goes"
    assert (tmp_path / "out" / "metrics.jsonl").is_file()


@pytest.mark.slow
def test_seed_002_workflow_local_files_resume_and_save(tmp_path, tiny_checkpoint):
    """Seed 002 is a workflow description: local CSV files → map(batched=True) → Auto class with num_labels →
    TrainingArguments (eval/save strategies, accumulation) → Trainer with a callback → train (resumable) →
    evaluate/predict → save_model / save_pretrained → from_pretrained."""
    import torch
    from datasets import load_dataset as hf_load_dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from trainwright import EarlyStoppingCallback, Trainer, TrainingArguments
    csv_path = tmp_path / "reviews.csv"
    with open(DATA / "imdb" / "texts.csv", encoding="utf-8", newline="") as src, open(csv_path, "w", newline="") as dst:
        reader, writer = csv.DictReader(src), csv.writer(dst)
        writer.writerow(["text", "label"])
        for i, row in enumerate(reader):
            if i == 200:
                break
            writer.writerow([row["text"][:400], int(row["label"] == "positive")])
    raw = hf_load_dataset("csv", data_files=str(csv_path), cache_dir=str(tmp_path / "cache"))["train"]
    split = raw.train_test_split(test_size=0.2, seed=0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoint)
    tokenized = split.map(lambda b: tokenizer(b["text"], truncation=True, max_length=128), batched=True)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_checkpoint, num_labels=2)
    args = TrainingArguments(output_dir=str(tmp_path / "run"), eval_strategy="steps", eval_steps=5,
                             save_strategy="steps", save_steps=5, learning_rate=1e-3, max_steps=10,
                             per_device_train_batch_size=8, gradient_accumulation_steps=2, logging_steps=5,
                             load_best_model_at_end=True, disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=tokenized["train"], eval_dataset=tokenized["test"],
                      processing_class=tokenizer, callbacks=[EarlyStoppingCallback(early_stopping_patience=3)])
    trainer.train()
    more = TrainingArguments(**{**args.to_dict(), "max_steps": 15})
    trainer2 = Trainer(model=AutoModelForSequenceClassification.from_pretrained(tiny_checkpoint, num_labels=2),
                       args=more, train_dataset=tokenized["train"], eval_dataset=tokenized["test"],
                       processing_class=tokenizer)
    trainer2.train(resume_from_checkpoint=True)
    assert trainer2.state.global_step == 15
    preds = trainer2.predict(tokenized["test"])
    assert preds.predictions.shape == (40, 2)
    trainer2.save_model(str(tmp_path / "final"))
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "final")
    batch = tokenizer(["a fine film"], return_tensors="pt")
    trainer2.model.eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(**batch).logits, trainer2.model(**batch).logits, atol=1e-6)


@pytest.mark.pretrained
@pytest.mark.slow
def test_seed_003_mrpc_course(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from transformers import AutoTokenizer

    from trainwright import (
        DataCollatorWithPadding,  # seed: from transformers import AutoTokenizer, DataCollatorWithPadding
    )

    raw_datasets = load_dataset("glue", "mrpc")
    checkpoint = minilm_path()  # seed: "bert-base-uncased"
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)

    def tokenize_function(example):
        return tokenizer(example["sentence1"], example["sentence2"], truncation=True)

    tokenized_datasets = raw_datasets.map(tokenize_function, batched=True)
    data_collator = DataCollatorWithPadding(tokenizer=tokenizer)

    from trainwright import TrainingArguments  # seed: from transformers import TrainingArguments
    training_args = TrainingArguments("test-trainer")

    from transformers import AutoModelForSequenceClassification
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint, num_labels=2)

    from trainwright import Trainer  # seed: from transformers import Trainer
    trainer = Trainer(
        model,
        training_args,
        train_dataset=tokenized_datasets["train"],
        eval_dataset=tokenized_datasets["validation"],
        data_collator=data_collator,
        processing_class=tokenizer,
    )
    trainer.train()

    predictions = trainer.predict(tokenized_datasets["validation"])
    print(predictions.predictions.shape, predictions.label_ids.shape)
    assert predictions.predictions.shape == (408, 2) and predictions.label_ids.shape == (408,)
    assert {"test_loss", "test_runtime", "test_samples_per_second"} <= set(predictions.metrics)

    preds = np.argmax(predictions.predictions, axis=-1)
    from trainwright import metrics as evaluate  # seed: import evaluate
    metric = evaluate.load("glue", "mrpc")
    scores = metric.compute(predictions=preds, references=predictions.label_ids)
    assert set(scores) == {"accuracy", "f1"}

    def compute_metrics(eval_preds):
        metric = evaluate.load("glue", "mrpc")
        logits, labels = eval_preds
        predictions = np.argmax(logits, axis=-1)
        return metric.compute(predictions=predictions, references=labels)

    training_args = TrainingArguments("test-trainer", eval_strategy="epoch", per_device_train_batch_size=16,
                                      gradient_accumulation_steps=2, lr_scheduler_type="cosine",
                                      num_train_epochs=1)  # seed: the "Advanced Training Features" arguments
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint, num_labels=2)
    trainer = Trainer(
        model,
        training_args,
        train_dataset=tokenized_datasets["train"],
        eval_dataset=tokenized_datasets["validation"],
        data_collator=data_collator,
        processing_class=tokenizer,
        compute_metrics=compute_metrics,
    )
    trainer.train()
    evals = [h for h in trainer.state.log_history if "eval_f1" in h]
    assert len(evals) == 1 and 0.0 <= evals[0]["eval_accuracy"] <= 1.0
    lrs = [h["learning_rate"] for h in trainer.state.log_history if "learning_rate" in h]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


@pytest.mark.pretrained
@pytest.mark.slow
def test_minilm_on_1000_sst2_sentences_beats_075(tmp_path, tokenizer):
    """The real pretrained MiniLM, one epoch on 1,000 SST-2 training sentences, full dev set."""
    from transformers import AutoModelForSequenceClassification

    from conftest import accuracy_metrics
    from trainwright import Trainer, TrainingArguments
    train = sst2_dataset("train", 1000).map(lambda b: tokenizer(b["sentence"], truncation=True), batched=True)
    dev = sst2_dataset("dev").map(lambda b: tokenizer(b["sentence"], truncation=True), batched=True)
    model = AutoModelForSequenceClassification.from_pretrained(minilm_path(), num_labels=2)
    args = TrainingArguments(str(tmp_path), num_train_epochs=1, per_device_train_batch_size=16,
                             per_device_eval_batch_size=64, learning_rate=1e-4, warmup_steps=0.1,
                             save_strategy="no", disable_tqdm=True, logging_steps=20)
    trainer = Trainer(model, args, train_dataset=train, eval_dataset=dev, processing_class=tokenizer,
                      compute_metrics=accuracy_metrics)
    trainer.train()
    accuracy = trainer.evaluate()["eval_accuracy"]
    print("MiniLM, 1,000 SST-2 sentences, one epoch: dev accuracy", accuracy)
    assert accuracy > 0.75
