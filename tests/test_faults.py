"""Faults lose nothing: non-finite steps are skipped (and a run of them stops training with a clear error), a
full or failing disk does not break a run or an earlier checkpoint, SIGKILL at any moment and a restart give
the same weights bit for bit, and memory does not grow over many steps and evaluations."""
from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
from pathlib import Path

import pytest
import torch

from trainwright import CheckpointError, ConfigError, NonFiniteLossError, Trainer, TrainerCallback, TrainingArguments
from trainwright.checkpoint import checkpoint_status, list_checkpoints, load_checkpoint

ROOT = Path(__file__).resolve().parent.parent


def _bench(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _data(tokenizer, n=32):
    from datasets import Dataset
    words = ["good movie", "bad film", "a fine and pleasant story", "terrible", "ok", "great acting here",
             "boring plot", "loved it"]
    texts = [words[i % 8] + " " + words[(i * 3) % 8] for i in range(n)]
    return Dataset.from_dict({**tokenizer(texts), "label": [i % 2 for i in range(n)]})


def _args(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, learning_rate=1e-3,
                save_strategy="no", report_to="none", disable_tqdm=True, write_report=False, logging_steps=1,
                max_steps=10)
    base.update(kw)
    return TrainingArguments(**base)


# =============================================================================================== non-finite loss
class NaNInjector(TrainerCallback):
    """Makes the training loss NaN at the chosen (1-based) optimizer steps through a forward hook on the model,
    and records the weights after every step."""

    def __init__(self, model, bad_steps):
        self.bad_steps = set(bad_steps)
        self.current = 0
        self.weights = {}
        model.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output):
        if module.training and self.current in self.bad_steps:
            output["loss"] = output["loss"] * float("nan")
        return output

    def on_step_begin(self, args, state, control, **kw):
        self.current = state.global_step + 1
        return control

    def on_step_end(self, args, state, control, model=None, **kw):
        self.weights[state.global_step] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return control


@pytest.mark.parametrize("optim", ["adamw_torch_fused", "adamw_torch", "sgd"])
def test_isolated_nonfinite_steps_are_skipped(tmp_path, tokenizer, make_tiny_model, optim):
    model = make_tiny_model(dropout=0.0)
    spy = NaNInjector(model, bad_steps={3, 4, 7})
    trainer = Trainer(model, _args(tmp_path, optim=optim, max_consecutive_nonfinite_steps=3, logging_steps=5),
                      train_dataset=_data(tokenizer), processing_class=tokenizer, callbacks=[spy])
    out = trainer.train()
    assert out.global_step == 10
    for step in (3, 4, 7):  # those updates were skipped: the weights did not move
        for name, value in spy.weights[step].items():
            assert torch.equal(value, spy.weights[step - 1][name]), (step, name)
    for step in (2, 5, 8):  # the others moved
        assert any(not torch.equal(v, spy.weights[step - 1][k]) for k, v in spy.weights[step].items())
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert trainer.state.skipped_nonfinite_steps == 3
    assert out.metrics["train_skipped_nonfinite_steps"] == 3
    if optim != "sgd":  # Adam's step counters count applied updates only
        steps = {int(s["step"]) for s in trainer.optimizer.state.values()}
        assert steps == {7}, steps


def test_consecutive_nonfinite_steps_stop_training(tmp_path, tokenizer, make_tiny_model):
    model = make_tiny_model()
    spy = NaNInjector(model, bad_steps=range(5, 100))
    trainer = Trainer(model, _args(tmp_path, max_steps=40, max_consecutive_nonfinite_steps=4, save_strategy="steps",
                                   save_steps=3), train_dataset=_data(tokenizer), processing_class=tokenizer,
                      callbacks=[spy])
    with pytest.raises(NonFiniteLossError) as info:
        trainer.train()
    message = str(info.value)
    assert trainer.state.global_step == 8  # steps 5, 6, 7, 8 were bad
    for phrase in ("NaN/inf for 4 consecutive steps", "up to step 8", "training stopped",
                   f"Last good checkpoint: {tmp_path / 'out' / 'checkpoint-6'}", "Lower learning_rate",
                   "max_consecutive_nonfinite_steps=4"):
        assert phrase in message, (phrase, message)
    for name, value in spy.weights[8].items():  # nothing of the bad steps reached the weights
        assert torch.equal(value, spy.weights[4][name])
    assert checkpoint_status(tmp_path / "out" / "checkpoint-6")[0]


def test_a_run_of_nonfinite_steps_between_logging_steps_is_caught(tmp_path, tokenizer, make_tiny_model):
    """A streak of max_consecutive_nonfinite_steps bad steps that ended before the next logging step still stops
    training there (the check runs at logging steps, so the loop never waits for the device)."""
    model = make_tiny_model()
    spy = NaNInjector(model, bad_steps={2, 3, 4})
    trainer = Trainer(model, _args(tmp_path, max_steps=20, logging_steps=8, max_consecutive_nonfinite_steps=3),
                      train_dataset=_data(tokenizer), processing_class=tokenizer, callbacks=[spy])
    with pytest.raises(NonFiniteLossError, match="for 3 consecutive steps"):
        trainer.train()
    assert trainer.state.global_step == 8


# =============================================================================================== disk full / EIO
class FailSaves(TrainerCallback):
    """Sets TRAINWRIGHT_TEST_FAIL_CHECKPOINT_WRITE for the saves at the chosen steps only (the checkpoint writer
    reads it when a save starts)."""

    def __init__(self, failures: dict[int, str]):
        self.failures = failures

    def on_step_end(self, args, state, control, **kw):
        code = self.failures.get(state.global_step)
        if code:
            os.environ["TRAINWRIGHT_TEST_FAIL_CHECKPOINT_WRITE"] = code
        else:
            os.environ.pop("TRAINWRIGHT_TEST_FAIL_CHECKPOINT_WRITE", None)
        return control

    def on_train_end(self, args, state, control, **kw):
        os.environ.pop("TRAINWRIGHT_TEST_FAIL_CHECKPOINT_WRITE", None)
        return control


def _read_all(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_failed_saves_continue_and_keep_the_previous_checkpoint(tmp_path, tokenizer, make_tiny_model, caplog,
                                                                monkeypatch):
    monkeypatch.delenv("TRAINWRIGHT_TEST_FAIL_CHECKPOINT_WRITE", raising=False)
    out = tmp_path / "out"
    snapshot = {}

    class Snapshot(TrainerCallback):
        def on_save(self, args, state, control, **kw):
            if state.global_step == 3:  # checkpoint-3 as it was before the failures (on_save: once it is complete)
                snapshot.update(_read_all(out / "checkpoint-3"))
            return control

    trainer = Trainer(make_tiny_model(), _args(tmp_path, max_steps=12, save_strategy="steps", save_steps=3,
                                               on_save_error="continue"),
                      train_dataset=_data(tokenizer), processing_class=tokenizer,
                      callbacks=[FailSaves({6: "ENOSPC", 9: "EIO"}), Snapshot()])
    with caplog.at_level(logging.ERROR, logger="trainwright"):
        result = trainer.train()
    assert result.global_step == 12  # training went on
    names = [os.path.basename(p) for p in list_checkpoints(out)]
    assert names == ["checkpoint-3", "checkpoint-12"], names  # 6 and 9 failed, 12 (the next save point) worked
    assert not [n for n in os.listdir(out) if n.startswith(".")], os.listdir(out)  # no temp dir left behind
    assert _read_all(out / "checkpoint-3") == snapshot  # untouched, byte for byte
    for name in names:
        load_checkpoint(out / name, model=make_tiny_model())  # complete and verified
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("checkpoint-6" in m and "No space left on device" in m and "free disk space" in m
               and "earlier checkpoint is intact" in m for m in errors), errors
    assert any("checkpoint-9" in m and "Input/output error" in m for m in errors), errors


@pytest.mark.parametrize("code,text,background", [("ENOSPC", "No space left on device", False),
                                                   ("EIO", "Input/output error", True)])
def test_failed_save_with_stop_raises(tmp_path, tokenizer, make_tiny_model, monkeypatch, code, text, background):
    """A synchronous save raises at its step; a background one at the next wait point (at the latest the next save
    point, before that save starts): either way nothing after checkpoint-3 is kept, and the run resumes from it."""
    monkeypatch.delenv("TRAINWRIGHT_TEST_FAIL_CHECKPOINT_WRITE", raising=False)
    out = tmp_path / "out"
    trainer = Trainer(make_tiny_model(), _args(tmp_path, max_steps=12, save_strategy="steps", save_steps=3,
                                               on_save_error="stop", save_in_background=background),
                      train_dataset=_data(tokenizer), processing_class=tokenizer, callbacks=[FailSaves({6: code})])
    with pytest.raises(CheckpointError) as info:
        trainer.train()
    os.environ.pop("TRAINWRIGHT_TEST_FAIL_CHECKPOINT_WRITE", None)
    assert trainer.state.global_step == 6 if not background else 6 <= trainer.state.global_step <= 9
    assert "checkpoint-6" in str(info.value) and text in str(info.value)
    assert "any earlier checkpoint is intact" in str(info.value)
    assert [os.path.basename(p) for p in list_checkpoints(out)] == ["checkpoint-3"]
    load_checkpoint(out / "checkpoint-3", model=make_tiny_model())
    # and the run resumes from it
    resumed = Trainer(make_tiny_model(), _args(tmp_path, max_steps=12, save_strategy="steps", save_steps=3),
                      train_dataset=_data(tokenizer), processing_class=tokenizer)
    assert resumed.train(resume_from_checkpoint=True).global_step == 12


# =============================================================================================== best model
def test_best_model_bookkeeping_changes_only_with_a_complete_checkpoint(tmp_path, tokenizer, make_tiny_model,
                                                                         monkeypatch):
    """The save of a better checkpoint (step 6) fails: best_metric, best_global_step and best_model_checkpoint keep
    naming checkpoint-4, and load_best_model_at_end loads checkpoint-4, whose score best_metric names."""
    monkeypatch.delenv("TRAINWRIGHT_TEST_FAIL_CHECKPOINT_WRITE", raising=False)
    scores = {2: 0.1, 4: 0.5, 6: 0.9, 8: 0.2}
    holder = {}

    def metrics(_):  # scripted by step: step 6 is the best evaluation, but its checkpoint never gets written
        return {"score": scores.get(holder["trainer"].state.global_step, 0.0)}

    weights = {}

    class Weights(TrainerCallback):  # the weights at each step (on_save comes once the write is complete, later)
        def on_step_end(self, args, state, control, model=None, **kw):
            weights[state.global_step] = {k: v.detach().clone() for k, v in model.state_dict().items()}

    out = tmp_path / "out"
    trainer = Trainer(make_tiny_model(), _args(tmp_path, max_steps=8, eval_strategy="steps", eval_steps=2,
                                               save_strategy="steps", save_steps=2, load_best_model_at_end=True,
                                               metric_for_best_model="score"),
                      train_dataset=_data(tokenizer), eval_dataset=_data(tokenizer, 8), processing_class=tokenizer,
                      compute_metrics=metrics, callbacks=[FailSaves({6: "ENOSPC"}), Weights()])
    holder["trainer"] = trainer
    trainer.train()
    assert [os.path.basename(p) for p in list_checkpoints(out)] == ["checkpoint-2", "checkpoint-4", "checkpoint-8"]
    assert trainer.state.best_metric == 0.5
    assert trainer.state.best_global_step == 4
    assert trainer.state.best_model_checkpoint == str(out / "checkpoint-4")
    saved_state = json.loads((out / "checkpoint-8" / "trainer_state.json").read_text())
    assert (saved_state["best_metric"], saved_state["best_global_step"]) == (0.5, 4)
    for name, value in trainer.model.state_dict().items():  # the weights of checkpoint-4, loaded at the end
        assert torch.equal(value, weights[4][name]), name


# ====================================================================================== a resume that is not exact
def _stopped_run(tmp_path, tokenizer, make_tiny_model, **kw):
    from conftest import StopAt
    Trainer(make_tiny_model(), _args(tmp_path, save_strategy="steps", save_steps=2, seed=7, **kw),
            train_dataset=_data(tokenizer), processing_class=tokenizer, callbacks=[StopAt(4)]).train()


def _resume(tmp_path, tokenizer, make_tiny_model, data, **kw):
    args = dict(save_strategy="steps", save_steps=2, seed=7)
    args.update(kw)
    trainer = Trainer(make_tiny_model(), _args(tmp_path, **args), train_dataset=data, processing_class=tokenizer)
    return trainer, trainer.train(resume_from_checkpoint=True)


@pytest.mark.parametrize("change,expected", [
    ("seed", "seed: checkpoint 7, now 8 (it seeds the data order)"),
    ("data_seed", "data_seed: checkpoint None, now 3 (it seeds the data order)"),
    ("grown", "train_dataset grew: checkpoint 32 rows, now 40"),
    ("shrunk", "train_dataset shrank: checkpoint 32 rows, now 31"),
    ("changed", "train_dataset changed: same 32 rows but different row contents"),
])
def test_resume_with_other_seed_or_data_is_refused(tmp_path, tokenizer, make_tiny_model, change, expected):
    from datasets import Dataset
    _stopped_run(tmp_path, tokenizer, make_tiny_model)
    data, kw = _data(tokenizer), {}
    if change == "seed":
        kw["seed"] = 8
    elif change == "data_seed":
        kw["data_seed"] = 3
    elif change == "grown":
        data = _data(tokenizer, 40)
    elif change == "shrunk":
        data = data.select(range(31))
    else:  # the same number of rows, other texts
        texts = [f"row number {i} reads differently" for i in range(32)]
        data = Dataset.from_dict({**tokenizer(texts), "label": [i % 2 for i in range(32)]})
    with pytest.raises(CheckpointError) as info:
        _resume(tmp_path, tokenizer, make_tiny_model, data, **kw)
    message = str(info.value)
    assert expected in message and "checkpoint-4" in message, message
    assert "ignore_data_skip=True" in message, message
    # the documented override resumes anyway
    trainer, out = _resume(tmp_path, tokenizer, make_tiny_model, data, ignore_data_skip=True, **kw)
    assert out.global_step == 10


def test_resume_with_the_same_data_rebuilt_is_accepted(tmp_path, tokenizer, make_tiny_model):
    """No false alarm: the dataset built again from the same rows (a new object, as in a restarted script)."""
    _stopped_run(tmp_path, tokenizer, make_tiny_model)
    trainer, out = _resume(tmp_path, tokenizer, make_tiny_model, _data(tokenizer))
    assert out.global_step == 10
    assert trainer.state.log_history[0]["step"] <= 4


# =============================================================================================== trainer_state.json
def _rewrite_state(ckpt: Path, **values):
    """Edit trainer_state.json and keep the manifest consistent (as a buggy writer or a careful hand would)."""
    import hashlib
    state_file = ckpt / "trainer_state.json"
    state_file.write_text(json.dumps({**json.loads(state_file.read_text()), **values}, indent=2))
    manifest_file = ckpt / "trainwright_checkpoint.json"
    manifest = json.loads(manifest_file.read_text())
    for entry in manifest["files"]:
        if entry["path"] == "trainer_state.json":
            entry["size"] = state_file.stat().st_size
            entry["sha256"] = hashlib.sha256(state_file.read_bytes()).hexdigest()
    manifest_file.write_text(json.dumps(manifest))


@pytest.mark.parametrize("key,value,expected", [
    ("global_step", "4", "'global_step' is '4' (str), expected an integer >= 0"),
    ("global_step", -3, "'global_step' is -3 (int), expected an integer >= 0"),
    ("global_step", 10**12, "global_step=1000000000000 is beyond this run's 10 steps"),
    ("epoch", float("nan"), "'epoch' is nan (float), expected a finite number >= 0"),
    ("log_history", "none", "'log_history' is 'none' (str), expected a list of objects"),
])
def test_absurd_trainer_state_is_a_clear_error(tmp_path, tokenizer, make_tiny_model, key, value, expected):
    _stopped_run(tmp_path, tokenizer, make_tiny_model)
    ckpt = tmp_path / "out" / "checkpoint-4"
    _rewrite_state(ckpt, **{key: value})
    trainer = Trainer(make_tiny_model(), _args(tmp_path, save_strategy="steps", save_steps=2, seed=7),
                      train_dataset=_data(tokenizer), processing_class=tokenizer)
    with pytest.raises(CheckpointError) as info:
        trainer.train(resume_from_checkpoint=str(ckpt))
    message = str(info.value)
    assert expected in message, message
    assert str(ckpt / "trainer_state.json") in message
    assert "resume from another checkpoint" in message or "raise max_steps" in message, message
    assert trainer.state.global_step == 0  # nothing trained


# =============================================================================================== one run per output_dir
def test_second_trainer_on_the_same_output_dir_is_refused(tmp_path, tokenizer, make_tiny_model):
    second = Trainer(make_tiny_model(), _args(tmp_path, max_steps=2), train_dataset=_data(tokenizer),
                     processing_class=tokenizer)
    errors = []

    class StartAnother(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 2:
                try:
                    second.train()
                except Exception as e:  # noqa: BLE001
                    errors.append(e)

    first = Trainer(make_tiny_model(), _args(tmp_path, max_steps=4), train_dataset=_data(tokenizer),
                    processing_class=tokenizer, callbacks=[StartAnother()])
    assert first.train().global_step == 4  # the first run is not disturbed
    assert len(errors) == 1 and isinstance(errors[0], ConfigError), errors
    message = str(errors[0])
    for phrase in (f"output_dir={str(tmp_path / 'out')!r} is in use by another training run",
                   f"process {os.getpid()} on host", "started", "Use another output_dir"):
        assert phrase in message, (phrase, message)
    assert second.state.global_step == 0
    assert second.train().global_step == 2  # released at the end of the first train()


@pytest.mark.slow
def test_output_dir_lock_is_released_on_error_and_when_its_holder_dies(tmp_path, tokenizer, make_tiny_model):
    import subprocess
    import textwrap

    class Boom(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        Trainer(make_tiny_model(), _args(tmp_path, max_steps=2), train_dataset=_data(tokenizer),
                processing_class=tokenizer, callbacks=[Boom()]).train()
    # another process holds the lock, then is killed: no stale lock remains
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from trainwright.checkpoint.run_lock import OutputDirLock
        lock = OutputDirLock({str(tmp_path / 'out')!r})
        assert lock.acquire()
        print("locked", flush=True)
        time.sleep(600)
        """)], stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert holder.stdout.readline().strip() == "locked"
        trainer = Trainer(make_tiny_model(), _args(tmp_path, max_steps=2), train_dataset=_data(tokenizer),
                          processing_class=tokenizer)
        with pytest.raises(ConfigError, match=f"process {holder.pid} on host"):
            trainer.train()
    finally:
        holder.kill()
        holder.wait()
    assert trainer.train().global_step == 2


# =============================================================================================== SIGKILL chaos
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sigkill_at_random_moments_then_resume_is_bit_identical(tmp_path):
    chaos = _bench("chaos")
    result = chaos.run_chaos(tmp_path, kills=5, seed=2024, slow=0.03, log=lambda m: print(m, flush=True))
    assert not result["crashes"], result["crashes"]
    assert result["kills"] == 5
    assert result["kills_by_mode"]["background"] >= 1  # killed while a background write and the next steps ran
    assert not result["incomplete_visible"], result["incomplete_visible"]
    assert result["bit_identical"], (f"final weights differ in {result['mismatched_tensors']}; first divergent "
                                     f"step {result['first_divergent_step']}")
    assert result["first_divergent_step"] is None


def test_chaos_driver_reports_the_first_divergent_step(tmp_path):
    """The chaos test's diagnosis: per-step weight hashes of the interrupted runs against the reference."""
    chaos = _bench("chaos")
    ref, got = tmp_path / "ref", tmp_path / "got"
    ref.mkdir(), got.mkdir()
    (ref / chaos.EVENTS).write_text("start 1 resume=- t=0\nstep 1 aa\nstep 2 bb\nstep 3 cc\nstep 4 dd\n")
    (got / chaos.EVENTS).write_text("start 2 resume=- t=0\nstep 1 aa\nstep 2 bb\nstep 3 cc\n"
                                    "start 3 resume=/x/checkpoint-2 t=1\nstep 3 cX\nstep 4 dY\n")
    assert chaos.first_divergence(ref, got) == 3
    (got / chaos.EVENTS).write_text("start 2 resume=- t=0\nstep 1 aa\nstep 2 bb\n"
                                    "start 3 resume=/x/checkpoint-2 t=1\nstep 3 cc\nstep 4 dd\n")
    assert chaos.first_divergence(ref, got) is None
    assert chaos._steps_done(got, 3) == 4 and chaos._steps_done(got, 2) == 2


# =============================================================================================== memory
@pytest.mark.slow
def test_memory_does_not_grow(tmp_path):
    soak = _bench("memory_soak")
    result = soak.soak(str(tmp_path), steps=200, evaluates=50, sample_every=40, warmup_steps=80)
    assert result["train_growth_mb"] < 30, result
    assert result["eval_growth_mb"] < 30, result
