"""Exact resume: a run stopped and resumed ends with bit-identical weights and optimizer state,
and an unbroken log history; the best model; early stopping; signals; save strategies."""
import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from conftest import StopAt, accuracy_metrics, write_script
from trainwright import CheckpointError, EarlyStoppingCallback, Trainer, TrainingArguments


def _args(out, **kw):
    base = dict(output_dir=str(out), per_device_train_batch_size=8, learning_rate=2e-3, max_steps=12,
                save_strategy="steps", save_steps=4, logging_steps=2, report_to="none", disable_tqdm=True,
                write_report=False, lr_scheduler_type="cosine", warmup_steps=3, weight_decay=0.01, seed=7)
    base.update(kw)
    return TrainingArguments(**base)


def _run(out, data, tokenizer, make_model, resume=None, callbacks=None, **kw):
    trainer = Trainer(make_model(dropout=0.1), _args(out, **kw), train_dataset=data, processing_class=tokenizer,
                      callbacks=callbacks)
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def _assert_identical(a: Trainer, b: Trainer):
    for (n, p), (_, q) in zip(a.model.named_parameters(), b.model.named_parameters()):
        assert torch.equal(p, q), f"parameter {n} differs by {(p - q).abs().max().item()}"
    sa, sb = a.optimizer.state_dict()["state"], b.optimizer.state_dict()["state"]
    assert sa.keys() == sb.keys()
    for k in sa:
        for name in sa[k]:
            assert torch.equal(torch.as_tensor(sa[k][name]), torch.as_tensor(sb[k][name])), (k, name)
    assert a.lr_scheduler.state_dict()["last_epoch"] == b.lr_scheduler.state_dict()["last_epoch"]


def _train_logs(trainer):
    return [(h["step"], h["loss"]) for h in trainer.state.log_history if "loss" in h]


@pytest.mark.parametrize("stop_at,accum", [(5, 1), pytest.param(8, 1, marks=pytest.mark.slow),
                                           pytest.param(4, 2, marks=pytest.mark.slow)],
                         ids=["mid-epoch", "epoch-boundary", "accum2"])
def test_stopped_and_resumed_run_is_bit_identical(tmp_path, tokenizer, make_tiny_model, sst2_small, stop_at, accum):
    data = sst2_small[0].select(range(64))  # 8 batches of 8: an epoch is 8 steps (4 with accumulation 2)
    full = _run(tmp_path / "full", data, tokenizer, make_tiny_model, gradient_accumulation_steps=accum)
    _run(tmp_path / "cut", data, tokenizer, make_tiny_model, callbacks=[StopAt(stop_at)],
         gradient_accumulation_steps=accum)
    assert os.path.isdir(tmp_path / "cut" / f"checkpoint-{stop_at}")
    resumed = _run(tmp_path / "cut", data, tokenizer, make_tiny_model, resume=True, gradient_accumulation_steps=accum)
    assert resumed.state.global_step == 12
    _assert_identical(full, resumed)
    assert _train_logs(resumed) == _train_logs(full)  # no gap, no duplicate, same values
    steps = [s for s, _ in _train_logs(resumed)]
    assert steps == sorted(set(steps))


def test_resume_does_not_replay_seen_batches(tmp_path, tokenizer, make_tiny_model, sst2_small):
    data = sst2_small[0].select(range(64))
    _run(tmp_path, data, tokenizer, make_tiny_model, callbacks=[StopAt(6)])
    fetched = []
    trainer = Trainer(make_tiny_model(dropout=0.1), _args(tmp_path), train_dataset=data, processing_class=tokenizer)
    original = trainer.get_train_dataloader

    def spying_loader():
        dl = original()
        dataset = dl.dataset
        real = dataset.__getitems__

        def getitems(indices):
            fetched.append(list(indices))
            return real(indices)
        dataset.__getitems__ = getitems
        return dl
    trainer.get_train_dataloader = spying_loader
    out = trainer.train(resume_from_checkpoint=True)
    assert len(fetched) == 12 - 6  # only the batches still to train on were loaded
    # speed metrics count this call's 6 steps and their rows, not the run's first 6
    m = out.metrics
    assert m["train_steps_per_second"] * m["train_runtime"] == pytest.approx(6, rel=0.01)
    rows = sum(len(b) for b in fetched)
    assert m["train_samples_per_second"] * m["train_runtime"] == pytest.approx(rows, rel=0.01)


def test_resume_with_different_batch_size_is_reported(tmp_path, tokenizer, make_tiny_model, sst2_small):
    data = sst2_small[0].select(range(64))
    _run(tmp_path, data, tokenizer, make_tiny_model, callbacks=[StopAt(4)])
    with pytest.raises(CheckpointError, match="per_device_train_batch_size"):
        _run(tmp_path, data, tokenizer, make_tiny_model, resume=True, per_device_train_batch_size=4)


def test_resume_true_without_checkpoint_fails_clearly(tmp_path, tokenizer, make_tiny_model, sst2_small):
    with pytest.raises(CheckpointError, match="no complete"):
        _run(tmp_path, sst2_small[0], tokenizer, make_tiny_model, resume=True)


def test_incomplete_checkpoint_is_skipped_for_resume(tmp_path, tokenizer, make_tiny_model, sst2_small):
    data = sst2_small[0].select(range(64))
    _run(tmp_path, data, tokenizer, make_tiny_model, callbacks=[StopAt(8)])
    os.remove(tmp_path / "checkpoint-8" / "trainwright_checkpoint.json")  # as if killed mid-write
    with pytest.warns(UserWarning, match="checkpoint-8"):
        trainer = _run(tmp_path, data, tokenizer, make_tiny_model, resume=True)
    first_log = next(h for h in trainer.state.log_history if "loss" in h and h["step"] > 4)
    assert first_log["step"] == 6  # continued from checkpoint-4


def test_checkpoint_contents_are_pickle_free(tmp_path, tokenizer, make_tiny_model, sst2_small):
    data = sst2_small[0].select(range(32))
    _run(tmp_path, data, tokenizer, make_tiny_model, max_steps=4)
    ckpt = tmp_path / "checkpoint-4"
    names = set(os.listdir(ckpt))
    assert {"model.safetensors", "config.json", "optimizer.safetensors", "scheduler.json", "rng_state.json",
            "trainer_state.json", "training_args.json", "tokenizer.json"} <= names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth", ".pkl"))]
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert state["global_step"] == 4 and "log_history" in state and "best_metric" in state
    args = json.loads((ckpt / "training_args.json").read_text())
    assert args["learning_rate"] == 2e-3




def _best_run(tmp_path, tokenizer, make_tiny_model, sst2_small, **kw):
    train, dev = sst2_small
    args = _args(tmp_path, eval_strategy="steps", eval_steps=4, **kw)
    trainer = Trainer(make_tiny_model(dropout=0.1), args, train_dataset=train.select(range(64)),
                      eval_dataset=dev.select(range(48)), processing_class=tokenizer, compute_metrics=accuracy_metrics)
    trainer.train()
    return trainer


def test_load_best_model_at_end_restores_best_weights(tmp_path, tokenizer, make_tiny_model, sst2_small):
    trainer = _best_run(tmp_path, tokenizer, make_tiny_model, sst2_small, load_best_model_at_end=True,
                        metric_for_best_model="accuracy", save_total_limit=1, max_steps=16, learning_rate=5e-3)
    evals = [h for h in trainer.state.log_history if "eval_accuracy" in h]
    best = max(evals, key=lambda h: (h["eval_accuracy"], -h["step"]))
    assert trainer.state.best_metric == best["eval_accuracy"]
    assert trainer.state.best_model_checkpoint.endswith(f"checkpoint-{best['step']}")
    kept = sorted(os.listdir(tmp_path))
    assert f"checkpoint-{best['step']}" in kept and "checkpoint-16" in kept  # best and newest survive the limit
    assert len([k for k in kept if k.startswith("checkpoint-")]) <= 2
    assert trainer.evaluate()["eval_accuracy"] == pytest.approx(best["eval_accuracy"])


def test_metric_for_best_model_not_produced_lists_the_metrics(tmp_path, tokenizer, make_tiny_model, sst2_small):
    with pytest.raises(Exception, match="accuracy") as err:
        _best_run(tmp_path, tokenizer, make_tiny_model, sst2_small, metric_for_best_model="f1",
                  load_best_model_at_end=True)
    assert "f1" in str(err.value)


def test_save_strategy_best_saves_only_improvements(tmp_path, tokenizer, make_tiny_model, sst2_small):
    trainer = _best_run(tmp_path, tokenizer, make_tiny_model, sst2_small, save_strategy="best",
                        metric_for_best_model="loss", max_steps=16)
    saved = sorted(int(d.split("-")[1]) for d in os.listdir(tmp_path) if d.startswith("checkpoint-"))
    losses = {h["step"]: h["eval_loss"] for h in trainer.state.log_history if "eval_loss" in h}
    running, improving = float("inf"), []
    for step in sorted(losses):
        if losses[step] < running:
            running = losses[step]
            improving.append(step)
    assert saved == improving


def test_early_stopping_counter_survives_resume(tmp_path, tokenizer, make_tiny_model, sst2_small):
    train, dev = sst2_small
    cb = EarlyStoppingCallback(early_stopping_patience=100)
    args = _args(tmp_path, eval_strategy="steps", eval_steps=2, save_steps=2, metric_for_best_model="loss",
                 learning_rate=0.5, optim="sgd", max_steps=6)
    Trainer(make_tiny_model(), args, train_dataset=train.select(range(64)), eval_dataset=dev.select(range(16)),
            processing_class=tokenizer, callbacks=[cb]).train()
    saved = json.loads((tmp_path / "checkpoint-6" / "trainer_state.json").read_text())
    counter = saved["stateful_callbacks"]["EarlyStoppingCallback"]["attributes"]["early_stopping_patience_counter"]
    assert counter == cb.early_stopping_patience_counter
    # as in transformers, restored with restore_callback_states_from_checkpoint=True (a new instance replaces cb2)
    cb2 = EarlyStoppingCallback(early_stopping_patience=100)
    args2 = _args(tmp_path, eval_strategy="steps", eval_steps=2, save_steps=2, metric_for_best_model="loss",
                  learning_rate=0.5, optim="sgd", max_steps=6, restore_callback_states_from_checkpoint=True)
    t2 = Trainer(make_tiny_model(), args2, train_dataset=train.select(range(64)), eval_dataset=dev.select(range(16)),
                 processing_class=tokenizer, callbacks=[cb2])
    t2.train(resume_from_checkpoint=str(tmp_path / "checkpoint-4"))
    restored = next(c for c in t2.callback_handler.callbacks if isinstance(c, EarlyStoppingCallback))
    assert restored.early_stopping_patience_counter == counter  # counting on as if the run had never stopped


def test_early_stopping_stops(tmp_path, tokenizer, make_tiny_model, sst2_small):
    train, dev = sst2_small
    args = _args(tmp_path, eval_strategy="steps", eval_steps=1, save_strategy="no", metric_for_best_model="accuracy",
                 learning_rate=0.0, max_steps=50)
    t = Trainer(make_tiny_model(), args, train_dataset=train, eval_dataset=dev.select(range(16)),
                processing_class=tokenizer, compute_metrics=accuracy_metrics,
                callbacks=[EarlyStoppingCallback(early_stopping_patience=2)])
    t.train()
    assert t.state.global_step == 3  # lr 0: nothing improves after the first evaluation


def test_final_model_loads_with_transformers(tmp_path, tokenizer, make_tiny_model, sst2_small):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    trainer = _run(tmp_path, sst2_small[0].select(range(32)), tokenizer, make_tiny_model, max_steps=2,
                   save_strategy="no")
    trainer.save_model(str(tmp_path / "final"))
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "final").eval()
    tok = AutoTokenizer.from_pretrained(tmp_path / "final")
    batch = tok(["a fine film"], return_tensors="pt")
    trainer.model.eval()
    with torch.no_grad():
        assert torch.allclose(model(**batch).logits, trainer.model(**batch).logits, atol=1e-6)


SIGNAL_SCRIPT = """
    data = sst2_rows(64)
    class Slow(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 3:
                print("READY", flush=True)
            time.sleep(0.2)
    args = TrainingArguments({out!r}, max_steps=1000, per_device_train_batch_size=8, save_strategy="no",
                             disable_tqdm=True, write_report=False)
    Trainer(BertForSequenceClassification(tiny_bert_config(tok)), args, train_dataset=data, processing_class=tok,
            callbacks=[Slow()]).train()
"""


@pytest.mark.slow
def test_sigterm_writes_a_checkpoint_and_prints_the_resume_command(tmp_path):
    script = write_script(tmp_path / "run.py", SIGNAL_SCRIPT, out=str(tmp_path / "out"))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if "READY" in line:
            break
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert "resume_from_checkpoint=True" in err
    ckpts = [d for d in os.listdir(tmp_path / "out") if d.startswith("checkpoint-")]
    assert len(ckpts) == 1
    from trainwright.checkpoint import checkpoint_status
    assert checkpoint_status(str(tmp_path / "out" / ckpts[0]))[0]


def test_checkpoints_record_the_data_position_and_resume_starts_there(tmp_path, tokenizer, make_tiny_model,
                                                                      sst2_small, caplog):
    """The train sampler is a checkpointed component (trainwright_states/sampler.json): the epoch and the batches
    of it done (micro-batches, per rank) at the save point; a resumed run starts at that position."""
    from trainwright.train_plan import TrainPlan
    data = sst2_small[0].select(range(48))  # 6 batches of 8; with accumulation 2, an epoch is 3 steps
    _run(tmp_path, data, tokenizer, make_tiny_model, gradient_accumulation_steps=2, max_steps=8, save_steps=2)

    def position(step):
        with open(tmp_path / f"checkpoint-{step}" / "trainwright_states" / "sampler.json") as f:
            state = json.load(f)
        state = state.get("state_dict", state)
        return state["epoch"], state["batches_done"], state["batches_in_epoch"]
    assert [position(s) for s in (2, 4, 6, 8)] == [(0, 4, 6), (1, 2, 6), (1, 6, 6), (2, 4, 6)]
    # the saved position is where the resumed run starts (checkpoint-6: epoch 1 complete, so epoch 2 from its start)
    resumed = _run(tmp_path / "r", data, tokenizer, make_tiny_model, resume=str(tmp_path / "checkpoint-6"),
                   gradient_accumulation_steps=2, max_steps=8, save_steps=2)
    assert position(8) == (2, 4, 6) and resumed.state.global_step == 8
    # a saved position that disagrees with the step count (not written by this version) still wins, with a warning
    trainer = Trainer(make_tiny_model(), _args(tmp_path / "p", gradient_accumulation_steps=2), train_dataset=data,
                      processing_class=tokenizer)
    plan = TrainPlan(trainer, trainer.get_train_dataloader())
    plan.sampler.load_state_dict({"epoch": 1, "batches_done": 4})
    with caplog.at_level("WARNING", logger="trainwright"):
        assert plan.start(global_step=1) == (1, 2)
    assert "data position (epoch 1, 4 of 6 batches done)" in caplog.text
    assert plan.start(global_step=1) == (0, 1)  # read once: without a saved position the step count decides
