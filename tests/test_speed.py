"""Speed features: token-budget batches (max_tokens_per_batch), length-grouped sampling, length-sorted
evaluation, and torch.compile length bucketing. Correctness first: every row once per epoch, seeded,
resumable bit for bit, sharded over ranks, outputs in dataset order."""
import os

import numpy as np
import pytest
import torch

from conftest import StopAt, sst2_dataset
from trainwright import DataCollatorWithPadding, Trainer, TrainingArguments
from trainwright.data.samplers import (
    EpochPlan,
    EvalBatchSampler,
    ResumableBatchSampler,
    TokenBudgetBatchSampler,
    dataset_lengths,
)


def _args(out, **kw):
    base = dict(output_dir=str(out), per_device_train_batch_size=8, learning_rate=2e-3, save_strategy="no",
                report_to="none", disable_tqdm=True, write_report=False, logging_steps=2, seed=7)
    base.update(kw)
    return TrainingArguments(**base)


@pytest.fixture(scope="module")
def sst2_lengths(tokenizer):
    """Token counts of the first 4,000 SST-2 training sentences (the real length distribution)."""
    sentences = list(sst2_dataset("train", 4000)["sentence"])
    return np.array([len(ids) for ids in tokenizer(sentences)["input_ids"]])


def _padded(batch, lengths, multiple=None):
    longest = max(lengths[i] for i in batch)
    if multiple:
        longest = -(-longest // multiple) * multiple
    return len(batch) * longest


# ----------------------------------------------------------------------------------- token budget
@pytest.mark.parametrize("budget,multiple", [(256, None), (512, 8), (100, None)])
def test_token_budget_batches_respect_budget_and_cover_every_row(sst2_lengths, budget, multiple):
    sampler = TokenBudgetBatchSampler(sst2_lengths, budget, seed=3, pad_to_multiple_of=multiple)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler) == sampler.num_batches(epoch)
        assert all(_padded(b, sst2_lengths, multiple) <= budget for b in batches)
        rows = sorted(i for b in batches for i in b)
        assert rows == list(range(len(sst2_lengths)))  # every row exactly once
        assert len({len(b) for b in batches}) > 1  # a variable number of rows
    # length-grouped: far less padding than random batches with the same number of rows on average
    padding = 1 - sst2_lengths.sum() / sum(_padded(b, sst2_lengths) for b in batches)
    assert padding < 0.25, padding


def test_token_budget_order_is_a_function_of_seed_and_epoch(sst2_lengths):
    def batches(seed, epoch):
        s = TokenBudgetBatchSampler(sst2_lengths, 300, seed=seed)
        s.set_epoch(epoch)
        return list(s)
    assert batches(1, 0) == batches(1, 0)
    assert batches(1, 0) != batches(2, 0)
    assert batches(1, 0) != batches(1, 1)
    # the first batch holds the longest row (an out-of-memory error shows at the first step)
    first = batches(1, 0)[0]
    assert max(sst2_lengths[i] for i in first) == sst2_lengths.max()


def test_token_budget_sequential_keeps_data_order(sst2_lengths):
    s = TokenBudgetBatchSampler(sst2_lengths, 300, shuffle=False)
    assert [i for b in s for i in b] == list(range(len(sst2_lengths)))


def test_token_budget_resume_jumps_to_the_batch(sst2_lengths):
    s = TokenBudgetBatchSampler(sst2_lengths, 300, seed=5)
    s.set_epoch(2)
    full = list(s)
    s.set_epoch(2, start_batch=7)
    assert list(s) == full[7:]


@pytest.mark.parametrize("world_size", [2, 3])
def test_token_budget_ddp_shards_split_each_global_batch(sst2_lengths, world_size):
    ranks = [TokenBudgetBatchSampler(sst2_lengths, 256, seed=11, world_size=world_size, rank=r)
             for r in range(world_size)]
    for s in ranks:
        s.set_epoch(1)
    per_rank = [list(s) for s in ranks]
    global_batches = ranks[0].global_batches(1)
    assert all(len(p) == len(global_batches) for p in per_rank)  # every rank takes as many steps
    for k, gb in enumerate(global_batches):
        shares = [per_rank[r][k] for r in range(world_size)]
        assert sum(shares, []) == gb  # the union (in rank order) is the global batch, no overlap
        assert all(len(share) >= 1 for share in shares)
        assert all(_padded(share, sst2_lengths) <= 256 for share in shares)  # the budget holds per rank
        assert max(map(len, shares)) - min(map(len, shares)) <= 1
    covered = sorted(i for gb in global_batches for i in gb)
    assert len(covered) == len(set(covered)) >= len(sst2_lengths) - (world_size - 1)


def test_token_budget_row_longer_than_budget_is_a_clear_error():
    from trainwright import ConfigError
    with pytest.raises(ConfigError, match="max_tokens_per_batch=10 .*Raise max_tokens_per_batch to at least 12"):
        TokenBudgetBatchSampler([3, 12, 5], 10)


def test_epoch_plan_counts_steps_of_variable_epochs(sst2_lengths):
    s = TokenBudgetBatchSampler(sst2_lengths[:500], 200, seed=0)
    plan = EpochPlan(s, gradient_accumulation_steps=3)
    steps = [-(-s.num_batches(e) // 3) for e in range(4)]
    assert [plan.steps(e) for e in range(4)] == steps
    assert plan.total_steps(2) == steps[0] + steps[1]
    assert plan.total_steps(1.5) == steps[0] + -(-steps[1] // 2)
    assert plan.num_epochs(steps[0] + 1) == 2
    assert plan.locate(steps[0] + steps[1] + 2) == (2, 2)
    fixed = EpochPlan(ResumableBatchSampler(100, 8), 1)
    assert fixed.steps(5) == 13 and fixed.total_steps(2) == 26 and fixed.locate(30) == (2, 4)


def test_trainer_token_budget_batches_schedule_and_samples_seen(tmp_path, tokenizer, make_tiny_model, sst2_small):
    data = sst2_small[0].select(range(96))
    trainer = Trainer(make_tiny_model(), _args(tmp_path, max_tokens_per_batch=160, num_train_epochs=2),
                      train_dataset=data, processing_class=tokenizer)
    loader = trainer.get_train_dataloader()
    sampler = loader.batch_sampler
    assert isinstance(sampler, TokenBudgetBatchSampler)
    seen = []
    for i, batch in enumerate(loader):  # the collated batches, as the model gets them
        assert batch["input_ids"].numel() <= 160
        seen += sampler.global_batches(0)[i]
    assert sorted(seen) == list(range(96))
    expected_steps = sampler.num_batches(0) + sampler.num_batches(1)
    out = trainer.train()
    assert out.global_step == trainer.state.max_steps == expected_steps
    assert trainer.state.samples_seen == 2 * 96
    assert trainer.lr_scheduler.get_last_lr()[0] == 0.0  # the linear schedule ends exactly at the last step
    assert trainer.state.epoch == 2.0


def test_token_budget_resume_mid_epoch_is_bit_identical(tmp_path, tokenizer, make_tiny_model, sst2_small):
    data = sst2_small[0].select(range(80))
    kw = dict(max_tokens_per_batch=200, num_train_epochs=2, save_strategy="steps", save_steps=1000,
              lr_scheduler_type="cosine", warmup_steps=2, weight_decay=0.01)

    def run(out, resume=None, callbacks=None):
        t = Trainer(make_tiny_model(dropout=0.1), _args(out, **kw), train_dataset=data, processing_class=tokenizer,
                    callbacks=callbacks)
        t.train(resume_from_checkpoint=resume)
        return t

    full = run(tmp_path / "full")
    total = full.state.global_step
    first_epoch = full.get_train_dataloader().batch_sampler.num_batches(0)
    stop = first_epoch + 2  # in the middle of the second epoch, whose length differs from the first's
    assert stop < total
    run(tmp_path / "cut", callbacks=[StopAt(stop)])
    assert os.path.isdir(tmp_path / "cut" / f"checkpoint-{stop}")
    resumed = run(tmp_path / "cut", resume=True)
    assert resumed.state.global_step == total
    for (n, p), (_, q) in zip(full.model.named_parameters(), resumed.model.named_parameters()):
        assert torch.equal(p, q), n
    logs = lambda t: [(h["step"], h["loss"]) for h in t.state.log_history if "loss" in h]  # noqa: E731
    assert logs(resumed) == logs(full)


# ------------------------------------------------------------------------------- group_by_length
def test_group_by_length_reduces_padding_on_sst2_and_covers_all(sst2_lengths):
    n, bs = len(sst2_lengths), 32

    def padding(sampler):
        batches = list(sampler)
        assert sorted(i for b in batches for i in b) == list(range(n))
        return 1 - sst2_lengths.sum() / sum(_padded(b, sst2_lengths) for b in batches)
    random = padding(ResumableBatchSampler(n, bs, seed=0))
    grouped = padding(ResumableBatchSampler(n, bs, seed=0, lengths=sst2_lengths, group_by_length=True))
    assert random > 0.5 and grouped < 0.1, (random, grouped)
    a = ResumableBatchSampler(n, bs, seed=0, lengths=sst2_lengths, group_by_length=True)
    b = ResumableBatchSampler(n, bs, seed=0, lengths=sst2_lengths, group_by_length=True)
    assert list(a) == list(b)  # seeded
    b.set_epoch(1)
    assert list(a) != list(b)  # reshuffled every epoch
    b.set_epoch(0, start_batch=40)
    assert list(b) == list(a)[40:]  # resumable without replay


def test_group_by_length_in_the_trainer_and_hf_alias(tmp_path, tokenizer, make_tiny_model, sst2_small):
    with pytest.warns(FutureWarning):
        args = _args(tmp_path, group_by_length=True, per_device_train_batch_size=16)
    trainer = Trainer(make_tiny_model(), args, train_dataset=sst2_small[0], processing_class=tokenizer)
    sampler = trainer.get_train_dataloader().batch_sampler
    assert sampler.group_by_length and len(sampler.lengths) == 256
    np.testing.assert_array_equal(sampler.lengths, [len(x) for x in sst2_small[0]["input_ids"]])


def test_dataset_lengths_from_arrow_follow_select_and_shuffle(sst2_small):
    ds = sst2_small[0].shuffle(seed=1).select(range(50, 150))
    expected = [len(x) for x in ds["input_ids"]]
    np.testing.assert_array_equal(dataset_lengths(ds), expected)
    np.testing.assert_array_equal(dataset_lengths(ds.add_column("length", expected)), expected)
    rows = [{"input_ids": [1] * k} for k in (3, 1, 2)]
    np.testing.assert_array_equal(dataset_lengths(rows), [3, 1, 2])


# ---------------------------------------------------------------------------------- evaluation
def test_eval_sorted_by_length_returns_same_predictions_in_dataset_order(tmp_path, tokenizer, make_tiny_model,
                                                                         sst2_small):
    _, dev = sst2_small
    args = _args(tmp_path, per_device_eval_batch_size=8, include_for_metrics=["inputs"])
    captured = {}

    def metrics(p):
        captured["inputs"] = p.inputs
        return {"n": float(len(p.label_ids))}
    sorted_trainer = Trainer(make_tiny_model(), args, processing_class=tokenizer, compute_metrics=metrics)
    plain = Trainer(make_tiny_model(), args, processing_class=tokenizer, compute_metrics=metrics)
    plain.eval_sort_by_length = False

    loader = sorted_trainer.get_test_dataloader(dev)
    assert loader.batch_sampler.inverse_order is not None
    padded = sum(b["input_ids"].numel() for b in loader)
    unsorted = sum(b["input_ids"].numel() for b in plain.get_test_dataloader(dev))
    assert padded < 0.8 * unsorted  # sorting saves padding

    a = sorted_trainer.predict(dev)
    inputs_sorted = captured["inputs"]
    b = plain.predict(dev)
    np.testing.assert_allclose(a.predictions, b.predictions, atol=1e-5)
    np.testing.assert_array_equal(a.label_ids, np.array(dev["label"]))
    np.testing.assert_array_equal(a.label_ids, b.label_ids)
    assert a.metrics["test_loss"] == pytest.approx(b.metrics["test_loss"], rel=1e-5)
    # the inputs handed to compute_metrics are in dataset order too (padded with -100 past each row's end)
    for i in (0, 17, 127):
        ids = dev[i]["input_ids"]
        np.testing.assert_array_equal(inputs_sorted[i][:len(ids)], ids)


def test_eval_sampler_sorts_and_inverts():
    lengths = [5, 1, 9, 3, 3, 7, 2]
    s = EvalBatchSampler(len(lengths), 3, lengths=lengths)
    order = [i for b in s for i in b]
    assert [lengths[i] for i in order] == sorted(lengths, reverse=True)
    outputs = np.array(order) * 10  # "outputs" produced in the sorted order
    np.testing.assert_array_equal(outputs[s.inverse_order], np.arange(7) * 10)
    assert EvalBatchSampler(4, 2, lengths=[3, 3, 3, 3]).inverse_order is None  # nothing to gain


def test_eval_fill_batches_use_the_first_batchs_memory_for_more_short_rows(tmp_path, tokenizer, make_tiny_model,
                                                                          sst2_small):
    lengths = np.array([40, 10, 20, 5, 40, 10, 10, 5, 5, 5, 5, 5, 5, 5])
    s = EvalBatchSampler(len(lengths), 2, lengths=lengths, fill_to_longest=True, max_rows=5)
    batches = list(s)
    assert [lengths[i] for i in batches[0]] == [40, 40]  # the first batch: batch_size rows of the longest
    assert all(len(b) * max(lengths[i] for i in b) <= 2 * 40 for b in batches)  # never more padded tokens
    assert max(len(b) for b in batches) == 5  # capped by max_rows
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    # a token cap (the CPU default) fills only small batches and never goes below batch_size rows
    capped = list(EvalBatchSampler(len(lengths), 2, lengths=lengths, fill_to_longest=True, max_rows=5,
                                   fill_max_tokens=30))
    assert all(len(b) >= 2 or b is capped[-1] for b in capped)
    assert all(len(b) == 2 for b in capped if max(lengths[i] for i in b) > 15)  # 2 x 20 > 30: not filled
    assert all(len(b) * max(lengths[i] for i in b) <= 30 for b in capped if len(b) > 2)
    assert max(len(b) for b in capped) == 5  # rows of 5 tokens: 6 would fit 30, max_rows caps at 5
    # under 2 ranks: the same batches, split into contiguous runs
    ranks = [EvalBatchSampler(len(lengths), 2, 2, r, lengths=lengths, fill_to_longest=True, max_rows=5).batches
             for r in range(2)]
    assert ranks[0] and ranks[1] and ranks[0] + ranks[1] == batches

    _, dev = sst2_small
    args = _args(tmp_path, per_device_eval_batch_size=8)
    filled = Trainer(make_tiny_model(), args, processing_class=tokenizer)
    plain = Trainer(make_tiny_model(), args, processing_class=tokenizer)
    plain.eval_fill_batches = False
    a_batches, b_batches = list(filled.get_test_dataloader(dev)), list(plain.get_test_dataloader(dev))
    assert len(a_batches) < len(b_batches)
    assert a_batches[0]["input_ids"].shape == b_batches[0]["input_ids"].shape  # same first (largest) batch
    assert max(b["input_ids"].numel() for b in a_batches) <= a_batches[0]["input_ids"].numel()
    a, b = filled.predict(dev), plain.predict(dev)
    np.testing.assert_allclose(a.predictions, b.predictions, atol=1e-5)
    np.testing.assert_array_equal(a.label_ids, np.array(dev["label"]))
    assert a.metrics["test_loss"] == pytest.approx(b.metrics["test_loss"], rel=1e-5)


# ------------------------------------------------------------------------------ default sampling
def test_auto_sampling_groups_by_length_only_when_it_saves_padding(tmp_path, tokenizer, make_tiny_model, sst2_small):
    train = sst2_small[0]
    args = _args(tmp_path, per_device_train_batch_size=16)
    assert args.train_sampling_strategy == "auto"
    sampler = Trainer(make_tiny_model(), args, train_dataset=train,
                      processing_class=tokenizer).get_train_dataloader().batch_sampler
    assert sampler.group_by_length and sampler.shuffle
    lengths = np.array([len(x) for x in train["input_ids"]])
    grouped = sum(_padded(b, lengths) for b in sampler)
    shuffled = ResumableBatchSampler(len(train), 16, seed=7)
    assert grouped < 0.7 * sum(_padded(b, lengths) for b in shuffled)
    # HF's random order on request
    plain = Trainer(make_tiny_model(), _args(tmp_path, per_device_train_batch_size=16,
                                             train_sampling_strategy="random"),
                    train_dataset=train, processing_class=tokenizer).get_train_dataloader().batch_sampler
    assert not plain.group_by_length and list(plain) == list(shuffled)
    # padding to a fixed max_length, or rows pre-padded: the batches are trimmed to their longest real row
    # (data/trim.py), so rows are grouped by their real lengths; without trimming nothing is saved: random order
    fixed = DataCollatorWithPadding(tokenizer, padding="max_length", max_length=64)
    same = train.map(lambda b: tokenizer(b["sentence"], padding="max_length", truncation=True, max_length=64),
                     batched=True)
    for data, collator in ((train, fixed), (same, None)):
        for trim, grouped in ((None, True), (False, False)):
            s = Trainer(make_tiny_model(), _args(tmp_path, per_device_train_batch_size=16, trim_padding=trim),
                        train_dataset=data, data_collator=collator,
                        processing_class=tokenizer).get_train_dataloader().batch_sampler
            assert s.group_by_length == grouped


def test_length_groups_are_whole_optimizer_steps_so_accumulation_sees_the_same_rows(sst2_lengths):
    n = len(sst2_lengths)
    big = ResumableBatchSampler(n, 16, seed=5, lengths=sst2_lengths, group_by_length=True)
    small = ResumableBatchSampler(n, 4, seed=5, lengths=sst2_lengths, group_by_length=True, group_batches=4)
    for epoch in (0, 1):
        big.set_epoch(epoch)
        small.set_epoch(epoch)
        micro = list(small)
        steps = [sum(micro[i:i + 4], []) for i in range(0, len(micro), 4)]
        assert steps == list(big)
    # the partial last group stays last: every full batch is one sorted group (little padding)
    odd = ResumableBatchSampler(1000, 32, seed=1, lengths=sst2_lengths[:1000], group_by_length=True)
    batches = list(odd)
    assert len(batches[-1]) == 1000 % 32 and all(len(b) == 32 for b in batches[:-1])


def test_resume_refuses_a_different_sampling_strategy():
    from trainwright.checkpoint.resume import resume_mismatches
    args = TrainingArguments(output_dir="x", train_sampling_strategy="random")
    out = resume_mismatches({"train_sampling_strategy": "auto"}, 1, args, 1)
    assert any("train_sampling_strategy" in m for m in out)
    assert resume_mismatches({"train_sampling_strategy": "random"}, 1, args, 1) == []


# ------------------------------------------------------------------------------------ compile
@pytest.mark.compile
@pytest.mark.slow
def test_torch_compile_buckets_lengths_and_does_not_recompile_per_length(tmp_path, tokenizer, make_tiny_model,
                                                                         sst2_small):
    """Dynamo with the "eager" backend (no code generation: seconds, not the minute inductor takes on a
    CPU) shows how many graphs the run compiles; recompilation is decided by Dynamo's shape guards."""
    from torch._dynamo.utils import counters
    torch._dynamo.reset()
    counters.clear()
    trainer = Trainer(make_tiny_model(), _args(tmp_path, per_device_train_batch_size=16, max_steps=10,
                                               torch_compile=True, torch_compile_backend="eager"),
                      train_dataset=sst2_small[0], processing_class=tokenizer)
    assert isinstance(trainer.data_collator, DataCollatorWithPadding)
    assert trainer.data_collator.pad_to_multiple_of == 16  # CPU bucket
    raw_lengths, shapes = set(), set()
    original = trainer.training_step

    def spy(model, inputs, num_items_in_batch=None):
        shapes.add(tuple(inputs["input_ids"].shape))
        raw_lengths.add(int(inputs["attention_mask"].sum(-1).max()))
        return original(model, inputs, num_items_in_batch)
    trainer.training_step = spy
    trainer.train()
    assert all(length % 16 == 0 for _, length in shapes)
    assert len(raw_lengths) > len(shapes) >= 2  # many row lengths, few padded shapes
    assert counters["stats"]["unique_graphs"] <= 3, dict(counters["stats"])
    torch._dynamo.reset()
