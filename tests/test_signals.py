"""train()'s SIGTERM/SIGINT handlers last exactly as long as train(): restored after an exception inside it, the
stop flag cleared, so a later SIGTERM kills the process as usual and a retried train() runs all its steps."""
import os
import signal
import subprocess
import sys

import pytest

from conftest import write_script
from trainwright import Trainer, TrainerCallback, TrainingArguments


class Boom(RuntimeError):
    pass


class RaiseAt(TrainerCallback):
    """Raises at the end of step ``step`` (optionally after sending the process ``send`` first), once."""

    def __init__(self, step, send=None):
        self.step, self.send, self.fired = step, send, False

    def on_step_end(self, args, state, control, **kw):
        if state.global_step == self.step and not self.fired:
            self.fired = True
            if self.send is not None:
                os.kill(os.getpid(), self.send)  # the trainer's handler only sets its stop flag
            raise Boom("a callback failed")


def _trainer(tmp_path, tokenizer, make_tiny_model, sst2_small, callback, max_steps=4):
    args = TrainingArguments(str(tmp_path), max_steps=max_steps, per_device_train_batch_size=8, save_strategy="no",
                             report_to="none", disable_tqdm=True, write_report=False, logging_steps=1)
    return Trainer(make_tiny_model(), args, train_dataset=sst2_small[0].select(range(64)), processing_class=tokenizer,
                   callbacks=[callback])


def test_handlers_restored_after_an_exception_in_train(tmp_path, tokenizer, make_tiny_model, sst2_small):
    def mine(signum, frame):
        pass
    before = signal.signal(signal.SIGTERM, mine)
    before_int = signal.getsignal(signal.SIGINT)
    try:
        trainer = _trainer(tmp_path, tokenizer, make_tiny_model, sst2_small, RaiseAt(2))
        with pytest.raises(Boom):
            trainer.train()
        assert signal.getsignal(signal.SIGTERM) is mine
        assert signal.getsignal(signal.SIGINT) is before_int
    finally:
        signal.signal(signal.SIGTERM, before)


def test_retried_train_runs_all_its_steps(tmp_path, tokenizer, make_tiny_model, sst2_small):
    """A SIGINT received, then an exception before the loop acted on it: the flag does not survive train()."""
    callback = RaiseAt(1, send=signal.SIGINT)
    trainer = _trainer(tmp_path, tokenizer, make_tiny_model, sst2_small, callback)
    with pytest.raises(Boom):
        trainer.train()
    assert trainer.stop_signal.received is None
    out = trainer.train()  # would stop with SystemExit(130) after one step if the flag survived
    assert out.global_step == 4
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


SCRIPT = """
    data = sst2_rows(32)
    class Fail(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            raise RuntimeError("a callback failed")
    args = TrainingArguments({out!r}, max_steps=5, per_device_train_batch_size=8, save_strategy="no",
                             report_to="none", disable_tqdm=True, write_report=False)
    try:
        Trainer(BertForSequenceClassification(tiny_bert_config(tok)), args, train_dataset=data, processing_class=tok,
                callbacks=[Fail()]).train()
    except RuntimeError:
        print("CAUGHT", flush=True)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(30)
    print("STILL ALIVE", flush=True)
"""


@pytest.mark.slow
def test_sigterm_after_a_failed_train_kills_the_process(tmp_path):
    script = write_script(tmp_path / "run.py", SCRIPT, out=str(tmp_path / "out"))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert "CAUGHT" in proc.stdout, proc.stderr[-2000:]
    assert "STILL ALIVE" not in proc.stdout
    assert proc.returncode == -signal.SIGTERM, (proc.returncode, proc.stderr[-2000:])
