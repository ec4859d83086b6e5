"""Checkpoints written by earlier trainwright releases keep resuming exactly.

``tests/fixtures/pre_refactor_run/checkpoint-3`` was written by the trainwright of commit f2aaaac (before the run
state moved into typed components): its running-loss and non-finite counters, world size and data fingerprint sit in
the manifest's untyped ``extra`` dict. Resuming it must give the same weights, optimizer state and logged losses,
bit for bit, as the uninterrupted run. Regenerate it (only if the tiny setup below changes) with the pre-refactor
code: ``OMP_NUM_THREADS=1 PYTHONPATH=src python tests/test_checkpoint_compat.py``.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "pre_refactor_run"


@pytest.fixture(autouse=True)
def one_thread():
    """The fixture was written with one intra-op thread (OMP_NUM_THREADS=1): the runs compared with it use one too
    (float sums are only bit-identical at the same thread count)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_setup(output_dir, **overrides):
    """The fixture's run: a 1-layer BERT with 32 tokens, 8 steps of 4 rows, a log every 2 steps, a save every 3."""
    from datasets import Dataset
    from transformers import BertConfig, BertForSequenceClassification

    from trainwright import TrainingArguments

    torch.manual_seed(0)
    config = BertConfig(vocab_size=32, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8,
                        max_position_embeddings=16, num_labels=2, hidden_dropout_prob=0.1,
                        attention_probs_dropout_prob=0.0)
    model = BertForSequenceClassification(config)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 32, (32, 6), generator=g)
    data = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": [[1] * 6] * 32,
                              "labels": (ids[:, 0] % 2).tolist()})
    args = dict(output_dir=str(output_dir), per_device_train_batch_size=4, learning_rate=1e-2, max_steps=8,
                save_strategy="steps", save_steps=3, logging_steps=2, report_to="none", disable_tqdm=True,
                write_report=False, seed=5, lr_scheduler_type="linear")
    args.update(overrides)
    return model, data, TrainingArguments(**args)


def _train(output_dir, resume=None, callbacks=None, **overrides):
    from trainwright import Trainer

    model, data, args = tiny_setup(output_dir, **overrides)
    trainer = Trainer(model, args, train_dataset=data, callbacks=callbacks)
    out = trainer.train(resume_from_checkpoint=resume)
    return trainer, out


def test_pre_refactor_checkpoint_resumes_bit_identically(tmp_path):
    full, full_out = _train(tmp_path / "full")
    run = tmp_path / "old"
    run.mkdir()
    shutil.copytree(FIXTURE / "checkpoint-3", run / "checkpoint-3")
    manifest = json.loads((run / "checkpoint-3" / "trainwright_checkpoint.json").read_text())
    assert set(manifest["extra"]) >= {"total_loss", "log_loss", "log_steps", "world_size", "data"}  # the old layout
    resumed, resumed_out = _train(run, resume=True)
    assert resumed.state.global_step == 8
    for (n, p), (_, q) in zip(full.model.named_parameters(), resumed.model.named_parameters()):
        assert torch.equal(p, q), n
    sa, sb = full.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    for k in sa:
        for name in sa[k]:
            assert torch.equal(torch.as_tensor(sa[k][name]), torch.as_tensor(sb[k][name])), (k, name)
    logs = lambda t: [(h["step"], h["loss"]) for h in t.state.log_history if "loss" in h]  # noqa: E731
    # the log at step 4 averages steps 3 and 4: step 3's loss came from the old checkpoint's running sums
    assert logs(resumed) == logs(full)
    assert resumed_out.training_loss == full_out.training_loss


def test_new_checkpoints_hold_the_run_components_typed_and_resume_like_the_old_format(tmp_path):
    from conftest import StopAt
    from trainwright.checkpoint import load_checkpoint
    from trainwright.progress import LossTracker

    _train(tmp_path / "new", callbacks=[StopAt(3)])  # checkpoint-3 of the fixture's run, in today's format
    ckpt = tmp_path / "new" / "checkpoint-3"
    manifest = json.loads((ckpt / "trainwright_checkpoint.json").read_text())
    assert "extra" not in manifest
    assert manifest["components"]["states"] == {"loss": "LossTracker", "throughput": "Throughput",
                                                "data_order": "DataOrder", "sampler": "ResumableBatchSampler"}
    assert json.loads((ckpt / "trainwright_states" / "data_order.json").read_text())["state_dict"]["world_size"] == 1
    tracker = LossTracker(torch.device("cpu"))
    out = load_checkpoint(ckpt, states={"loss": tracker}, restore_rng=False)
    assert out["states"] == ["loss"]
    assert tracker.log_steps == 1 and float(tracker.total_finite) == 3.0  # a log at step 2, then step 3
    # resuming the new checkpoint and the pre-refactor one gives the same run
    old = tmp_path / "old"
    old.mkdir()
    shutil.copytree(FIXTURE / "checkpoint-3", old / "checkpoint-3")
    from_new, out_new = _train(tmp_path / "new", resume=True)
    from_old, out_old = _train(old, resume=True)
    for (n, p), (_, q) in zip(from_new.model.named_parameters(), from_old.model.named_parameters()):
        assert torch.equal(p, q), n
    assert out_new.training_loss == out_old.training_loss
    assert [h.get("loss") for h in from_new.state.log_history] == [h.get("loss") for h in from_old.state.log_history]


def _write_fixture() -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        _train(tmp)
        target = FIXTURE / "checkpoint-3"
        if target.exists():
            shutil.rmtree(target)
        FIXTURE.mkdir(parents=True, exist_ok=True)
        shutil.copytree(os.path.join(tmp, "checkpoint-3"), target)
    print("wrote", target)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    _write_fixture()
