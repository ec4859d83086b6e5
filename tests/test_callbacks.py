"""Callbacks written for transformers.Trainer run unchanged; events fire in HF's order; TrainerControl
flags are obeyed; add/pop/remove; callback states are saved and restored across a resume as in transformers."""
import json
import logging

import pytest
from transformers import TrainerCallback as HFTrainerCallback

from conftest import accuracy_metrics
from trainwright import (
    EarlyStoppingCallback,
    PrinterCallback,
    ProgressCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)


def _args(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path), per_device_train_batch_size=16, learning_rate=1e-3, max_steps=8,
                save_strategy="no", disable_tqdm=True, write_report=False, logging_steps=2)
    base.update(kw)
    return TrainingArguments(**base)


class StopOnLog(HFTrainerCallback):  # written against transformers' API
    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.global_step >= 4:
            control.should_training_stop = True


class ReadEvalMetrics(HFTrainerCallback):
    def __init__(self):
        self.seen = []

    def on_evaluate(self, args, state, control, metrics, **kwargs):
        self.seen.append((state.global_step, metrics["eval_accuracy"], metrics["eval_loss"]))


class HalveLearningRate(HFTrainerCallback):
    def __init__(self):
        self.lrs = []

    def on_step_begin(self, args, state, control, optimizer=None, **kwargs):
        for group in optimizer.param_groups:
            group["lr"] = group["lr"] * 0.5
        self.lrs.append(optimizer.param_groups[0]["lr"])


def test_hf_callback_stops_training_from_on_log(tmp_path, tokenizer, make_tiny_model, sst2_small):
    t = Trainer(make_tiny_model(), _args(tmp_path), train_dataset=sst2_small[0], processing_class=tokenizer,
                callbacks=[StopOnLog])  # a class, as HF allows
    t.train()
    assert t.state.global_step == 4


def test_hf_callback_reads_metrics_on_evaluate(tmp_path, tokenizer, make_tiny_model, sst2_small):
    cb = ReadEvalMetrics()
    t = Trainer(make_tiny_model(), _args(tmp_path, eval_strategy="steps", eval_steps=4), train_dataset=sst2_small[0],
                eval_dataset=sst2_small[1], processing_class=tokenizer, compute_metrics=accuracy_metrics,
                callbacks=[cb])
    t.train()
    logged = [(h["step"], h["eval_accuracy"], h["eval_loss"]) for h in t.state.log_history if "eval_accuracy" in h]
    assert cb.seen == logged and [s for s, _, _ in cb.seen] == [4, 8]


def test_hf_callback_changes_learning_rate_on_step_begin(tmp_path, tokenizer, make_tiny_model, sst2_small):
    cb = HalveLearningRate()
    t = Trainer(make_tiny_model(), _args(tmp_path, lr_scheduler_type="constant"), train_dataset=sst2_small[0],
                processing_class=tokenizer, callbacks=[cb])
    before = {n: p.detach().clone() for n, p in t.model.named_parameters()}
    t.train()
    assert cb.lrs[0] == pytest.approx(5e-4)  # the optimizer used the halved rate in that step
    moved = max((p.detach() - before[n]).abs().max().item() for n, p in t.model.named_parameters())
    # Adam moves each weight by about lr per step: halved rates keep it under 8 steps x 1e-3
    assert 0 < moved < 8 * 1e-3


class Recorder(TrainerCallback):
    def __init__(self):
        self.events = []

    def __getattribute__(self, name):
        if name.startswith("on_"):
            events = object.__getattribute__(self, "events")

            def record(args, state, control, **kwargs):
                events.append(name)
            return record
        return object.__getattribute__(self, name)


def test_event_order_matches_hf(tmp_path, tokenizer, make_tiny_model, sst2_small):
    rec = Recorder()
    t = Trainer(make_tiny_model(), _args(tmp_path, max_steps=2, gradient_accumulation_steps=2, logging_steps=1,
                                         eval_strategy="steps", eval_steps=2, save_strategy="steps", save_steps=2),
                train_dataset=sst2_small[0], eval_dataset=sst2_small[1].select(range(16)), processing_class=tokenizer,
                callbacks=[rec])
    t.train()
    step = ["on_step_begin", "on_substep_end", "on_pre_optimizer_step", "on_optimizer_step", "on_step_end", "on_log"]
    ev = rec.events
    assert ev[0] == "on_init_end" and ev[1] == "on_train_begin" and ev[2] == "on_epoch_begin"
    assert ev[3:3 + len(step)] == step
    second = ev[3 + len(step):]
    assert second[:len(step)] == step
    rest = second[len(step):]
    assert rest[:5] == ["on_prediction_step", "on_prediction_step", "on_log", "on_evaluate", "on_save"]
    assert rest[-3:] == ["on_epoch_end", "on_log", "on_train_end"]


class ControlFlags(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 1:
            control.should_evaluate = True
            control.should_save = True
            control.should_log = True
        if state.global_step == 3:
            control.should_epoch_stop = True


def test_control_flags_are_obeyed(tmp_path, tokenizer, make_tiny_model, sst2_small):
    t = Trainer(make_tiny_model(), _args(tmp_path, num_train_epochs=2, max_steps=-1, logging_steps=1000,
                                         save_strategy="no", eval_strategy="no"),
                train_dataset=sst2_small[0].select(range(96)), eval_dataset=sst2_small[1].select(range(16)),
                processing_class=tokenizer, callbacks=[ControlFlags()])
    t.train()
    steps_logged = [h["step"] for h in t.state.log_history if "loss" in h]
    assert steps_logged == [1]
    assert [h["step"] for h in t.state.log_history if "eval_loss" in h] == [1]
    assert (tmp_path / "checkpoint-1").is_dir()
    assert t.state.global_step == 3 + 6  # epoch 1 stopped after 3 of 6 steps, epoch 2 ran fully


def test_add_pop_remove_callback(tmp_path, tokenizer, make_tiny_model):
    t = Trainer(make_tiny_model(), _args(tmp_path), processing_class=tokenizer)
    names = lambda: [type(c).__name__ for c in t.callback_handler.callbacks]  # noqa: E731
    assert "PrinterCallback" in names()  # disable_tqdm=True
    cb = ReadEvalMetrics()
    t.add_callback(cb)
    assert t.pop_callback(ReadEvalMetrics) is cb
    t.add_callback(HalveLearningRate)
    t.remove_callback(HalveLearningRate)
    assert "HalveLearningRate" not in names() and "ReadEvalMetrics" not in names()
    popped = t.pop_callback(PrinterCallback)
    assert isinstance(popped, PrinterCallback)
    t.add_callback(ProgressCallback())
    assert "ProgressCallback" in names()


# ================================================================ callback states across a resume (as transformers)
def _es_args(tmp_path, **kw):
    # a learning rate of 0: every evaluation has the same loss, so the counter goes up by one each time
    return _args(tmp_path, max_steps=6, eval_strategy="steps", eval_steps=2, save_strategy="steps", save_steps=2,
                 metric_for_best_model="loss", learning_rate=0.0, optim="sgd", **kw)


def _es_trainer(tmp_path, tokenizer, make_tiny_model, sst2_small, callbacks, **kw):
    train, dev = sst2_small
    return Trainer(make_tiny_model(), _es_args(tmp_path, **kw), train_dataset=train.select(range(64)),
                   eval_dataset=dev.select(range(16)), processing_class=tokenizer, callbacks=callbacks)


@pytest.mark.slow
def test_transformers_early_stopping_state_is_saved_and_restored_only_when_asked(tmp_path, tokenizer,
                                                                               make_tiny_model, sst2_small, caplog):
    from transformers import EarlyStoppingCallback as HFEarlyStopping
    first = HFEarlyStopping(early_stopping_patience=100)
    _es_trainer(tmp_path, tokenizer, make_tiny_model, sst2_small, [first]).train()
    assert first.early_stopping_patience_counter == 2  # evaluations at steps 2, 4, 6
    saved = json.loads((tmp_path / "checkpoint-4" / "trainer_state.json").read_text())["stateful_callbacks"]
    assert saved["EarlyStoppingCallback"] == {
        "args": {"early_stopping_patience": 100, "early_stopping_threshold": 0.0},
        "attributes": {"early_stopping_patience_counter": 1}}
    assert set(saved["TrainerControl"]["args"]) == {"should_training_stop", "should_epoch_stop", "should_save",
                                                     "should_evaluate", "should_log"}

    # restore_callback_states_from_checkpoint=True: a new instance from the saved args and counter replaces it
    mine = HFEarlyStopping(early_stopping_patience=7)
    trainer = _es_trainer(tmp_path, tokenizer, make_tiny_model, sst2_small, [mine],
                          restore_callback_states_from_checkpoint=True)
    trainer.train(resume_from_checkpoint=str(tmp_path / "checkpoint-4"))
    restored = [cb for cb in trainer.callback_handler.callbacks if isinstance(cb, HFEarlyStopping)]
    assert len(restored) == 1 and restored[0] is not mine
    assert restored[0].early_stopping_patience == 100 and restored[0].early_stopping_patience_counter == 2
    assert mine.early_stopping_patience_counter == 0

    # the default (False): the callback as given, counting from 0
    mine = HFEarlyStopping(early_stopping_patience=7)
    trainer = _es_trainer(tmp_path, tokenizer, make_tiny_model, sst2_small, [mine])
    trainer.train(resume_from_checkpoint=str(tmp_path / "checkpoint-4"))
    assert mine in trainer.callback_handler.callbacks and mine.early_stopping_patience == 7
    assert mine.early_stopping_patience_counter == 1  # one evaluation (step 6) after the resume, no improvement

    # a saved stateful callback that this Trainer does not have: transformers' warning
    caplog.clear()
    trainer = _es_trainer(tmp_path, tokenizer, make_tiny_model, sst2_small, [],
                          restore_callback_states_from_checkpoint=True)
    with caplog.at_level(logging.WARNING, logger="trainwright"):
        trainer.train(resume_from_checkpoint=str(tmp_path / "checkpoint-4"))
    assert "Checkpoint included callbacks not included in current configuration. Ignoring. (EarlyStoppingCallback)" \
        in caplog.text


def test_several_stateful_callbacks_of_one_class(tmp_path, tokenizer, make_tiny_model, sst2_small, caplog):
    with caplog.at_level(logging.WARNING, logger="trainwright"):
        trainer = _es_trainer(tmp_path, tokenizer, make_tiny_model, sst2_small,
                              [EarlyStoppingCallback(100), EarlyStoppingCallback(50, 0.5)])
    assert "but there is already one" in caplog.text and "EarlyStoppingCallback" in caplog.text  # transformers'
    trainer.train()
    saved = json.loads((tmp_path / "checkpoint-6" / "trainer_state.json").read_text())["stateful_callbacks"]
    assert [s["args"] for s in saved["EarlyStoppingCallback"]] == [
        {"early_stopping_patience": 100, "early_stopping_threshold": 0.0},
        {"early_stopping_patience": 50, "early_stopping_threshold": 0.5}]

    trainer = _es_trainer(tmp_path, tokenizer, make_tiny_model, sst2_small,
                          [EarlyStoppingCallback(1), EarlyStoppingCallback(2)],
                          restore_callback_states_from_checkpoint=True)
    trainer.train(resume_from_checkpoint=str(tmp_path / "checkpoint-4"))
    restored = [cb for cb in trainer.callback_handler.callbacks if isinstance(cb, EarlyStoppingCallback)]
    assert [(cb.early_stopping_patience, cb.early_stopping_threshold) for cb in restored] == [(100, 0.0), (50, 0.5)]
    assert [cb.early_stopping_patience_counter for cb in restored] == [2, 2]


def test_the_progress_callback_comes_after_the_scripts_callbacks(tmp_path, tokenizer, make_tiny_model):
    """As transformers: the default and reporting callbacks, then the script's, then the progress bar (or printer),
    so a script's on_log runs before the log is shown, and callbacks[-2] is the script's last callback (transformers'
    own tests index it so). Before: the progress callback came before the script's callbacks."""
    rec = Recorder()
    for disable_tqdm, progress in ((True, PrinterCallback), (False, ProgressCallback)):
        t = Trainer(make_tiny_model(), _args(tmp_path, disable_tqdm=disable_tqdm), processing_class=tokenizer,
                    callbacks=[ReadEvalMetrics, rec])
        callbacks = t.callback_handler.callbacks
        assert type(callbacks[-1]) is progress and callbacks[-2] is rec
        assert type(callbacks[-3]).__name__ == "ReadEvalMetrics"
