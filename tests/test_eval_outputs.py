"""What evaluate() and predict() hand out, as transformers 5.x: ``eval_do_concat_batches=False`` (lists of per-batch
arrays, nested outputs per batch) and ``include_for_metrics=["loss"]`` in whole-set mode (``losses``: each batch's
mean loss once per row), also with pre-padded batches run trimmed."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from datasets import Dataset

from test_prepadded import _prepadded_sst2, _token_rows
from trainwright import ConfigError, Trainer, TrainingArguments

BATCH = 12


def _args(tmp_path, name, **kw):
    kw.setdefault("per_device_eval_batch_size", BATCH)
    return TrainingArguments(output_dir=str(tmp_path / name), report_to="none", disable_tqdm=True,
                             save_strategy="no", **kw)


class Recorder:
    """A compute_metrics keeping the EvalPrediction it gets."""

    def __init__(self):
        self.seen = []

    def __call__(self, eval_pred):
        self.seen.append(eval_pred)
        return {"calls": float(len(self.seen))}


def _trainer(tmp_path, name, model, tokenizer, sort=True, metrics=None, **kw):
    trainer = Trainer(model=model, args=_args(tmp_path, name, **kw), processing_class=tokenizer,
                      compute_metrics=metrics)
    trainer.eval_sort_by_length = sort  # False: the batches of eval_do_concat_batches=False (dataset order)
    return trainer


def _batch_losses(model, tokenizer, rows, batch=BATCH):
    """Each batch's mean loss, the batches in dataset order (padded as the Trainer's default collator pads)."""
    from transformers import DataCollatorWithPadding
    collate = DataCollatorWithPadding(tokenizer)
    model.eval()
    features = [{k: rows[i][k] for k in ("input_ids", "token_type_ids", "attention_mask", "label")}
                for i in range(len(rows))]
    out = []
    with torch.no_grad():
        for start in range(0, len(features), batch):
            out.append(float(model(**collate(features[start:start + batch])).loss))
    return out


def test_predict_per_batch_arrays_concatenate_to_the_default_run(tmp_path, tokenizer, sst2_small, make_tiny_model):
    _, ev = sst2_small  # 128 real SST-2 dev sentences: 10 batches of 12 and one of 8
    same_batches = _trainer(tmp_path, "concat", make_tiny_model(seed=1), tokenizer, sort=False).predict(ev)
    default = _trainer(tmp_path, "default", make_tiny_model(seed=1), tokenizer).predict(ev)  # sorted, filled
    metric = Recorder()
    trainer = _trainer(tmp_path, "batches", make_tiny_model(seed=1), tokenizer, metrics=metric,
                       eval_do_concat_batches=False)
    got = trainer.predict(ev)
    sizes = [BATCH] * 10 + [8]
    assert isinstance(got.predictions, list) and isinstance(got.label_ids, list)
    assert [p.shape for p in got.predictions] == [(n, 2) for n in sizes]
    assert [y.shape for y in got.label_ids] == [(n,) for n in sizes]
    assert all(isinstance(p, np.ndarray) and p.dtype == np.float32 for p in got.predictions)
    # the same batches concatenated: bit-identical; the default (length-sorted) batches: equal up to rounding
    np.testing.assert_array_equal(np.concatenate(got.predictions), same_batches.predictions)
    np.testing.assert_array_equal(np.concatenate(got.label_ids), default.label_ids)
    np.testing.assert_array_equal(np.concatenate(got.label_ids), np.asarray(ev["label"]))  # dataset order
    np.testing.assert_allclose(np.concatenate(got.predictions), default.predictions, atol=1e-6, rtol=0)
    assert got.metrics["test_loss"] == same_batches.metrics["test_loss"]
    # compute_metrics receives the lists too (evaluate() as predict())
    trainer.evaluate(ev)
    seen = metric.seen[-1]
    assert isinstance(seen.predictions, list) and len(seen.predictions) == len(sizes)
    assert isinstance(seen.label_ids, list) and [len(y) for y in seen.label_ids] == sizes
    assert seen.losses is None and seen.inputs is None and len(seen.elements) == 2


def test_nested_outputs_stay_per_batch(tmp_path, tokenizer, sst2_small, make_tiny_model):
    _, ev = sst2_small
    ev = ev.select(range(30))  # 3 batches: 12, 12, 6
    whole = _trainer(tmp_path, "whole", make_tiny_model(seed=2, output_hidden_states=True), tokenizer,
                     sort=False).predict(ev)
    got = _trainer(tmp_path, "batches", make_tiny_model(seed=2, output_hidden_states=True), tokenizer,
                   eval_do_concat_batches=False).predict(ev)
    assert isinstance(got.predictions, list) and len(got.predictions) == 3
    start = 0
    for batch in got.predictions:
        logits, hidden = batch  # (logits, hidden_states): the batch's own structure
        assert isinstance(batch, tuple) and isinstance(hidden, tuple) and len(hidden) == 3  # embeddings + 2 layers
        rows = logits.shape[0]
        width = max(len(ev[i]["input_ids"]) for i in range(start, start + rows))
        np.testing.assert_array_equal(logits, whole.predictions[0][start:start + rows])
        for layer, whole_layer in zip(hidden, whole.predictions[1]):
            assert layer.shape == (rows, width, 32)  # the batch's own width, not padded to the longest batch
            np.testing.assert_array_equal(layer, whole_layer[start:start + rows, :width])
            assert (whole_layer[start:start + rows, width:] == -100).all()
        start += rows
    assert start == 30


def test_losses_are_each_batch_loss_once_per_row(tmp_path, tokenizer, sst2_small, make_tiny_model):
    _, ev = sst2_small
    metric = Recorder()
    trainer = _trainer(tmp_path, "losses", make_tiny_model(seed=3), tokenizer, sort=False, metrics=metric,
                       include_for_metrics=["loss"])
    metrics = trainer.evaluate(ev)
    seen = metric.seen[-1]
    assert len(seen.elements) == 3 and seen.inputs is None
    preds, labels, losses = seen  # unpacks as in transformers: (predictions, label_ids, losses)
    assert losses is seen.losses and isinstance(losses, np.ndarray)
    assert losses.shape == (128,) and losses.dtype == np.float32  # the last batch: its 8 real rows
    want = _batch_losses(make_tiny_model(seed=3), tokenizer, ev)
    np.testing.assert_allclose(losses, np.repeat(want, [BATCH] * 10 + [8]), atol=1e-6, rtol=0)
    assert abs(float(np.mean(losses.astype(np.float64))) - metrics["eval_loss"]) <= 1e-6
    # length-sorted batches (the default): every row still gets the loss of the batch it ran in, in dataset order
    metric.seen.clear()
    sorted_trainer = _trainer(tmp_path, "sorted", make_tiny_model(seed=3), tokenizer, metrics=metric,
                              include_for_metrics=["loss", "inputs"])
    sorted_metrics = sorted_trainer.evaluate(ev)
    seen = metric.seen[-1]
    assert len(seen.elements) == 4 and seen.elements[3] is seen.losses  # (predictions, labels, inputs, losses)
    assert seen.losses.shape == (128,)
    assert abs(float(np.mean(seen.losses.astype(np.float64))) - sorted_metrics["eval_loss"]) <= 1e-6
    for i in (0, 57, 127):  # inputs in dataset order: each row's tokens, then -100 where batches were narrower
        ids = ev[i]["input_ids"]
        np.testing.assert_array_equal(seen.inputs[i, :len(ids)], ids)


def test_per_batch_losses_and_inputs(tmp_path, tokenizer, sst2_small, make_tiny_model):
    _, ev = sst2_small
    metric = Recorder()
    trainer = _trainer(tmp_path, "both", make_tiny_model(seed=3), tokenizer, metrics=metric,
                       eval_do_concat_batches=False, include_for_metrics=["inputs", "loss"])
    metrics = trainer.evaluate(ev)
    seen = metric.seen[-1]
    want = _batch_losses(make_tiny_model(seed=3), tokenizer, ev)
    assert isinstance(seen.losses, list) and len(seen.losses) == math.ceil(128 / BATCH)
    for i, (losses, ids, expected) in enumerate(zip(seen.losses, seen.inputs, want)):
        rows = min(BATCH, 128 - i * BATCH)
        assert losses.shape == (rows,) and np.all(losses == losses[0])
        assert abs(float(losses[0]) - expected) <= 1e-6
        width = max(len(ev[j]["input_ids"]) for j in range(i * BATCH, i * BATCH + rows))
        assert ids.shape == (rows, width)  # the batch as collated
    assert abs(float(np.mean(np.concatenate(seen.losses).astype(np.float64))) - metrics["eval_loss"]) <= 1e-6


def test_trimmed_prepadded_batches_padded_back_per_batch(tmp_path, tokenizer, make_tiny_model):
    """Token-level outputs of trimmed pre-padded batches: each batch back to its full width (-100 where cut)."""
    rows = _token_rows(tokenizer, n=30)  # pre-padded to 48, token-level labels
    ds = Dataset.from_list(rows)
    metric = Recorder()
    trainer = _trainer(tmp_path, "trim", make_tiny_model(head="token", num_labels=5, seed=4), tokenizer,
                       metrics=metric, eval_do_concat_batches=False, include_for_metrics=["loss"])
    assert trainer.get_eval_dataloader(ds).collate_fn.eval_trimmer is not None  # trim_padding=None: trimmed
    got = trainer.predict(ds)
    assert [p.shape for p in got.predictions] == [(12, 48, 5), (12, 48, 5), (6, 48, 5)]
    assert [y.shape for y in got.label_ids] == [(12, 48), (12, 48), (6, 48)]
    untrimmed = _trainer(tmp_path, "untrimmed", make_tiny_model(head="token", num_labels=5, seed=4), tokenizer,
                         sort=False, trim_padding=False).predict(ds)
    np.testing.assert_array_equal(np.concatenate(got.label_ids), untrimmed.label_ids)
    real = np.asarray([r["attention_mask"] for r in rows], dtype=bool)
    preds = np.concatenate(got.predictions)
    np.testing.assert_allclose(preds[real], untrimmed.predictions[real], atol=1e-5, rtol=0)
    for batch, start in zip(got.predictions, (0, 12, 24)):
        width = int(real[start:start + len(batch)].sum(1).max())
        assert (batch[:, width:] == -100).all()  # the cut columns of this batch
    trainer.evaluate(ds)
    seen = metric.seen[-1]
    assert [x.shape for x in seen.losses] == [(12,), (12,), (6,)]
    assert abs(float(seen.losses[2][0]) - float(_last_batch_loss(tmp_path, tokenizer, make_tiny_model, ds))) <= 1e-5


def _last_batch_loss(tmp_path, tokenizer, make_tiny_model, ds):
    """The last batch's (rows 24..29) loss, untrimmed."""
    trainer = _trainer(tmp_path, "last", make_tiny_model(head="token", num_labels=5, seed=4), tokenizer,
                       trim_padding=False)
    return trainer.evaluate(ds.select(range(24, 30)))["eval_loss"]


def test_sequence_classification_prepadded_with_losses(tmp_path, tokenizer, make_tiny_model):
    ev = _prepadded_sst2(tokenizer, "dev", 40)
    metric = Recorder()
    trainer = _trainer(tmp_path, "seq", make_tiny_model(seed=5), tokenizer, metrics=metric,
                       eval_do_concat_batches=False, include_for_metrics=["loss"])
    got = trainer.predict(ev)
    plain = _trainer(tmp_path, "plain", make_tiny_model(seed=5), tokenizer, trim_padding=False,
                     include_for_metrics=["loss"], metrics=metric).evaluate(ev)
    assert [p.shape for p in got.predictions] == [(12, 2), (12, 2), (12, 2), (4, 2)]
    trainer.evaluate(ev)
    per_batch = metric.seen[-1].losses
    assert abs(float(np.mean(np.concatenate(per_batch).astype(np.float64))) - plain["eval_loss"]) <= 1e-6


def test_gather_object_lists_stay_rows_within_each_batch(tmp_path, tokenizer, sst2_small, make_tiny_model):
    _, ev = sst2_small
    ev = ev.select(range(30))

    class ObjectTrainer(Trainer):
        def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
            loss, logits, labels = super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
            return loss, [{"argmax": int(i)} for i in logits.argmax(-1).tolist()], labels

    trainer = ObjectTrainer(model=make_tiny_model(seed=6), processing_class=tokenizer,
                            args=_args(tmp_path, "objects", eval_use_gather_object=True, eval_do_concat_batches=False))
    got = trainer.predict(ev)
    assert [len(p) for p in got.predictions] == [12, 12, 6]
    assert all(isinstance(p, list) and isinstance(p[0], dict) for p in got.predictions)
    reference = _trainer(tmp_path, "ref", make_tiny_model(seed=6), tokenizer, sort=False).predict(ev)
    assert [row["argmax"] for p in got.predictions for row in p] == reference.predictions.argmax(-1).tolist()


class _FeatureModel(torch.nn.Module):
    """A model whose main input is not input_ids (as vision and audio models: main_input_name)."""
    main_input_name = "features"

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(4, 2)

    def forward(self, features, labels=None):
        logits = self.linear(features)
        loss = torch.nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return {"loss": loss, "logits": logits}


def test_inputs_for_metrics_are_the_models_main_input(tmp_path):
    """include_for_metrics=["inputs"] hands over inputs[model.main_input_name], as transformers; a batch without
    that key is a clear error naming the argument and the key."""
    g = torch.Generator().manual_seed(1)
    features = torch.randn(10, 4, generator=g)
    ev = Dataset.from_dict({"features": features.tolist(), "labels": [i % 2 for i in range(10)]})
    metric = Recorder()
    trainer = Trainer(model=_FeatureModel(), args=_args(tmp_path, "features", per_device_eval_batch_size=4,
                                                        include_for_metrics=["inputs"]), compute_metrics=metric)
    trainer.evaluate(ev)
    np.testing.assert_allclose(metric.seen[-1].inputs, features.numpy(), atol=1e-6, rtol=0)
    _FeatureModel.main_input_name = "pixel_values"
    try:
        with pytest.raises(ConfigError, match=r"include_for_metrics.*'pixel_values'.*main_input_name"):
            Trainer(model=_FeatureModel(), args=_args(tmp_path, "missing", include_for_metrics=["inputs"]),
                    compute_metrics=metric).evaluate(ev)
    finally:
        _FeatureModel.main_input_name = "features"
