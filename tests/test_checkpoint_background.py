"""Checkpoints written in the background (``save_in_background=True``, the default): training goes on while a
checkpoint is written, the checkpoint holds the state of its save point, resuming from it is bit-identical, and every
point that needs the files (an exception leaving train(), save_model, SIGTERM, a later save) waits for the write.

Writes are slowed down with TRAINWRIGHT_TEST_SLOW_CHECKPOINT_SECONDS (a sleep after each file) so that the write of
a checkpoint spans several training steps."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import torch

from conftest import write_script
from trainwright import Trainer, TrainerCallback, TrainingArguments
from trainwright.checkpoint import checkpoint_status, list_checkpoints, load_checkpoint

SLOW = "TRAINWRIGHT_TEST_SLOW_CHECKPOINT_SECONDS"


def _args(out, **kw):
    base = dict(output_dir=str(out), per_device_train_batch_size=8, learning_rate=2e-3, max_steps=8,
                save_strategy="steps", save_steps=4, logging_steps=1, report_to="none", disable_tqdm=True,
                write_report=False, seed=7, lr_scheduler_type="cosine", warmup_steps=2)
    base.update(kw)
    return TrainingArguments(**base)


class Watch(TrainerCallback):
    """The weights after every step, whether checkpoint-<save_step> existed when each step ended, and the steps at
    which ``on_save`` was called (with the step it reports)."""

    def __init__(self, out, save_step):
        self.out, self.save_step = out, save_step
        self.weights, self.published, self.saves = {}, {}, []
        self.last_step = 0

    def on_step_end(self, args, state, control, model=None, **kw):
        self.last_step = state.global_step
        self.weights[state.global_step] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.published[state.global_step] = (self.out / f"checkpoint-{self.save_step}").exists()

    def on_save(self, args, state, control, **kw):
        self.saves.append((self.last_step, state.global_step))


def _temp_dirs(out):
    return [n for n in os.listdir(out) if n.startswith(".")]


def test_training_goes_on_while_a_checkpoint_is_written(tmp_path, tokenizer, make_tiny_model, sst2_small,
                                                        monkeypatch):
    monkeypatch.setenv(SLOW, "0.1")  # ~1.5 s for the whole checkpoint
    out = tmp_path / "out"
    watch = Watch(out, 4)
    trainer = Trainer(make_tiny_model(dropout=0.1), _args(out), train_dataset=sst2_small[0].select(range(64)),
                      processing_class=tokenizer, callbacks=[watch])
    trainer.train()
    assert watch.published[5] is False  # step 5 ran while checkpoint-4 was being written
    step_seen, step_saved = watch.saves[0]
    assert step_saved == 4 and step_seen > 4  # on_save: once complete, with the state as saved
    assert [s for _, s in watch.saves] == [4, 8]
    assert [os.path.basename(p) for p in list_checkpoints(out)] == ["checkpoint-4", "checkpoint-8"]
    assert not _temp_dirs(out)
    model = make_tiny_model(dropout=0.1)
    loaded = load_checkpoint(out / "checkpoint-4", model=model)  # every sha256 verified
    assert loaded["trainer_state"]["global_step"] == 4
    for name, value in model.state_dict().items():  # the weights of step 4, not of a later step
        assert torch.equal(value, watch.weights[4][name]), name


@pytest.mark.slow
def test_resume_from_a_background_written_checkpoint_is_bit_identical(tmp_path, tokenizer, make_tiny_model,
                                                                      sst2_small, monkeypatch):
    monkeypatch.setenv(SLOW, "0.05")
    data = sst2_small[0].select(range(64))
    first = Trainer(make_tiny_model(dropout=0.1), _args(tmp_path / "a"), train_dataset=data,
                    processing_class=tokenizer)
    first.train()
    monkeypatch.delenv(SLOW)
    resumed = Trainer(make_tiny_model(dropout=0.1), _args(tmp_path / "b"), train_dataset=data,
                      processing_class=tokenizer)
    resumed.train(resume_from_checkpoint=str(tmp_path / "a" / "checkpoint-4"))
    for (name, a), b in zip(first.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    loss = [h["loss"] for h in first.state.log_history if "loss" in h]
    assert [h["loss"] for h in resumed.state.log_history if "loss" in h][-4:] == loss[-4:]


def test_a_failed_background_write_is_reported_later_and_training_goes_on(tmp_path, tokenizer, make_tiny_model,
                                                                          sst2_small, monkeypatch):
    """The write of checkpoint-4 fails (EIO) while steps 5, 6, ... run: the failure is logged when the Trainer
    learns of it (after step 4), on_save is not called for it, and the next
    save point writes checkpoint-8."""
    import logging
    monkeypatch.setenv(SLOW, "0.05")
    monkeypatch.delenv("TRAINWRIGHT_TEST_FAIL_CHECKPOINT_WRITE", raising=False)
    out = tmp_path / "out"
    reported = []

    class FailAt4(TrainerCallback):  # the writer reads the variable at the save point
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 4:
                os.environ["TRAINWRIGHT_TEST_FAIL_CHECKPOINT_WRITE"] = "EIO"
            else:
                os.environ.pop("TRAINWRIGHT_TEST_FAIL_CHECKPOINT_WRITE", None)

    class Steps(logging.Handler):
        def emit(self, record):
            if record.levelno >= logging.ERROR:
                reported.append((trainer.state.global_step, record.getMessage()))

    watch = Watch(out, 4)
    trainer = Trainer(make_tiny_model(), _args(out), train_dataset=sst2_small[0].select(range(64)),
                      processing_class=tokenizer, callbacks=[FailAt4(), watch])
    handler = Steps()
    logging.getLogger("trainwright").addHandler(handler)
    try:
        trainer.train()
    finally:
        logging.getLogger("trainwright").removeHandler(handler)
        os.environ.pop("TRAINWRIGHT_TEST_FAIL_CHECKPOINT_WRITE", None)
    assert len(reported) == 1, reported
    step, message = reported[0]
    assert step > 4 and "checkpoint-4" in message and "Input/output error" in message
    assert [s for _, s in watch.saves] == [8]  # no on_save for the failed checkpoint
    assert [os.path.basename(p) for p in list_checkpoints(out)] == ["checkpoint-8"]
    assert checkpoint_status(out / "checkpoint-8")[0] and not _temp_dirs(out)


class Fail(RuntimeError):
    pass


@pytest.mark.slow
def test_save_model_and_an_exception_wait_for_the_write(tmp_path, tokenizer, make_tiny_model, sst2_small,
                                                        monkeypatch):
    """At step 5 (checkpoint-4 still being written) a callback calls save_model, then raises: save_model waits for
    the checkpoint first, and train() leaves only once the checkpoint is complete."""
    monkeypatch.setenv(SLOW, "0.1")
    out = tmp_path / "out"
    seen = {}

    class SaveThenFail(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 5:
                seen["before"] = (out / "checkpoint-4").exists()
                trainer.save_model(str(tmp_path / "model"))
                seen["after"] = checkpoint_status(out / "checkpoint-4")[0]
            if state.global_step == 6:
                trainer.control.should_save = True  # a save in flight when the exception comes
            if state.global_step == 7:
                raise Fail("a callback failed")

    trainer = Trainer(make_tiny_model(), _args(out), train_dataset=sst2_small[0].select(range(64)),
                      processing_class=tokenizer, callbacks=[SaveThenFail()])
    with pytest.raises(Fail):
        trainer.train()
    assert seen == {"before": False, "after": True}
    assert (tmp_path / "model" / "model.safetensors").exists()
    assert [os.path.basename(p) for p in list_checkpoints(out)] == ["checkpoint-4", "checkpoint-6"]
    assert all(checkpoint_status(p)[0] for p in list_checkpoints(out))
    assert not _temp_dirs(out)


SIGTERM_SCRIPT = """
    data = sst2_rows(64)
    class Signal(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 4:  # checkpoint-3 is still being written (slow writes)
                os.kill(os.getpid(), signal.SIGTERM)
    args = TrainingArguments({out!r}, max_steps=1000, per_device_train_batch_size=8, save_strategy="steps",
                             save_steps=3, disable_tqdm=True, write_report=False, report_to="none")
    Trainer(BertForSequenceClassification(tiny_bert_config(tok)), args, train_dataset=data, processing_class=tok,
            callbacks=[Signal()]).train()
"""


@pytest.mark.slow
def test_sigterm_waits_for_the_write_in_flight_and_its_own(tmp_path):
    script = write_script(tmp_path / "run.py", SIGTERM_SCRIPT, out=str(tmp_path / "out"))
    env = dict(os.environ, **{SLOW: "0.1"})
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 128 + signal.SIGTERM, done.stderr[-2000:]
    out = tmp_path / "out"
    assert [os.path.basename(p) for p in list_checkpoints(out)] == ["checkpoint-3", "checkpoint-4"]
    assert all(checkpoint_status(p)[0] for p in list_checkpoints(out))
    assert not _temp_dirs(out)
