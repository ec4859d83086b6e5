"""The core loop on real SST-2 data with a tiny BERT: learning, evaluate/predict outputs, dataset kinds,
column handling, exact gradient accumulation, and no host-device sync outside logging steps."""
import numpy as np
import pytest
import torch

from conftest import accuracy_metrics, sst2_dataset
from trainwright import (
    ConfigError,
    DataCollatorWithPadding,
    DataError,
    EvalPrediction,
    PredictionOutput,
    Trainer,
    TrainingArguments,
    TrainOutput,
)


def _args(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path), per_device_train_batch_size=16, learning_rate=1e-3,
                save_strategy="no", report_to="none", disable_tqdm=True, write_report=False, logging_steps=5)
    base.update(kw)
    return TrainingArguments(**base)


def test_train_evaluate_predict_on_sst2(tmp_path, tokenizer, make_tiny_model, sst2_small):
    train, dev = sst2_small
    trainer = Trainer(make_tiny_model(), _args(tmp_path, num_train_epochs=6, eval_strategy="epoch",
                                               learning_rate=2e-3, warmup_steps=0.1),
                      train_dataset=train.select(range(128)), eval_dataset=dev, processing_class=tokenizer,
                      compute_metrics=accuracy_metrics)
    out = trainer.train()
    assert isinstance(out, TrainOutput) and out.global_step == 6 * 8
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert np.mean(losses[-3:]) < np.mean(losses[:3]), losses  # it learns on the training set
    for key in ("train_runtime", "train_samples_per_second", "train_steps_per_second", "train_loss", "epoch"):
        assert key in out.metrics
    train_logs = [h for h in trainer.state.log_history if "loss" in h]
    assert {"loss", "grad_norm", "learning_rate", "epoch", "step"} <= set(train_logs[0])
    evals = [h for h in trainer.state.log_history if "eval_loss" in h]
    assert [e["epoch"] for e in evals] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]

    metrics = trainer.evaluate()
    assert {"eval_loss", "eval_accuracy", "eval_runtime", "eval_samples_per_second",
            "eval_steps_per_second", "epoch"} <= set(metrics)
    pred = trainer.predict(dev)
    assert isinstance(pred, PredictionOutput)
    assert pred.predictions.shape == (128, 2) and pred.label_ids.shape == (128,)
    np.testing.assert_array_equal(pred.label_ids, np.array(dev["label"]))  # dataset order
    assert pred.metrics["test_accuracy"] == pytest.approx(metrics["eval_accuracy"])
    assert set(pred.metrics) >= {"test_loss", "test_accuracy", "test_runtime"}


def test_predictions_follow_dataset_order_with_different_lengths(tmp_path, tokenizer, make_tiny_model, sst2_small):
    _, dev = sst2_small
    trainer = Trainer(make_tiny_model(), _args(tmp_path, per_device_eval_batch_size=7), processing_class=tokenizer)
    full = trainer.predict(dev).predictions
    model = trainer.model.eval()
    for i in (0, 5, 77, 127):  # row-by-row forward pass agrees with the batched, padded, concatenated result
        row = {k: torch.tensor([dev[i][k]]) for k in ("input_ids", "attention_mask", "token_type_ids")}
        with torch.no_grad():
            np.testing.assert_allclose(model(**row).logits[0].numpy(), full[i], atol=1e-5)


def test_token_level_predictions_are_padded_with_minus_100(tmp_path, tokenizer, make_tiny_model):
    from datasets import Dataset
    sentences = ["a b", "a b c d e f g h", "x", "one two three four", "q w e r t y u i o p", "z z"]
    enc = tokenizer(sentences)
    labels = [[i % 3 for i in range(len(ids))] for ids in enc["input_ids"]]
    ds = Dataset.from_dict({**enc, "labels": labels})
    from trainwright import DataCollatorForTokenClassification
    trainer = Trainer(make_tiny_model(num_labels=3, head="token"), _args(tmp_path, per_device_eval_batch_size=2),
                      data_collator=DataCollatorForTokenClassification(tokenizer))
    out = trainer.predict(ds)
    longest = max(len(x) for x in enc["input_ids"])
    assert out.predictions.shape == (6, longest, 3) and out.label_ids.shape == (6, longest)
    for i, lab in enumerate(labels):
        assert list(out.label_ids[i, :len(lab)]) == lab
        assert (out.label_ids[i, len(lab):] == -100).all()


@pytest.mark.parametrize("kind", ["datasets", "torch", "list"])
def test_dataset_kinds(tmp_path, tokenizer, make_tiny_model, sst2_small, kind):
    train, dev = sst2_small
    rows = [{k: train[i][k] for k in ("input_ids", "attention_mask", "label")} for i in range(64)]
    if kind == "datasets":
        data = train.select(range(64))
    elif kind == "list":
        data = rows
    else:
        class TorchDS(torch.utils.data.Dataset):
            def __len__(self):
                return len(rows)

            def __getitem__(self, i):
                return rows[i]
        data = TorchDS()
    trainer = Trainer(make_tiny_model(), _args(tmp_path, max_steps=4), train_dataset=data,
                      processing_class=tokenizer)
    assert trainer.train().global_step == 4


def test_iterable_dataset_needs_max_steps(tmp_path, tokenizer, make_tiny_model, sst2_small):
    train, _ = sst2_small
    iterable = train.select(range(64)).remove_columns(["sentence"]).to_iterable_dataset()
    with pytest.raises(ConfigError, match="max_steps"):
        Trainer(make_tiny_model(), _args(tmp_path), train_dataset=iterable, processing_class=tokenizer)
    trainer = Trainer(make_tiny_model(), _args(tmp_path, max_steps=6), train_dataset=iterable,
                      processing_class=tokenizer)
    assert trainer.train().global_step == 6  # 64 rows / 16 = 4 batches, then it starts over


def test_raw_text_gets_a_tokenize_hint(tmp_path, tokenizer, make_tiny_model):
    raw = sst2_dataset("train", 32)
    with pytest.raises(DataError, match=r"sentence.*\.map"):
        Trainer(make_tiny_model(), _args(tmp_path), train_dataset=raw, processing_class=tokenizer)


def test_unused_columns_are_removed_and_label_renamed(tmp_path, tokenizer, make_tiny_model, sst2_small, caplog):
    train, _ = sst2_small
    trainer = Trainer(make_tiny_model(), _args(tmp_path, max_steps=1), train_dataset=train, processing_class=tokenizer)
    dl = trainer.get_train_dataloader()
    batch = next(iter(dl))
    assert "sentence" not in batch and "labels" in batch and batch["input_ids"].shape[0] == 16


def test_eval_strategy_without_eval_dataset_fails_at_construction(tmp_path, tokenizer, make_tiny_model, sst2_small):
    with pytest.raises(ConfigError, match="eval_dataset"):
        Trainer(make_tiny_model(), _args(tmp_path, eval_strategy="epoch"), train_dataset=sst2_small[0],
                processing_class=tokenizer)


def test_no_eval_dataset_still_trains(tmp_path, tokenizer, make_tiny_model, sst2_small):
    trainer = Trainer(make_tiny_model(), _args(tmp_path, max_steps=3), train_dataset=sst2_small[0],
                      processing_class=tokenizer)
    trainer.train()
    assert not any("eval_loss" in h for h in trainer.state.log_history)


def test_compute_metrics_must_return_numbers(tmp_path, tokenizer, make_tiny_model, sst2_small):
    trainer = Trainer(make_tiny_model(), _args(tmp_path), eval_dataset=sst2_small[1], processing_class=tokenizer,
                      compute_metrics=lambda p: {"accuracy": "high"})
    with pytest.raises(ConfigError, match="accuracy"):
        trainer.evaluate()


def test_tokenizer_alias_and_unknown_trainer_argument(tmp_path, tokenizer, make_tiny_model, sst2_small):
    with pytest.warns(FutureWarning, match="processing_class"):
        trainer = Trainer(make_tiny_model(), _args(tmp_path), tokenizer=tokenizer)
    assert trainer.processing_class is tokenizer and isinstance(trainer.data_collator, DataCollatorWithPadding)
    with pytest.raises(ConfigError, match="train_datset"):
        Trainer(make_tiny_model(), _args(tmp_path), train_datset=sst2_small[0])


def test_evaluate_dict_of_datasets_and_preprocess_logits(tmp_path, tokenizer, make_tiny_model, sst2_small):
    _, dev = sst2_small
    seen = {}

    def metrics(p: EvalPrediction):
        seen["shape"] = p.predictions.shape
        return {"accuracy": float((p.predictions == p.label_ids).mean())}
    trainer = Trainer(make_tiny_model(), _args(tmp_path), processing_class=tokenizer, compute_metrics=metrics,
                      preprocess_logits_for_metrics=lambda logits, labels: logits.argmax(-1))
    out = trainer.evaluate({"a": dev.select(range(40)), "b": dev.select(range(40, 90))})
    assert {"eval_a_accuracy", "eval_b_accuracy", "eval_a_loss", "eval_b_loss"} <= set(out)
    assert seen["shape"] == (50,)


def _train_weights(tmp_path, tokenizer, model, data, collator=None, **kw):
    trainer = Trainer(model, _args(tmp_path, **kw), train_dataset=data, processing_class=tokenizer,
                      data_collator=collator)
    trainer.train()
    return {n: p.detach().clone() for n, p in trainer.model.named_parameters()}


@pytest.mark.parametrize("optim,lr", [("adamw_torch_fused", 1e-3), ("sgd", 0.5)])
def test_gradient_accumulation_is_exact_for_classification(tmp_path, tokenizer, make_tiny_model, sst2_small, optim, lr):
    train, _ = sst2_small
    data = train.select(range(96))
    big = _train_weights(tmp_path / "a", tokenizer, make_tiny_model(), data, per_device_train_batch_size=16,
                         max_steps=5, optim=optim, learning_rate=lr)
    small = _train_weights(tmp_path / "b", tokenizer, make_tiny_model(), data, per_device_train_batch_size=4,
                           gradient_accumulation_steps=4, max_steps=5, optim=optim, learning_rate=lr)
    start = make_tiny_model().state_dict()
    moved = max((big[n] - start[n]).abs().max().item() for n in big)
    assert moved > 1e-3  # the weights really changed
    diff = max((big[n] - small[n]).abs().max().item() for n in big)
    assert diff < 1e-5, diff


def test_gradient_accumulation_is_exact_for_token_level_loss(tmp_path, tokenizer, make_tiny_model):
    """Micro-batches with very different numbers of label tokens: the loss is normalised by the
    label tokens of the whole accumulated batch, so 16 = 4 x 4 still holds."""
    from datasets import Dataset

    from conftest import DATA
    from trainwright import DataCollatorForTokenClassification
    sentences, tags = [], []
    words, labels = [], []
    names = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
    for line in open(DATA / "conll2003" / "eng.train", encoding="utf-8"):
        parts = line.split()
        if not parts:
            if words:
                sentences.append(words)
                tags.append(labels)
                words, labels = [], []
            if len(sentences) == 64:
                break
            continue
        words.append(parts[0])
        labels.append(names.index(parts[-1]))
    enc = tokenizer(sentences, is_split_into_words=True, truncation=True, max_length=48)
    aligned = []
    for i, t in enumerate(tags):
        prev, row = None, []
        for w in enc.word_ids(i):
            row.append(-100 if w is None or w == prev else t[w])
            prev = w
        aligned.append(row)
    data = Dataset.from_dict({**enc, "labels": aligned})
    collator = DataCollatorForTokenClassification(tokenizer)
    big = _train_weights(tmp_path / "a", tokenizer, make_tiny_model(num_labels=9, head="token"), data, collator,
                         per_device_train_batch_size=16, max_steps=4)
    small = _train_weights(tmp_path / "b", tokenizer, make_tiny_model(num_labels=9, head="token"), data, collator,
                           per_device_train_batch_size=4, gradient_accumulation_steps=4, max_steps=4)
    diff = max((big[n] - small[n]).abs().max().item() for n in big)
    assert diff < 1e-5, diff
    # a plain "divide by accumulation steps" would not be exact here: the micro-batches differ in tokens
    counts = [sum(sum(1 for x in row if x != -100) for row in aligned[i:i + 4]) for i in range(0, 16, 4)]
    assert len(set(counts)) > 1


def test_no_host_device_sync_outside_logging_steps(tmp_path, tokenizer, make_tiny_model, sst2_small, monkeypatch):
    """Counts every read of a floating-point scalar tensor (loss, grad norm) while training: they may
    only happen at logging steps (2 here) and for the final train_loss."""
    reads = []
    original = {name: getattr(torch.Tensor, name) for name in ("item", "__float__", "__bool__", "tolist")}

    def spy(name):
        def wrapper(self, *a, **k):
            if self.is_floating_point() and (self.dim() == 0 or name == "tolist"):
                reads.append((name, trainer.state.global_step))
            return original[name](self, *a, **k)
        return wrapper
    trainer = Trainer(make_tiny_model(), _args(tmp_path, max_steps=20, logging_steps=10),
                      train_dataset=sst2_small[0], processing_class=tokenizer)
    for name in original:
        monkeypatch.setattr(torch.Tensor, name, spy(name))
    trainer.train()
    for name in original:
        monkeypatch.setattr(torch.Tensor, name, original[name])
    steps = {s for _, s in reads}
    assert steps <= {10, 20}, reads
    assert len(reads) <= 2 * 2 + 1, reads  # loss + grad norm at two log steps, then train_loss
