"""Behaviour that must match transformers.Trainer 5.x where a script would notice the difference: a second
train(), the last step's evaluation and checkpoint, iterable eval sets, one save per step, label smoothing on
multi-label models, memory metrics, log_level, the tokenizer's pad token, and one-element list labels.
(Callback states across a resume: test_callbacks.py.)"""
import logging
import os
import sys
import time

import numpy as np
import pytest
import torch

from conftest import StopAt, accuracy_metrics, tiny_bert_config
from trainwright import Trainer, TrainerCallback, TrainingArguments


def _args(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path), per_device_train_batch_size=16, learning_rate=1e-3, max_steps=4,
                save_strategy="no", report_to="none", disable_tqdm=True, write_report=False, logging_steps=1)
    base.update(kw)
    return TrainingArguments(**base)


def _same_weights(a, b) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


class CountSaves(TrainerCallback):
    def __init__(self):
        self.steps = []

    def on_save(self, args, state, control, **kwargs):
        self.steps.append(state.global_step)


def _checkpoints(path):
    return sorted(int(p.name.split("-")[1]) for p in path.iterdir() if p.name.startswith("checkpoint-"))


# ====================================================================== a. a second train()
def test_second_train_makes_a_new_scheduler_and_keeps_the_optimizer(tmp_path, tokenizer, make_tiny_model,
                                                                       sst2_small):
    trainer = Trainer(make_tiny_model(), _args(tmp_path, lr_scheduler_type="linear"), train_dataset=sst2_small[0],
                      processing_class=tokenizer)
    trainer.train()
    first_lrs = [h["learning_rate"] for h in trainer.state.log_history if "loss" in h]
    optimizer = trainer.optimizer
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.train()
    second_lrs = [h["learning_rate"] for h in trainer.state.log_history if "loss" in h]
    assert second_lrs == first_lrs and first_lrs[0] > 0  # the schedule starts again (not from its end at 0)
    assert trainer.state.global_step == 4 and len(second_lrs) == 4  # a fresh state and log history
    assert trainer.optimizer is optimizer  # as transformers: the optimizer (and its moments) is kept
    assert not all(torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())  # it trained again


def test_second_train_with_model_init_starts_over(tmp_path, tokenizer, sst2_small):
    from transformers import BertForSequenceClassification

    def model_init():  # not seeded here: the Trainer seeds before calling it
        return BertForSequenceClassification(tiny_bert_config(tokenizer))

    trainer = Trainer(model_init=model_init, args=_args(tmp_path), train_dataset=sst2_small[0],
                      processing_class=tokenizer)
    trainer.train()
    first_model, first_optimizer = trainer.model, trainer.optimizer
    first_losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    trainer.train()
    assert trainer.model is not first_model and trainer.optimizer is not first_optimizer
    assert [h["loss"] for h in trainer.state.log_history if "loss" in h] == first_losses
    assert _same_weights(trainer.model, first_model)  # the same seeded model, trained the same way


# ====================================================================== b. the last step
def test_last_step_is_evaluated_and_saved_when_off_the_steps_grid(tmp_path, tokenizer, make_tiny_model, sst2_small):
    train, dev = sst2_small
    trainer = Trainer(make_tiny_model(), _args(tmp_path, max_steps=7, eval_strategy="steps", eval_steps=3,
                                               save_strategy="steps", save_steps=3),
                      train_dataset=train, eval_dataset=dev.select(range(16)), processing_class=tokenizer)
    trainer.train()
    assert [h["step"] for h in trainer.state.log_history if "eval_loss" in h] == [3, 6, 7]
    assert _checkpoints(tmp_path) == [3, 6, 7]


def test_last_step_on_the_grid_is_evaluated_once(tmp_path, tokenizer, make_tiny_model, sst2_small):
    train, dev = sst2_small
    trainer = Trainer(make_tiny_model(), _args(tmp_path, max_steps=6, eval_strategy="steps", eval_steps=3),
                      train_dataset=train, eval_dataset=dev.select(range(16)), processing_class=tokenizer)
    trainer.train()
    assert [h["step"] for h in trainer.state.log_history if "eval_loss" in h] == [3, 6]


# ====================================================================== d. one save per step
@pytest.mark.parametrize("stop", ["max_steps", "callback"])
def test_one_checkpoint_when_training_stops_mid_epoch(tmp_path, tokenizer, make_tiny_model, sst2_small, stop):
    counter = CountSaves()
    callbacks = [counter] if stop == "max_steps" else [StopAt(3), counter]  # StopAt also asks for a save
    trainer = Trainer(make_tiny_model(), _args(tmp_path, max_steps=3 if stop == "max_steps" else 10,
                                               save_strategy="epoch"),  # an epoch is 16 steps
                      train_dataset=sst2_small[0], processing_class=tokenizer, callbacks=callbacks)
    trainer.train()
    assert trainer.state.global_step == 3
    assert counter.steps == [3] and _checkpoints(tmp_path) == [3]


# ====================================================================== c. iterable eval sets
class _Rows(torch.utils.data.IterableDataset):
    def __init__(self, rows):
        self.rows = rows

    def __iter__(self):
        return iter(self.rows)


@pytest.mark.parametrize("kind", ["torch", "datasets"])
def test_evaluate_and_predict_on_an_iterable_dataset_without_len(tmp_path, tokenizer, make_tiny_model,
                                                                 sst2_small, kind):
    dev = sst2_small[1].select(range(20)).remove_columns("sentence")
    data = _Rows(list(dev)) if kind == "torch" else dev.to_iterable_dataset()
    with pytest.raises(TypeError):
        len(data)
    trainer = Trainer(make_tiny_model(), _args(tmp_path, per_device_eval_batch_size=8), processing_class=tokenizer,
                      compute_metrics=accuracy_metrics)
    reference = trainer.evaluate(dev)
    metrics = trainer.evaluate(data)
    assert metrics["eval_loss"] == pytest.approx(reference["eval_loss"], abs=1e-5)
    assert metrics["eval_accuracy"] == reference["eval_accuracy"]
    assert metrics["eval_steps_per_second"] > 0
    out = trainer.predict(data)
    np.testing.assert_allclose(out.predictions, trainer.predict(dev).predictions, atol=1e-5)
    np.testing.assert_array_equal(out.label_ids, np.array(dev["label"]))
    assert out.metrics["test_steps_per_second"] > 0


# ====================================================================== f. label smoothing, multi-label
def test_label_smoothing_is_turned_off_for_a_multi_label_model(tmp_path, tokenizer, make_tiny_model, sst2_small):
    data = sst2_small[0].select(range(48)).map(
        lambda r: {"labels": [float(r["label"] == 0), float(r["label"] == 1)]}).remove_columns(["label", "sentence"])

    def run(factor, out):
        model = make_tiny_model(problem_type="multi_label_classification")
        trainer = Trainer(model, _args(out, max_steps=3, label_smoothing_factor=factor), train_dataset=data,
                          processing_class=tokenizer)
        trainer.train()
        return trainer.model

    with pytest.warns(UserWarning, match="Label smoothing is not compatible with multi-label classification"):
        smoothed = run(0.1, tmp_path / "a")
    assert _same_weights(smoothed, run(0.0, tmp_path / "b"))


# ====================================================================== g. memory metrics
class _AllocateDuringTraining(TrainerCallback):
    """At the last step: holds 128 MB for a moment and frees them, then keeps 40 MB. Both are above glibc's
    largest mmap threshold (32 MB), so they always come from fresh pages: RSS moves even when earlier tests left
    freed memory in the heap for a smaller allocation to reuse."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == state.max_steps:
            peak = torch.ones(32 * 2**20)
            time.sleep(0.2)
            del peak
            self.kept = torch.ones(10 * 2**20)


def test_memory_metrics_only_when_asked(tmp_path, tokenizer, make_tiny_model, sst2_small):
    train, dev = sst2_small
    trainer = Trainer(make_tiny_model(), _args(tmp_path, max_steps=2), train_dataset=train,
                      processing_class=tokenizer)
    assert not any("_mem_" in k for k in trainer.train().metrics)
    assert not any("_mem_" in k for k in trainer.evaluate(dev))


@pytest.mark.slow
@pytest.mark.parametrize("source", ["psutil", "proc"])
def test_memory_metrics_with_skip_memory_metrics_false(tmp_path, tokenizer, make_tiny_model, sst2_small,
                                                       monkeypatch, source, request):
    # RSS deltas are only meaningful in a fresh process: in a long test session earlier tests leave freed memory
    # that an allocation reuses without RSS moving. So the body runs again alone in a new interpreter.
    if os.environ.get("TW_MEMORY_METRICS_INNER") != "1":
        import subprocess
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "slow",
                               f"{__file__}::{request.node.name}"], capture_output=True, text=True, timeout=600,
                              env={**os.environ, "TW_MEMORY_METRICS_INNER": "1"}, cwd=os.path.dirname(__file__))
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
        return
    if source == "proc":
        monkeypatch.setitem(sys.modules, "psutil", None)  # psutil is a dev dependency: /proc/self/statm instead
    train, dev = sst2_small
    trainer = Trainer(make_tiny_model(), _args(tmp_path, max_steps=2, skip_memory_metrics=False),
                      train_dataset=train, processing_class=tokenizer, callbacks=[_AllocateDuringTraining()])
    metrics = trainer.train().metrics
    mb = 2**20
    assert {"init_mem_cpu_alloc_delta", "init_mem_cpu_peaked_delta", "before_init_mem_cpu",
            "train_mem_cpu_alloc_delta", "train_mem_cpu_peaked_delta"} <= set(metrics)
    assert metrics["before_init_mem_cpu"] > 50 * mb  # the process, torch loaded
    assert metrics["train_mem_cpu_alloc_delta"] >= 36 * mb  # the 40 MB kept
    assert metrics["train_mem_cpu_peaked_delta"] >= 70 * mb  # 128 MB held and freed: 88 MB above the end
    last = trainer.state.log_history[-1]
    assert "train_mem_cpu_alloc_delta" in last  # logged with the train metrics, as transformers
    evaluated = trainer.evaluate(dev)
    assert {"eval_mem_cpu_alloc_delta", "eval_mem_cpu_peaked_delta"} <= set(evaluated)
    assert "init_mem_cpu_alloc_delta" not in evaluated  # reported once
    assert not any("_mem_" in k for k in trainer.state.log_history[-1])  # evaluate's are returned, not logged
    predicted = trainer.predict(dev).metrics
    assert {"test_mem_cpu_alloc_delta", "test_mem_cpu_peaked_delta"} <= set(predicted)
    assert all(v >= 0 for k, v in {**metrics, **evaluated, **predicted}.items() if k.endswith("_peaked_delta"))


# ====================================================================== h. log_level
@pytest.fixture
def restore_log_levels():
    from transformers.utils import logging as hf_logging
    ours, theirs = logging.getLogger("trainwright").level, hf_logging.get_verbosity()
    yield
    logging.getLogger("trainwright").setLevel(ours)
    hf_logging.set_verbosity(theirs)


@pytest.mark.parametrize("level", ["info", "warning"])
def test_log_level_governs_the_training_block(tmp_path, tokenizer, make_tiny_model, sst2_small, caplog, capsys,
                                             restore_log_levels, level):
    trainer = Trainer(make_tiny_model(), _args(tmp_path, max_steps=1, log_level=level), train_dataset=sst2_small[0],
                      processing_class=tokenizer)
    caplog.set_level(logging.NOTSET)  # the logger's own level decides
    trainer.train()
    block = [r for r in caplog.records if r.name == "trainwright" and "***** Running training *****" in r.getMessage()]
    assert len(block) == (1 if level == "info" else 0)
    if block:
        assert block[0].levelno == logging.INFO
        assert any("Total optimization steps = 1" in r.getMessage() for r in caplog.records)
    assert "Running training" not in capsys.readouterr().err  # a logging record, never a print


def test_training_block_on_stderr_when_logging_is_not_configured(tmp_path, tokenizer, make_tiny_model, sst2_small,
                                                                 capsys, monkeypatch, restore_log_levels):
    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # a script that never configured logging
    trainer = Trainer(make_tiny_model(), _args(tmp_path, max_steps=1, log_level="info"), train_dataset=sst2_small[0],
                      processing_class=tokenizer)
    trainer.train()
    err = capsys.readouterr().err
    assert err.count("***** Running training *****") == 1 and "  Total optimization steps = 1" in err


def test_invalid_log_level_names_the_argument(tmp_path, tokenizer, make_tiny_model):
    from trainwright import ConfigError
    with pytest.raises(ConfigError, match="log_level='loud'.*'info'"):
        Trainer(make_tiny_model(), _args(tmp_path, log_level="loud"), processing_class=tokenizer)


# ====================================================================== i. the tokenizer's pad token
def test_pad_token_id_comes_from_the_tokenizer(tmp_path, tokenizer, sst2_small, caplog):
    from transformers import GPT2Config, GPT2ForSequenceClassification
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=tokenizer.vocab_size, n_positions=128, n_embd=32, n_layer=2, n_head=2,
                        num_labels=2, pad_token_id=None)
    model = GPT2ForSequenceClassification(config)
    assert model.config.pad_token_id is None and tokenizer.pad_token_id is not None
    train, dev = sst2_small
    trainer = Trainer(model, _args(tmp_path, max_steps=2, per_device_eval_batch_size=16), train_dataset=train,
                      processing_class=tokenizer)
    with caplog.at_level(logging.WARNING, logger="trainwright"):
        trainer.train()  # batches of 16 rows: GPT-2 needs its pad token id to find each row's last token
    assert model.config.pad_token_id == tokenizer.pad_token_id
    assert "Updated tokens: {'pad_token_id': 0}" in caplog.text
    assert np.isfinite(trainer.evaluate(dev.select(range(32)))["eval_loss"])


# ====================================================================== j. one-element list labels
@pytest.mark.parametrize("kind", ["arrow", "rows"])
def test_one_element_list_labels_train_like_scalar_labels(tmp_path, tokenizer, make_tiny_model, sst2_small, kind):
    scalar = sst2_small[0].select(range(48)).remove_columns("sentence")
    listed = scalar.map(lambda r: {"label": [r["label"]]})  # [1], as a CSV loader may make them
    if kind == "rows":
        listed = list(listed)

    def run(data, out):
        trainer = Trainer(make_tiny_model(), _args(out, max_steps=3), train_dataset=data, processing_class=tokenizer)
        trainer.train()
        return trainer.model

    assert _same_weights(run(listed, tmp_path / "list"), run(scalar, tmp_path / "scalar"))


# ====================================================================== j. total_flos
def test_total_flos_is_counted_as_transformers_counts_it(tmp_path, tokenizer, make_tiny_model):
    """total_flos (train metrics, trainer_state.json) = 6 x input positions (padding included) x the parameters
    without the embeddings, as transformers.Trainer sums PreTrainedModel.floating_point_ops. Before: all parameters
    and the non-padding tokens (40x transformers' figure for a tiny GPT-2 with a 30k vocabulary)."""
    import transformers

    from conftest import sst2_dataset
    data = sst2_dataset("train", 24).map(
        lambda b: tokenizer(b["sentence"], padding="max_length", truncation=True, max_length=32), batched=True,
        remove_columns=["sentence"])
    args = dict(per_device_train_batch_size=8, max_steps=3, save_strategy="no", report_to="none",
                disable_tqdm=True, use_cpu=True)
    # the rows are pre-padded: with trim_padding=False the model runs every padded position, as transformers'
    ours = Trainer(make_tiny_model(), TrainingArguments(str(tmp_path / "tw"), write_report=False, trim_padding=False,
                                                        **args), train_dataset=data)
    ours.train()
    theirs = transformers.Trainer(make_tiny_model(), transformers.TrainingArguments(str(tmp_path / "hf"), **args),
                                  train_dataset=data)
    theirs.train()
    model = make_tiny_model()
    expected = 6 * model.num_parameters(exclude_embeddings=True) * 3 * 8 * 32
    assert ours.state.total_flos == theirs.state.total_flos == expected
    # by default the batches are cut to their longest real row: total_flos counts the positions the model ran
    trimmed = Trainer(make_tiny_model(), TrainingArguments(str(tmp_path / "tr"), write_report=False, **args),
                      train_dataset=data)
    trimmed.train()
    assert 0 < trimmed.state.total_flos < expected
    assert trimmed.state.total_flos % (6 * model.num_parameters(exclude_embeddings=True) * 8) == 0


# ====================================================================== k. compute_loss_func in evaluation
def test_compute_loss_func_gets_the_label_count_in_evaluation(tmp_path, tokenizer, make_tiny_model, sst2_small):
    """As transformers 5.x, evaluate() passes compute_loss_func the batch's label count, so a sum-style loss
    (``total / num_items_in_batch``, no None branch: TRL-style) works there too. Before: None, and the division
    failed (TypeError) in evaluate()."""
    seen = []

    def summed_ce(outputs, labels, num_items_in_batch):
        seen.append(num_items_in_batch)
        return torch.nn.functional.cross_entropy(outputs.logits, labels, reduction="sum") / num_items_in_batch

    _, dev = sst2_small
    dev = dev.select(range(20))
    args = _args(tmp_path, per_device_eval_batch_size=8)
    with_func = Trainer(make_tiny_model(), args, eval_dataset=dev, processing_class=tokenizer,
                        compute_loss_func=summed_ce).evaluate()["eval_loss"]
    plain = Trainer(make_tiny_model(), args, eval_dataset=dev, processing_class=tokenizer).evaluate()["eval_loss"]
    assert with_func == pytest.approx(plain, rel=1e-5)  # sum / rows == the model's mean loss
    assert sorted(seen) == sorted(int(n) for n in seen) and sum(seen) == 20  # every row counted once


# ====================================================================== l. persistent eval workers, label_smoother
def test_persistent_workers_keep_the_eval_loader(tmp_path, tokenizer, make_tiny_model, sst2_small):
    """dataloader_persistent_workers=True: the Trainer's eval set (or a named one) keeps its loader, so its workers
    live from one evaluate() to the next, as in transformers. Before: a new loader (new workers) every call."""
    _, dev = sst2_small
    dev = dev.select(range(16))
    other = dev.select(range(8))
    args = _args(tmp_path, dataloader_num_workers=1, dataloader_persistent_workers=True)
    trainer = Trainer(make_tiny_model(), args, eval_dataset=dev, processing_class=tokenizer)
    first = trainer.get_eval_dataloader()
    assert trainer.get_eval_dataloader() is first and trainer.get_eval_dataloader(dev) is first
    assert trainer.get_eval_dataloader(other) is not first  # another dataset: its own loader
    a, b = trainer.evaluate()["eval_loss"], trainer.evaluate()["eval_loss"]
    assert a == b and trainer.get_eval_dataloader() is first
    named = Trainer(make_tiny_model(), args, eval_dataset={"x": dev, "y": other}, processing_class=tokenizer)
    assert named.get_eval_dataloader("x") is named.get_eval_dataloader("x")
    assert named.get_eval_dataloader("x") is not named.get_eval_dataloader("y")
    plain = Trainer(make_tiny_model(), _args(tmp_path, dataloader_num_workers=1), eval_dataset=dev,
                    processing_class=tokenizer)
    assert plain.get_eval_dataloader() is not plain.get_eval_dataloader()  # without persistent workers: new ones


def test_label_smoother_attribute_as_transformers(tmp_path, tokenizer, make_tiny_model, sst2_small):
    """``trainer.label_smoother`` (read by subclasses that copy transformers' compute_loss): transformers'
    LabelSmoother while smoothing is on, None otherwise; setting it to None turns smoothing off. Before: no such
    attribute (AttributeError)."""
    from transformers.trainer_pt_utils import LabelSmoother
    train, _ = sst2_small
    smoothed = Trainer(make_tiny_model(), _args(tmp_path, label_smoothing_factor=0.1), train_dataset=train,
                       processing_class=tokenizer)
    assert isinstance(smoothed.label_smoother, LabelSmoother) and smoothed.label_smoother.epsilon == 0.1
    assert Trainer(make_tiny_model(), _args(tmp_path), processing_class=tokenizer).label_smoother is None

    class CopiedComputeLoss(Trainer):  # the label-smoothing branch of transformers' compute_loss, as scripts copy it
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            labels = inputs.pop("labels") if self.label_smoother is not None and "labels" in inputs else None
            outputs = model(**inputs)
            loss = self.label_smoother(outputs, labels) if labels is not None else outputs["loss"]
            return (loss, outputs) if return_outputs else loss

    copied = CopiedComputeLoss(make_tiny_model(), _args(tmp_path / "c", label_smoothing_factor=0.1),
                               train_dataset=train, processing_class=tokenizer)
    assert copied.train().training_loss > 0
    copied.label_smoother = None
    assert copied.label_smoother is None and copied._label_smoothing_factor == 0.0
