"""batch_eval_metrics (compute_metrics per evaluation batch, compute_result=True on the last) and
eval_use_gather_object (a list output of prediction_step gathered as one object per row), as transformers 5.x."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import accuracy_metrics
from test_prepadded import _bart, _seq2seq_rows, _token_rows
from trainwright import ConfigError, Seq2SeqTrainer, Seq2SeqTrainingArguments, Trainer, TrainingArguments


def _args(tmp_path, name, **kw):
    kw.setdefault("per_device_eval_batch_size", 12)
    kw.setdefault("save_strategy", "no")
    return TrainingArguments(output_dir=str(tmp_path / name), report_to="none", disable_tqdm=True, **kw)


class StreamingAccuracy:
    """A compute_metrics for batch_eval_metrics: counts correct rows per batch, returns (and resets) on the last."""

    def __init__(self, token_level=False):
        self.token_level = token_level
        self.correct = self.total = 0
        self.calls = []  # (compute_result, rows, predictions type, predictions shape, label shape)

    def __call__(self, eval_pred, compute_result=False):
        logits, labels = eval_pred.predictions, eval_pred.label_ids
        self.calls.append((compute_result, labels.shape[0], type(logits), tuple(logits.shape), tuple(labels.shape)))
        preds = logits.argmax(-1)
        counted = labels != -100
        self.correct += int((preds[counted] == labels[counted]).sum())
        self.total += int(counted.sum())
        if not compute_result:
            return {}
        result = {"accuracy": self.correct / self.total}
        self.correct = self.total = 0
        return result


def test_streaming_accuracy_equals_the_whole_set(tmp_path, tokenizer, sst2_small, make_tiny_model):
    _, ev = sst2_small  # 128 real SST-2 dev sentences
    whole = Trainer(model=make_tiny_model(seed=1), args=_args(tmp_path, "whole"), compute_metrics=accuracy_metrics,
                    processing_class=tokenizer)
    want = whole.evaluate(ev)
    metric = StreamingAccuracy()
    streamed = Trainer(model=make_tiny_model(seed=1), args=_args(tmp_path, "batch", batch_eval_metrics=True),
                       compute_metrics=metric, processing_class=tokenizer)
    got = streamed.evaluate(ev)
    batches = math.ceil(128 / 12)
    assert [c[0] for c in metric.calls] == [False] * (batches - 1) + [True]  # True exactly on the last batch
    assert sum(c[1] for c in metric.calls) == 128 and {c[2] for c in metric.calls} == {torch.Tensor}
    assert got["eval_accuracy"] == want["eval_accuracy"]
    assert abs(got["eval_loss"] - want["eval_loss"]) <= 1e-6
    # several eval sets: each its own run of calls, prefixed by its name
    metric.calls.clear()
    both = streamed.evaluate({"a": ev, "b": ev.select(range(30))})
    assert both["eval_a_accuracy"] == want["eval_accuracy"]
    assert [c[0] for c in metric.calls].count(True) == 2 and len(metric.calls) == batches + 3
    assert both["eval_b_accuracy"] == whole.evaluate(ev.select(range(30)))["eval_accuracy"]


def test_compute_metrics_without_compute_result_is_refused_at_construction(tmp_path, make_tiny_model):
    with pytest.raises(ConfigError) as e:
        Trainer(model=make_tiny_model(), args=_args(tmp_path, "x", batch_eval_metrics=True),
                compute_metrics=accuracy_metrics)
    message = str(e.value)
    assert "batch_eval_metrics" in message and "compute_result" in message and "accuracy_metrics" in message
    Trainer(model=make_tiny_model(), args=_args(tmp_path, "y"), compute_metrics=accuracy_metrics)  # off: fine


def test_predict_still_returns_every_prediction(tmp_path, tokenizer, sst2_small, make_tiny_model):
    _, ev = sst2_small
    want = Trainer(model=make_tiny_model(seed=2), args=_args(tmp_path, "whole"),
                   compute_metrics=accuracy_metrics, processing_class=tokenizer).predict(ev)
    metric = StreamingAccuracy()
    got = Trainer(model=make_tiny_model(seed=2), args=_args(tmp_path, "batch", batch_eval_metrics=True),
                  compute_metrics=metric, processing_class=tokenizer).predict(ev)
    assert got.predictions.shape == want.predictions.shape == (128, 2)
    np.testing.assert_allclose(got.predictions, want.predictions, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(got.label_ids, want.label_ids)  # dataset order, as without the flag
    assert got.metrics["test_accuracy"] == want.metrics["test_accuracy"]  # from the per-batch calls
    assert metric.calls[-1][0] is True and len(metric.calls) == math.ceil(128 / 12)


def test_trimmed_prepadded_batches_are_handed_over_at_full_width(tmp_path, tokenizer, make_tiny_model):
    from datasets import Dataset
    ds = Dataset.from_list(_token_rows(tokenizer, n=24))  # pre-padded to 48, token-level labels
    metric = StreamingAccuracy(token_level=True)
    results = []
    for name, batch, fn in (("whole", False, _token_accuracy), ("batch", True, metric)):
        trainer = Trainer(model=make_tiny_model(head="token", num_labels=5, seed=3),
                          args=_args(tmp_path, name, per_device_eval_batch_size=5, batch_eval_metrics=batch),
                          compute_metrics=fn)
        results.append(trainer.evaluate(ds))
    assert {c[3] for c in metric.calls[:-1]} == {(5, 48, 5)} and {c[4] for c in metric.calls[:-1]} == {(5, 48)}
    assert results[1]["eval_accuracy"] == results[0]["eval_accuracy"]


def _token_accuracy(p):
    preds, counted = p.predictions.argmax(-1), p.label_ids != -100
    return {"accuracy": float((preds[counted] == p.label_ids[counted]).sum() / counted.sum())}


def test_include_for_metrics_gives_each_batch_its_losses_and_inputs(tmp_path, tokenizer, sst2_small,
                                                                   make_tiny_model):
    _, ev = sst2_small
    seen = []

    def metrics(p, compute_result):
        seen.append((p.losses.shape, p.inputs["input_ids"].shape[0], p.predictions.shape[0]))
        return {"rows": sum(s[2] for s in seen)} if compute_result else None

    trainer = Trainer(model=make_tiny_model(), args=_args(tmp_path, "inc", batch_eval_metrics=True,
                                                          include_for_metrics=["inputs", "loss"]),
                      compute_metrics=metrics, processing_class=tokenizer)
    out = trainer.evaluate(ev.select(range(30)))
    assert out["eval_rows"] == 30
    assert all(s[0] == (s[2],) and s[1] == s[2] for s in seen)


def test_best_model_tracking_reads_the_last_calls_metrics(tmp_path, tokenizer, sst2_small, make_tiny_model):
    tr, ev = sst2_small
    metric = StreamingAccuracy()
    args = _args(tmp_path, "best", batch_eval_metrics=True, max_steps=6, eval_strategy="steps", eval_steps=3,
                 save_strategy="steps", save_steps=3, per_device_train_batch_size=16, metric_for_best_model="accuracy",
                 load_best_model_at_end=True, learning_rate=1e-3)
    trainer = Trainer(model=make_tiny_model(), args=args, train_dataset=tr, eval_dataset=ev.select(range(40)),
                      compute_metrics=metric, processing_class=tokenizer)
    trainer.train()
    accuracies = [h["eval_accuracy"] for h in trainer.state.log_history if "eval_accuracy" in h]
    assert len(accuracies) == 2 and trainer.state.best_metric == max(accuracies)


def test_seq2seq_generated_ids_are_handed_over_per_batch(tmp_path, tokenizer):
    rows = _seq2seq_rows(tokenizer, n=6)
    seen = []

    def metrics(p, compute_result=False):
        seen.append((compute_result, tuple(p.predictions.shape)))
        return {"batches": len(seen)} if compute_result else {}

    args = Seq2SeqTrainingArguments(output_dir=str(tmp_path / "s2s"), report_to="none", disable_tqdm=True,
                                    per_device_eval_batch_size=4, predict_with_generate=True,
                                    generation_max_length=12, batch_eval_metrics=True)
    trainer = Seq2SeqTrainer(model=_bart(tokenizer), args=args, processing_class=tokenizer, compute_metrics=metrics)
    out = trainer.evaluate(rows)
    assert out["eval_batches"] == 2 and [s[0] for s in seen] == [False, True]
    assert sum(s[1][0] for s in seen) == 6 and all(s[1][1] <= 12 for s in seen)


class ObjectTrainer(Trainer):
    """A prediction_step whose outputs are python lists: one dict per row (like detection labels)."""

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        loss, logits, labels = super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
        lengths = inputs["attention_mask"].sum(1).tolist()
        rows = [{"length": n, "label": int(y)} for n, y in zip(lengths, labels.tolist())]
        return loss, [{"argmax": int(i)} for i in logits.argmax(-1).tolist()], rows


def test_eval_use_gather_object_keeps_list_outputs_as_rows(tmp_path, tokenizer, sst2_small, make_tiny_model):
    _, ev = sst2_small
    ev = ev.select(range(30))
    trainer = ObjectTrainer(model=make_tiny_model(), args=_args(tmp_path, "obj", eval_use_gather_object=True),
                            processing_class=tokenizer)
    out = trainer.predict(ev)
    assert isinstance(out.label_ids, list) and len(out.label_ids) == len(out.predictions) == 30
    # dataset order (the eval batches ran sorted by length) and one object per row
    assert [r["length"] for r in out.label_ids] == [len(ids) for ids in ev["input_ids"]]
    assert [r["label"] for r in out.label_ids] == list(ev["label"])
    plain = Trainer(model=make_tiny_model(), args=_args(tmp_path, "plain"), processing_class=tokenizer).predict(ev)
    assert [p["argmax"] for p in out.predictions] == plain.predictions.argmax(-1).tolist()
