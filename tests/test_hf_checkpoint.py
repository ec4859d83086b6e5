"""Resuming from a checkpoint that transformers.Trainer wrote (issue 13 item 11), with nothing unpickled: the weights
from safetensors (one file or shards + index), optimizer.pt / scheduler.pt / rng_state.pth only through
torch.load(weights_only=True), training_args.bin skipped with a notice; the AdamW moments land on the right
parameters and the learning-rate schedule continues at the saved step."""
from __future__ import annotations

import json
import logging
import os
import pickle
import shutil

import pytest
import torch

from conftest import tiny_bert_config
from trainwright import CheckpointError, Trainer, TrainerCallback, TrainingArguments
from trainwright.checkpoint import latest_checkpoint, load_model_weights

HF_STEPS, HF_SAVE = 6, 3


def _texts(n=40):
    words = ["good movie", "bad film", "a fine and pleasant story", "terrible", "ok", "great acting here",
             "boring plot", "loved it"]
    return [words[i % 8] + " " + words[(i * 3) % 8] for i in range(n)]


def _dataset(tokenizer):
    from datasets import Dataset
    texts = _texts()
    return Dataset.from_dict({**tokenizer(texts), "label": [i % 2 for i in range(len(texts))]})


def _model(tokenizer, seed):
    from transformers import BertForSequenceClassification
    torch.manual_seed(seed)
    return BertForSequenceClassification(tiny_bert_config(tokenizer))


@pytest.fixture(scope="module")
def hf_run(tmp_path_factory, tokenizer):
    """transformers.Trainer trains a tiny BERT for 6 steps, saving every 3: checkpoint-3 and checkpoint-6."""
    import transformers
    out = tmp_path_factory.mktemp("hf") / "out"
    args = transformers.TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=4, max_steps=HF_STEPS, save_steps=HF_SAVE, report_to="none",
        learning_rate=1e-3, warmup_steps=2, weight_decay=0.01, logging_steps=1, use_cpu=True, disable_tqdm=True,
        seed=0)
    trainer = transformers.Trainer(_model(tokenizer, 0), args, train_dataset=_dataset(tokenizer),
                                   processing_class=tokenizer)
    trainer.train()
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    # transformers' own numbering of the saved optimizer state: its param groups, in order
    order = [names[id(p)] for g in trainer.optimizer.param_groups for p in g["params"]]
    return out, order


def _hf_saved(ckpt, order):
    """{param name: {exp_avg, exp_avg_sq, step}} and the group lrs of transformers' optimizer.pt."""
    saved = torch.load(ckpt / "optimizer.pt", weights_only=True)  # the test reads it as transformers would
    by_name = {order[i]: s for i, s in saved["state"].items()}
    return by_name, [g["lr"] for g in saved["param_groups"]]


class Capture(TrainerCallback):
    """The model weights, the optimizer moments (by parameter name) and the LR right after the resume."""

    def on_train_begin(self, args, state, control, model=None, optimizer=None, lr_scheduler=None, **kw):
        names = {id(p): n for n, p in model.named_parameters()}
        self.step = state.global_step
        self.weights = {n: p.detach().clone() for n, p in model.named_parameters()}
        self.moments = {names[id(p)]: {k: v.clone() for k, v in optimizer.state[p].items()}
                        for g in optimizer.param_groups for p in g["params"] if p in optimizer.state}
        self.group_lrs = [g["lr"] for g in optimizer.param_groups]
        self.last_lr = list(lr_scheduler.get_last_lr())
        self.last_epoch = lr_scheduler.last_epoch
        self.cpu_rng = torch.get_rng_state().clone()


def _ours(tmp_path, tokenizer, **kw):
    base = dict(output_dir=str(tmp_path / "ours"), per_device_train_batch_size=4, max_steps=HF_STEPS,
                learning_rate=1e-3, warmup_steps=2, weight_decay=0.01, logging_steps=1, report_to="none",
                disable_tqdm=True, write_report=False, save_steps=HF_SAVE, seed=0)
    base.update(kw)
    return TrainingArguments(**base)


def _assert_resumed_exactly(capture, ckpt, order, tokenizer):
    from safetensors.torch import load_file
    weights = load_file(ckpt / "model.safetensors")
    assert capture.step == HF_SAVE
    for name, value in capture.weights.items():
        assert torch.equal(value, weights[name]), name
    hf_moments, hf_lrs = _hf_saved(ckpt, order)
    assert set(capture.moments) == set(hf_moments)
    for name, state in hf_moments.items():
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(capture.moments[name][key], state[key]), (name, key)
        assert float(capture.moments[name]["step"]) == float(state["step"]) == HF_SAVE
    expected_lr = 1e-3 * (HF_STEPS - HF_SAVE) / (HF_STEPS - 2)  # linear decay after 2 warm-up steps
    assert capture.group_lrs == pytest.approx([expected_lr] * len(capture.group_lrs))
    assert hf_lrs == pytest.approx([expected_lr] * len(hf_lrs))
    assert capture.last_lr[0] == pytest.approx(expected_lr) and capture.last_epoch == HF_SAVE
    with torch.serialization.safe_globals(_numpy_globals()):
        rng = torch.load(ckpt / "rng_state.pth", weights_only=True)
    assert torch.equal(capture.cpu_rng, rng["cpu"])  # the RNGs continue where transformers left them


def _numpy_globals():
    import numpy as np
    return [np._core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def test_resume_transformers_checkpoint_weights_moments_lr(tmp_path, tokenizer, hf_run, caplog):
    hf_out, order = hf_run
    ckpt = hf_out / f"checkpoint-{HF_SAVE}"
    capture = Capture()
    trainer = Trainer(_model(tokenizer, seed=123), _ours(tmp_path, tokenizer), train_dataset=_dataset(tokenizer),
                      processing_class=tokenizer, callbacks=[capture])
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    with caplog.at_level(logging.WARNING, logger="trainwright"):
        out = trainer.train(resume_from_checkpoint=str(ckpt))
    _assert_resumed_exactly(capture, ckpt, order, tokenizer)
    notices = [r.getMessage() for r in caplog.records if "training_args.bin" in r.getMessage()]
    assert len(notices) == 1 and "skipped" in notices[0] and "never unpickles" in notices[0], notices
    # it trains on: 3 more steps, the schedule ends where transformers' would
    assert out.global_step == HF_STEPS and torch.isfinite(torch.tensor(out.training_loss))
    assert trainer.lr_scheduler.last_epoch == HF_STEPS and trainer.lr_scheduler.get_last_lr()[0] == pytest.approx(0.0)
    assert any(not torch.equal(p, capture.weights[n]) for n, p in trainer.model.named_parameters())
    assert any(not torch.equal(p, before[n]) for n, p in trainer.model.named_parameters())
    # transformers' log history is kept; the checkpoints trainwright writes stay pickle-free
    assert [h["step"] for h in trainer.state.log_history if "loss" in h][:HF_SAVE] == [1, 2, 3]
    written = os.listdir(tmp_path / "ours" / f"checkpoint-{HF_STEPS}")
    assert "trainwright_checkpoint.json" in written
    assert not [n for n in written if n.endswith((".bin", ".pt", ".pth", ".pkl"))], written


def test_optimizer_state_is_placed_by_parameter_not_by_index(tmp_path, tokenizer, hf_run):
    """An optimizer whose parameter order differs from transformers' (one group, reversed) still gets every
    parameter's own moments."""
    hf_out, order = hf_run
    ckpt = hf_out / f"checkpoint-{HF_SAVE}"
    model = _model(tokenizer, seed=5)
    params = [p for p in model.parameters() if p.requires_grad][::-1]
    optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)
    capture = Capture()
    trainer = Trainer(model, _ours(tmp_path, tokenizer), train_dataset=_dataset(tokenizer),
                      processing_class=tokenizer, callbacks=[capture], optimizers=(optimizer, None))
    trainer.train(resume_from_checkpoint=str(ckpt))
    hf_moments, _ = _hf_saved(ckpt, order)
    for name, state in hf_moments.items():
        assert torch.equal(capture.moments[name]["exp_avg"], state["exp_avg"]), name


def test_resume_true_finds_transformers_checkpoints_and_sharded_weights(tmp_path, tokenizer, hf_run):
    """resume_from_checkpoint=True in a transformers output_dir takes its newest checkpoint; weights split into
    safetensors shards with an index load the same."""
    from safetensors.torch import load_file, save_file
    hf_out, order = hf_run
    out = tmp_path / "ours"
    shutil.copytree(hf_out, out)
    ckpt = out / f"checkpoint-{HF_STEPS}"
    weights = load_file(ckpt / "model.safetensors")
    names = sorted(weights)
    shards = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
              "model-00002-of-00002.safetensors": names[len(names) // 2:]}
    for file, keys in shards.items():
        save_file({k: weights[k].contiguous() for k in keys}, ckpt / file, metadata={"format": "pt"})
    (ckpt / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {k: f for f, keys in shards.items() for k in keys}}))
    os.remove(ckpt / "model.safetensors")
    assert latest_checkpoint(out) == str(ckpt)
    capture = Capture()
    trainer = Trainer(_model(tokenizer, seed=9), _ours(tmp_path, tokenizer, max_steps=HF_STEPS + 2),
                      train_dataset=_dataset(tokenizer), processing_class=tokenizer, callbacks=[capture])
    assert trainer.train(resume_from_checkpoint=True).global_step == HF_STEPS + 2
    assert capture.step == HF_STEPS
    for name in names:
        assert torch.equal(capture.weights[name], weights[name]), name
    # the best-model path and load_model_weights read transformers' checkpoints too (weights only)
    fresh = _model(tokenizer, seed=11)
    load_model_weights(out / f"checkpoint-{HF_SAVE}", fresh)
    for name, value in load_file(hf_out / f"checkpoint-{HF_SAVE}" / "model.safetensors").items():
        assert torch.equal(fresh.state_dict()[name], value)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))  # unpickling would create the marker file


@pytest.mark.parametrize("victim", ["training_args.bin", "optimizer.pt"])
def test_unsafe_pickles_are_never_loaded(tmp_path, tokenizer, hf_run, caplog, victim):
    """training_args.bin is skipped unread; an optimizer.pt that needs full unpickling is refused by name with
    the user's choices, and nothing in it runs."""
    hf_out, _ = hf_run
    ckpt = tmp_path / "checkpoint-3"
    shutil.copytree(hf_out / f"checkpoint-{HF_SAVE}", ckpt)
    marker = tmp_path / "PWNED"
    with open(ckpt / victim, "wb") as f:
        pickle.dump({"state": _Payload(str(marker)), "param_groups": []}, f, protocol=2)
    trainer = Trainer(_model(tokenizer, seed=1), _ours(tmp_path, tokenizer), train_dataset=_dataset(tokenizer),
                      processing_class=tokenizer)
    if victim == "training_args.bin":
        with caplog.at_level(logging.WARNING, logger="trainwright"):
            assert trainer.train(resume_from_checkpoint=str(ckpt)).global_step == HF_STEPS
        assert any("training_args.bin skipped" in r.getMessage() for r in caplog.records)
    else:
        with pytest.raises(CheckpointError) as info:
            trainer.train(resume_from_checkpoint=str(ckpt))
        message = str(info.value)
        for phrase in ("optimizer.pt", "cannot be read without unpickling", "never unpickles", "move",
                       "from_pretrained", "without resume_from_checkpoint"):
            assert phrase in message, (phrase, message)
        assert trainer.state.global_step == 0
    assert not marker.exists()
