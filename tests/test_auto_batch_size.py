"""auto_find_batch_size: out of memory is simulated on the CPU by a real tiny model whose forward raises when its
batch has more than ``limit`` rows; the search goes 32 -> 28 -> 25 -> 22 -> 19 (x 0.9, rounded down, as
accelerate's find_executable_batch_size), trains to the end, records the size and resumes with it."""
import json
import logging
import os
import signal
import weakref

import pytest
import torch

from conftest import StopAt
from trainwright import BatchSizeSearchError, ConfigError, Trainer, TrainerCallback, TrainingArguments
from trainwright.batch_size_search import is_out_of_memory, next_batch_size
from trainwright.checkpoint.run_lock import OutputDirLock

CUDA_OOM = "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.15 GiB total capacity)"
CPU_OOM = "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried to " \
          "allocate 4294967296 bytes. Error code 12 (Cannot allocate memory)"


def _limit_rows(model, limit, error=lambda: torch.OutOfMemoryError(CUDA_OOM), training_only=True):
    """The model raises ``error()`` on a batch of more than ``limit`` rows; returns the list of batch sizes it saw
    (those it ran and those it refused)."""
    seen = []

    def hook(module, args, kwargs):
        rows = kwargs["input_ids"].shape[0] if "input_ids" in kwargs else args[0].shape[0]
        if module.training or not training_only:
            seen.append(rows)
        if rows > limit and (module.training or not training_only):
            raise error()
    model.register_forward_pre_hook(hook, with_kwargs=True)
    return seen


def _args(out, **kw):
    base = dict(output_dir=str(out), per_device_train_batch_size=32, auto_find_batch_size=True, learning_rate=2e-3,
                max_steps=10, save_strategy="steps", save_steps=3, logging_steps=1, report_to="none",
                disable_tqdm=True, write_report=False, seed=7)
    base.update(kw)
    return TrainingArguments(**base)


def _trainer(out, data, tokenizer, model, **kw):
    callbacks = kw.pop("callbacks", None)
    return Trainer(model, _args(out, **kw), train_dataset=data, processing_class=tokenizer, callbacks=callbacks)


def test_out_of_memory_errors_recognised():
    assert is_out_of_memory(torch.OutOfMemoryError(CUDA_OOM))
    assert is_out_of_memory(torch.OutOfMemoryError("anything"))  # the type alone
    assert is_out_of_memory(RuntimeError(CUDA_OOM + "."))
    assert is_out_of_memory(RuntimeError(CPU_OOM))
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 8 bytes."))
    assert is_out_of_memory(RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"))
    assert is_out_of_memory(RuntimeError("cuDNN error: CUDNN_STATUS_NOT_SUPPORTED. This error may appear if ..."))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(RuntimeError(CPU_OOM, 2))  # accelerate: one argument only
    assert not is_out_of_memory(ValueError(CPU_OOM))
    assert not is_out_of_memory(BatchSizeSearchError("Evaluation ran out of memory. x out of memory."))
    sizes, b = [], 32
    while b:
        sizes.append(b)
        b = next_batch_size(b)
    assert sizes[:6] == [32, 28, 25, 22, 19, 17] and sizes[-1] == 1


def test_search_finds_the_batch_size_and_trains(tmp_path, tokenizer, make_tiny_model, sst2_small, caplog):
    model = make_tiny_model()
    seen = _limit_rows(model, 20)  # (its refusals are left to hold_activation, which runs first)
    activations, freed = [], []

    def hold_activation(module, args, kwargs):  # a failed try's tensors must be freed before the next try
        freed.append(all(ref() is None for ref in activations))
        if kwargs["input_ids"].shape[0] > 20:
            activation = torch.ones(kwargs["input_ids"].shape[0], 1000)  # in the traceback's frame
            activations.append(weakref.ref(activation))
            raise torch.OutOfMemoryError(CUDA_OOM)
    model.register_forward_pre_hook(hold_activation, with_kwargs=True, prepend=True)
    trainer = _trainer(tmp_path, sst2_small[0].select(range(96)), tokenizer, model)
    handler_before = signal.getsignal(signal.SIGTERM)
    with caplog.at_level(logging.WARNING, logger="trainwright"):
        out = trainer.train()
    assert len(activations) == 4 and max(seen) == 19  # one failed forward per size: 32, 28, 25, 22; then 19 fits
    assert "per_device_train_batch_size=22" in caplog.text and "trying 19" in caplog.text
    assert all(freed)
    assert out.global_step == 10 and trainer.state.train_batch_size == 19 and trainer._train_batch_size == 19
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 10 and sum(losses[-3:]) < sum(losses[:3])  # one log per step of the successful try
    with open(tmp_path / "checkpoint-9" / "trainer_state.json") as f:
        assert json.load(f)["train_batch_size"] == 19
    assert trainer.args.per_device_train_batch_size == 32  # the script's value is back
    assert "per_device_train_batch_size=32" in caplog.text and "trying 28" in caplog.text
    assert signal.getsignal(signal.SIGTERM) == handler_before  # no handler left by the failed tries
    lock = OutputDirLock(str(tmp_path))
    assert lock.acquire()  # the output_dir lock was released
    lock.release()


def test_out_of_memory_after_some_steps_starts_over(tmp_path, tokenizer, make_tiny_model, sst2_small):
    """The failed try's checkpoint, optimizer, schedule and counters give way to the next try's (the weights keep
    its updates, as transformers)."""
    model = make_tiny_model()
    forwards = []

    def hook(module, args, kwargs):
        if module.training:
            forwards.append(kwargs["input_ids"].shape[0])
            if len(forwards) == 5:  # the 5th step of the first try, after checkpoint-3
                raise torch.OutOfMemoryError(CUDA_OOM)
    model.register_forward_pre_hook(hook, with_kwargs=True)
    trainer = _trainer(tmp_path, sst2_small[0].select(range(96)), tokenizer, model)
    first_optimizer = []
    trainer.add_callback(type("Grab", (TrainerCallback,), {"on_train_begin": lambda self, a, s, c, **kw:
                                                           first_optimizer.append(kw["optimizer"])})())
    trainer.train()
    assert forwards[:5] == [32] * 5 and len(forwards) == 15
    assert set(forwards[5:]) == {28, 96 - 3 * 28}  # an epoch is 3 full batches of 28 and one of 12
    assert len(first_optimizer) == 2 and first_optimizer[0] is not first_optimizer[1]  # on_train_begin per try
    assert trainer.optimizer is first_optimizer[1]
    assert all(int(s["step"]) == 10 for s in trainer.optimizer.state.values())  # no state from the failed try
    assert trainer.state.global_step == 10 and trainer.lr_scheduler.state_dict()["last_epoch"] == 10
    assert [h["step"] for h in trainer.state.log_history if "loss" in h] == list(range(1, 11))
    with open(tmp_path / "checkpoint-3" / "trainer_state.json") as f:
        assert json.load(f)["train_batch_size"] == 28  # written again by the try that succeeded


@pytest.mark.slow
def test_resume_continues_with_the_found_batch_size(tmp_path, tokenizer, make_tiny_model, sst2_small):
    data = sst2_small[0].select(range(96))
    full = _trainer(tmp_path / "full", data, tokenizer, make_tiny_model())
    _limit_rows(full.model, 20)
    full.train()
    cut = _trainer(tmp_path / "cut", data, tokenizer, make_tiny_model(), callbacks=[StopAt(4)])
    _limit_rows(cut.model, 20)
    cut.train()
    assert os.path.isdir(tmp_path / "cut" / "checkpoint-4")
    resumed = _trainer(tmp_path / "cut", data, tokenizer, make_tiny_model())
    seen = _limit_rows(resumed.model, 20)
    resumed.train(resume_from_checkpoint=True)
    assert max(seen) == 19  # started from the checkpoint's train_batch_size: no failed try
    assert resumed.state.global_step == 10 and resumed.state.train_batch_size == 19
    for (name, p), (_, q) in zip(full.model.named_parameters(), resumed.model.named_parameters()):
        assert torch.equal(p, q), name  # continued exactly, as if never stopped


def test_without_auto_find_the_error_is_raised_unchanged(tmp_path, tokenizer, make_tiny_model, sst2_small):
    model = make_tiny_model()
    seen = _limit_rows(model, 20)
    trainer = _trainer(tmp_path, sst2_small[0].select(range(64)), tokenizer, model, auto_find_batch_size=False)
    with pytest.raises(torch.OutOfMemoryError) as info:
        trainer.train()
    assert str(info.value) == CUDA_OOM and seen == [32]


def test_other_errors_are_not_retried(tmp_path, tokenizer, make_tiny_model, sst2_small):
    model = make_tiny_model()
    seen = _limit_rows(model, 20, error=lambda: RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    trainer = _trainer(tmp_path, sst2_small[0].select(range(64)), tokenizer, model)
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        trainer.train()
    assert seen == [32]


def test_no_batch_size_fits_is_a_clear_error(tmp_path, tokenizer, make_tiny_model, sst2_small):
    model = make_tiny_model()
    seen = _limit_rows(model, 0, error=lambda: RuntimeError(CPU_OOM))
    trainer = _trainer(tmp_path, sst2_small[0].select(range(64)), tokenizer, model, per_device_train_batch_size=4)
    with pytest.raises(BatchSizeSearchError) as info:
        trainer.train()
    assert seen == [4, 3, 2, 1]
    message = str(info.value)
    assert "auto_find_batch_size" in message and "per_device_train_batch_size" in message
    assert "4, 3, 2, 1" in message and "reached zero" in message and "DefaultCPUAllocator" in message
    assert isinstance(info.value, RuntimeError)


def test_evaluation_out_of_memory_is_not_retried(tmp_path, tokenizer, make_tiny_model, sst2_small):
    model = make_tiny_model()
    seen = _limit_rows(model, 8, training_only=False)
    data = sst2_small[0].select(range(64))
    trainer = Trainer(model, _args(tmp_path, per_device_train_batch_size=8, per_device_eval_batch_size=16,
                                   eval_strategy="steps", eval_steps=2), train_dataset=data, eval_dataset=data,
                      processing_class=tokenizer)
    with pytest.raises(BatchSizeSearchError, match="per_device_eval_batch_size") as info:
        trainer.train()
    assert isinstance(info.value.__cause__, torch.OutOfMemoryError)
    assert max(seen) == 16 and trainer.args.per_device_train_batch_size == 8  # the train batch size was kept


def test_token_budget_batches_are_refused():
    with pytest.raises(ConfigError, match="max_tokens_per_batch"):
        TrainingArguments(output_dir="x", auto_find_batch_size=True, max_tokens_per_batch=1024, report_to="none")
