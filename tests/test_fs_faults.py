"""The filesystem under a run: a full disk (ENOSPC) or an I/O error (EIO) at any write the trainer makes degrades
cleanly (training goes on, one warning per kind of file, nothing already on disk is damaged), and names such as
run_name never lead a write out of output_dir (issue 14, classes 5 and 10).

The full-disk test uses a real small filesystem (a tmpfs, mounted when running as root where mount works) and is
skipped elsewhere; the same run with injected write errors always runs."""
from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
from pathlib import Path

import pytest

from trainwright import Trainer, TrainerCallback, TrainingArguments
from trainwright.checkpoint import list_checkpoints, load_checkpoint, safe_fs


def _data(tokenizer, n=24):
    from datasets import Dataset
    words = ["good movie", "bad film", "a fine and pleasant story", "terrible", "ok", "great acting here"]
    texts = [words[i % 6] + " " + words[(i * 5) % 6] for i in range(n)]
    return Dataset.from_dict({**tokenizer(texts), "label": [i % 2 for i in range(n)]})


def _args(out, **kw):
    base = dict(output_dir=str(out), per_device_train_batch_size=4, learning_rate=1e-3, max_steps=6,
                save_strategy="steps", save_steps=2, logging_steps=1, report_to="tensorboard", disable_tqdm=True,
                write_report=True, seed=3)
    base.update(kw)
    return TrainingArguments(**base)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def small_fs(tmp_path):
    """A 40 MiB tmpfs at tmp_path/fs (root only; skipped where it cannot be mounted)."""
    if os.name != "posix" or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "fs"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(mnt)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"mount -t tmpfs failed: {done.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(path: Path) -> None:
    """Write a file until the filesystem refuses more (ENOSPC)."""
    with open(path, "wb", buffering=0) as f:
        for size in (1 << 20, 1 << 16, 1 << 12, 1 << 8, 1):
            while True:
                try:
                    f.write(b"\0" * size)
                except OSError as e:
                    assert e.errno == errno.ENOSPC, e
                    break


class DiskFullAt(TrainerCallback):
    """Runs ``snapshot()`` then ``fill()`` once the checkpoint of optimizer step ``step`` is complete (``on_save``,
    at that step or a few steps later for a background write), and ``fill()`` again at train end."""

    def __init__(self, step, snapshot, fill):
        self.step, self.snapshot, self.fill = step, snapshot, fill

    def on_save(self, args, state, control, **kw):
        if state.global_step == self.step:
            self.snapshot()
            self.fill()

    def on_train_end(self, args, state, control, **kw):
        self.fill()  # the report is written after this


def _check_degraded_run(trainer, out: Path, before: dict, records, *, every_kind_failed: bool):
    """What must hold after a run whose disk filled up after the checkpoint at step 2. On a real filesystem a small
    append may still fit in a file's last allocated page, so there only the kinds that were not written must have
    warned (``every_kind_failed=False``); with injected errors every kind fails and warns."""
    assert trainer.state.global_step == 6  # training went on to the end
    assert [os.path.basename(p) for p in list_checkpoints(out)] == ["checkpoint-2"]
    assert _files(out / "checkpoint-2") == before["checkpoint"]  # the earlier checkpoint, byte for byte
    load_checkpoint(out / "checkpoint-2")
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert lines[: len(before["metrics"])] == before["metrics"]  # earlier lines intact
    assert all(isinstance(json.loads(line), dict) for line in lines)  # and no partial line anywhere
    leftovers = [str(p) for p in out.rglob("*") if ".trainwright-" in p.name or p.name.endswith(".tmp")]
    assert not leftovers, leftovers
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    # the disk filled at on_save of checkpoint-2, which comes once its (background) write is complete: the steps
    # logged after the last one already in the file, and train_end, were still to be written
    last = max(json.loads(line).get("step", 0) for line in before["metrics"])
    not_written = {"metrics.jsonl": len(lines) < len(before["metrics"]) + (6 - last) + 1,
                   "run report": not (out / "report.html").exists(),
                   "trainer_state.json": not (out / "trainer_state.json").exists(),
                   "eval_results.json": not (out / "eval_results.json").exists(),
                   "TensorBoard": every_kind_failed}
    for what, missing in not_written.items():
        hits = [m for m in warnings if what in m]
        assert len(hits) <= 1, (what, hits)  # one warning per kind, not one per step
        if missing or every_kind_failed:
            assert len(hits) == 1, (what, warnings)  # what was not written is named
    errors = [r.getMessage() for r in records if r.levelno >= logging.ERROR]
    assert any("checkpoint-4" in m and "No space left" in m for m in errors), errors
    for m in warnings:
        assert "Traceback" not in m


def _run_until_full(out: Path, tokenizer, make_tiny_model, fill, caplog):
    before = {}

    def snapshot():
        before["checkpoint"] = _files(out / "checkpoint-2")
        before["metrics"] = (out / "metrics.jsonl").read_text().splitlines()

    trainer = Trainer(make_tiny_model(), _args(out), train_dataset=_data(tokenizer), processing_class=tokenizer,
                      callbacks=[DiskFullAt(2, snapshot, fill)])
    with caplog.at_level(logging.WARNING):
        trainer.train()
        fill()  # still full (a failed write may have freed what it had taken)
        trainer.save_state()
        trainer.save_metrics("eval", {"eval_loss": 0.5})
    return trainer, before


def test_full_disk_on_a_real_small_filesystem(small_fs, tokenizer, make_tiny_model, caplog):
    safe_fs.reset_warnings()
    out = small_fs / "out"
    fillers = []

    def fill():
        fillers.append(small_fs / f"filler{len(fillers)}")
        _fill(fillers[-1])

    trainer, before = _run_until_full(out, tokenizer, make_tiny_model, fill, caplog)
    _check_degraded_run(trainer, out, before, caplog.records, every_kind_failed=False)
    for filler in fillers:
        os.remove(filler)  # space again: the same calls write again
    trainer.save_state()
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 6


def test_write_errors_injected_degrade_the_same_way(tmp_path, tokenizer, make_tiny_model, caplog, monkeypatch):
    """The same run where the disk cannot be filled for real: from step 2 on every write raises ENOSPC (the
    metrics writer after writing half a line, as a disk that fills mid-write does)."""
    from torch.utils.tensorboard import SummaryWriter

    import trainwright.report
    safe_fs.reset_warnings()
    monkeypatch.delenv("TRAINWRIGHT_TEST_FAIL_CHECKPOINT_WRITE", raising=False)
    full = {"on": False}
    real_write_all = safe_fs._write_all

    def enospc(*_):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def write_all(fd, data):
        if not full["on"]:
            return real_write_all(fd, data)
        real_write_all(fd, data[: len(data) // 2])
        enospc()

    def fill():
        full["on"] = True
        os.environ["TRAINWRIGHT_TEST_FAIL_CHECKPOINT_WRITE"] = "ENOSPC"

    real_add_scalar, real_report = SummaryWriter.add_scalar, trainwright.report.write_report
    monkeypatch.setattr(safe_fs, "_write_all", write_all)
    monkeypatch.setattr(SummaryWriter, "add_scalar",
                        lambda self, *a, **k: enospc() if full["on"] else real_add_scalar(self, *a, **k))
    monkeypatch.setattr(trainwright.report, "write_report",
                        lambda *a, **k: enospc() if full["on"] else real_report(*a, **k))
    out = tmp_path / "out"
    try:
        trainer, before = _run_until_full(out, tokenizer, make_tiny_model, fill, caplog)
    finally:
        os.environ.pop("TRAINWRIGHT_TEST_FAIL_CHECKPOINT_WRITE", None)
    _check_degraded_run(trainer, out, before, caplog.records, every_kind_failed=True)


@pytest.mark.slow
@pytest.mark.parametrize("run_name,subdir", [("../../escape", "escape"), ("/abs/escape", None), ("..", "run"),
                                             ("group/run-1", "group/run-1")])
def test_run_name_never_writes_outside_output_dir(tmp_path, tokenizer, make_tiny_model, run_name, subdir):
    out = tmp_path / "a" / "b" / "out"
    if run_name.startswith("/"):
        run_name = str(tmp_path / "abs" / "escape")
        subdir = run_name.lstrip("/")
    trainer = Trainer(make_tiny_model(), _args(out, run_name=run_name, max_steps=2, save_steps=2),
                      train_dataset=_data(tokenizer), processing_class=tokenizer)
    trainer.train()
    outside = [str(p) for p in tmp_path.rglob("*") if p.is_file() and out not in p.parents]
    assert not outside, outside
    events = list((out / "runs").rglob("events.out.tfevents.*"))
    assert len(events) == 1 and events[0].parent == out / "runs" / subdir, events  # nested names nest, as in HF
    # an explicit logging_dir may point elsewhere
    elsewhere = tmp_path / "tb"
    Trainer(make_tiny_model(), _args(tmp_path / "out2", run_name=run_name, logging_dir=str(elsewhere), max_steps=1,
                                     save_strategy="no"),
            train_dataset=_data(tokenizer), processing_class=tokenizer).train()
    assert list(elsewhere.glob("events.out.tfevents.*"))
