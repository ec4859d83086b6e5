"""Exact resume with DataLoader workers and collators that draw random numbers: the random numbers of a training
batch (MLM masking, whole-word masking, a collator's own seeded generator) derive from (seed, epoch, batch index),
not from which worker builds the batch or what it drew before. A run stopped and resumed ends with the weights of
an uninterrupted run, bit for bit, with dataloader_num_workers=2 too."""
import pytest
import torch

from conftest import StopAt, sst2_dataset, tiny_bert_config
from trainwright import Trainer, TrainingArguments


@pytest.fixture(scope="module")
def mlm_rows(tokenizer):
    """64 SST-2 sentences (of different lengths) with the special-tokens mask."""
    ds = sst2_dataset("train", 64)
    return ds.map(lambda b: tokenizer(b["sentence"], truncation=True, max_length=32, return_special_tokens_mask=True),
                  batched=True, remove_columns=["sentence", "label"])


@pytest.fixture(scope="module")
def wwm_rows(tokenizer):
    """The same sentences padded to 32 tokens with the offsets transformers' whole-word masking needs (its
    collator cannot pad ``offset_mapping``)."""
    ds = sst2_dataset("train", 64)
    return ds.map(lambda b: tokenizer(b["sentence"], truncation=True, max_length=32, padding="max_length",
                                      return_special_tokens_mask=True, return_offsets_mapping=True),
                  batched=True, remove_columns=["sentence", "label"])


def _collator(kind, tokenizer):
    import transformers

    import trainwright
    if kind == "hf-mlm":
        return transformers.DataCollatorForLanguageModeling(tokenizer)
    if kind == "hf-wwm":
        return transformers.DataCollatorForLanguageModeling(tokenizer, whole_word_mask=True)
    if kind == "hf-mlm-seeded":
        return transformers.DataCollatorForLanguageModeling(tokenizer, seed=11)
    return trainwright.DataCollatorForLanguageModeling(tokenizer, seed=11)


def _run(out, data, tokenizer, kind, workers, resume=None, callbacks=None):
    from transformers import BertForMaskedLM
    torch.manual_seed(0)
    model = BertForMaskedLM(tiny_bert_config(tokenizer, dropout=0.1))
    args = TrainingArguments(str(out), per_device_train_batch_size=8, max_steps=10, learning_rate=3e-3,
                             save_strategy="steps", save_steps=100, logging_steps=2, report_to="none",
                             disable_tqdm=True, write_report=False, seed=5, dataloader_num_workers=workers,
                             remove_unused_columns=False)
    trainer = Trainer(model, args, train_dataset=data, data_collator=_collator(kind, tokenizer), callbacks=callbacks)
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def _assert_same_weights(a, b):
    for (n, p), (_, q) in zip(a.model.named_parameters(), b.model.named_parameters()):
        assert torch.equal(p, q), f"{n} differs by {(p - q).abs().max().item()}"


@pytest.mark.slow
@pytest.mark.parametrize("kind,workers", [("hf-mlm", 2), ("hf-wwm", 2), ("tw-seeded", 2), ("hf-mlm", 0)],
                         ids=["mlm-2workers", "whole-word-2workers", "own-generator-2workers", "mlm-main-process"])
def test_resumed_run_with_random_collator_is_bit_identical(tmp_path, tokenizer, mlm_rows, wwm_rows, kind, workers):
    data = wwm_rows if kind == "hf-wwm" else mlm_rows
    full = _run(tmp_path / "full", data, tokenizer, kind, workers)
    _run(tmp_path / "cut", data, tokenizer, kind, workers, callbacks=[StopAt(5)])  # mid-epoch (8 steps an epoch)
    resumed = _run(tmp_path / "cut", data, tokenizer, kind, workers, resume=True)
    assert resumed.state.global_step == full.state.global_step == 10
    _assert_same_weights(full, resumed)
    logs = [(h["step"], h["loss"]) for h in full.state.log_history if "loss" in h]
    assert logs == [(h["step"], h["loss"]) for h in resumed.state.log_history if "loss" in h]


@pytest.mark.parametrize("kind", ["hf-mlm", "hf-mlm-seeded", "tw-seeded"])
def test_batches_do_not_depend_on_workers_or_the_start_batch(tmp_path, tokenizer, mlm_rows, kind):
    """The train dataloader's batches of epoch 1 are the same with 0 or 2 workers, and when the epoch starts at
    batch 3 (a resume), whatever the global RNG holds."""
    from transformers import BertForMaskedLM
    data = mlm_rows

    def batches(workers, start=0):
        args = TrainingArguments(str(tmp_path), per_device_train_batch_size=8, report_to="none", seed=5,
                                 dataloader_num_workers=workers, remove_unused_columns=False)
        trainer = Trainer(BertForMaskedLM(tiny_bert_config(tokenizer)), args, train_dataset=data,
                          data_collator=_collator(kind, tokenizer))
        loader = trainer.get_train_dataloader()
        loader.batch_sampler.set_epoch(1, start_batch=start)
        torch.manual_seed(start + 100 * workers)  # the global RNG differs in every call
        return [(b["input_ids"], b["labels"]) for b in loader]

    def same(a, b):
        assert len(a) == len(b)
        for (ids, labels), (ids2, labels2) in zip(a, b):
            assert torch.equal(ids, ids2) and torch.equal(labels, labels2)

    base = batches(0)
    assert len(base) == 8
    same(batches(2), base)
    same(batches(2, start=3), base[3:])
    same(batches(0, start=5), base[5:])
    masked = [labels != -100 for _, labels in base]
    assert not torch.equal(masked[0][:, :8], masked[1][:, :8])  # the masks do differ from batch to batch


def test_collating_leaves_the_training_rng_alone(tmp_path, tokenizer, mlm_rows):
    """In the main process the collator's draws do not move the torch and python RNG streams the loop uses
    (dropout)."""
    import random

    from transformers import BertForMaskedLM
    args = TrainingArguments(str(tmp_path), per_device_train_batch_size=8, report_to="none",
                             remove_unused_columns=False)
    trainer = Trainer(BertForMaskedLM(tiny_bert_config(tokenizer)), args,
                      train_dataset=mlm_rows,
                      data_collator=_collator("hf-mlm", tokenizer))
    torch.manual_seed(1)
    random.seed(1)
    torch_before, py_before = torch.get_rng_state(), random.getstate()
    next(iter(trainer.get_train_dataloader()))
    assert torch.equal(torch.get_rng_state(), torch_before) and random.getstate() == py_before
