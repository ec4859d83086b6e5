"""Learning-rate schedules: every transformers lr_scheduler_type, built by transformers' own get_scheduler, with
lr_scheduler_kwargs passed through; their state goes through the JSON/safetensors checkpoint exactly; schedulers
that need the metric (reduce_lr_on_plateau, greedy, or a ReduceLROnPlateau / GreedyLR given through
optimizers=) are stepped with the evaluation metric after each evaluation, and the logged learning rate follows."""
from __future__ import annotations

import pytest
import torch
from transformers.optimization import GreedyLR, get_scheduler
from transformers.trainer_utils import SchedulerType

from conftest import StopAt
from trainwright import ConfigError, Trainer, TrainingArguments
from trainwright.checkpoint import load_checkpoint, save_checkpoint
from trainwright.optim import create_scheduler, steps_on_metric

KWARGS = {"cosine_with_min_lr": {"min_lr_rate": 0.1}, "cosine_warmup_with_min_lr": {"min_lr": 1e-3},
          "warmup_stable_decay": {"num_decay_steps": 6}, "cosine_with_restarts": {"num_cycles": 2},
          "polynomial": {"power": 2.0}, "reduce_lr_on_plateau": {"patience": 0, "factor": 0.5},
          "greedy": {"patience": 0, "factor": 0.5, "min_lr": 0.0}}
METRICS = [1.0, 0.9, 0.95, 0.95, 0.8, 0.85, 0.85, 0.85, 0.7, 0.9, 0.9, 0.9]  # improvements and plateaus


def _optimizer(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 2)
    return model, torch.optim.SGD(model.parameters(), lr=0.1)


def _step(scheduler, optimizer, i):
    optimizer.step()
    if steps_on_metric(scheduler):
        scheduler.step(METRICS[i % len(METRICS)])
    else:
        scheduler.step()
    return optimizer.param_groups[0]["lr"]


@pytest.mark.parametrize("name", [s.value for s in SchedulerType])
def test_every_transformers_schedule_is_built_by_transformers_and_resumes_exactly(tmp_path, name):
    eval_strategy = "epoch" if name in ("reduce_lr_on_plateau", "greedy") else "no"
    args = TrainingArguments(str(tmp_path), lr_scheduler_type=name, lr_scheduler_kwargs=KWARGS.get(name),
                             warmup_steps=3, eval_strategy=eval_strategy)
    assert args.lr_scheduler_type == name
    model, opt = _optimizer()
    sched = create_scheduler(args.lr_scheduler_type, opt, args.get_warmup_steps(20), 20, args.lr_scheduler_kwargs)
    _, ref_opt = _optimizer()
    reference = get_scheduler(name, ref_opt, num_warmup_steps=3, num_training_steps=20,
                              scheduler_specific_kwargs=dict(KWARGS.get(name, {})))
    assert type(sched) is type(reference)
    ours = [_step(sched, opt, i) for i in range(8)]
    assert ours == [_step(reference, ref_opt, i) for i in range(8)]
    if name in ("reduce_lr_on_plateau", "greedy"):
        assert min(ours) < 0.1  # the plateaus lowered it

    path = save_checkpoint(tmp_path / "checkpoint-8", model=model, optimizer=opt, lr_scheduler=sched, rng_state=False)
    model_b, opt_b = _optimizer(seed=1)
    sched_b = create_scheduler(name, opt_b, 3, 20, KWARGS.get(name))
    load_checkpoint(path, model=model_b, optimizer=opt_b, lr_scheduler=sched_b, restore_rng=False)
    assert [_step(sched_b, opt_b, i) for i in range(8, 20)] == [_step(sched, opt, i) for i in range(8, 20)]


def test_wrong_schedule_keywords_fail_before_the_first_step(tmp_path, tokenizer, make_tiny_model, sst2_small):
    args = TrainingArguments(str(tmp_path), lr_scheduler_type="linear", lr_scheduler_kwargs={"num_cycles": 2},
                             max_steps=3, report_to="none", write_report=False)
    trainer = Trainer(make_tiny_model(), args, train_dataset=sst2_small[0], processing_class=tokenizer)
    with pytest.raises(ConfigError, match="lr_scheduler_kwargs"):
        trainer.train()
    assert trainer.state.global_step == 0
    with pytest.raises(ConfigError, match="lr_scheduler_kwargs"):
        create_scheduler("cosine_with_min_lr", _optimizer()[1], 0, 10, {})  # needs min_lr or min_lr_rate


def test_metric_schedulers_need_an_eval_strategy():
    for name in ("reduce_lr_on_plateau", "greedy"):
        with pytest.raises(ConfigError, match="eval_strategy"):
            TrainingArguments("o", lr_scheduler_type=name)


def _plateau_args(out, **kw):
    base = dict(output_dir=str(out), per_device_train_batch_size=16, learning_rate=1e-6, max_steps=12,
                eval_strategy="steps", eval_steps=3, logging_steps=1, save_strategy="no", report_to="none",
                disable_tqdm=True, write_report=False, seed=3)
    base.update(kw)
    return TrainingArguments(**base)


def _logged_lrs(trainer):
    return {h["step"]: h["learning_rate"] for h in trainer.state.log_history if "learning_rate" in h}


def _assert_dropped_after(trainer, first_drop_step: int):
    """The learning rate is constant between evaluations (not stepped per step) and halves after the
    evaluation that found no improvement; the logged value is the optimizer's."""
    lrs = _logged_lrs(trainer)
    assert sorted(lrs) == list(range(1, 13))
    lr = 1e-6
    for step in range(1, 13):
        if step > first_drop_step and (step - 1) % 3 == 0:
            lr *= 0.5
        assert lrs[step] == pytest.approx(lr, rel=1e-9), (step, lrs)
    assert lrs[12] < 1e-6


def test_reduce_lr_on_plateau_lowers_the_learning_rate_on_a_plateau(tmp_path, tokenizer, make_tiny_model, sst2_small):
    # learning_rate 1e-6: the eval loss barely moves, far less than the 5% improvement asked for: a plateau
    args = _plateau_args(tmp_path, lr_scheduler_type="reduce_lr_on_plateau",
                         lr_scheduler_kwargs={"patience": 0, "factor": 0.5, "threshold": 0.05})
    assert args.metric_for_best_model == "loss"
    trainer = Trainer(make_tiny_model(), args, train_dataset=sst2_small[0], eval_dataset=sst2_small[1],
                      processing_class=tokenizer)
    trainer.train()
    assert isinstance(trainer.lr_scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    _assert_dropped_after(trainer, 6)  # eval at 3 sets the best; evals at 6 and 9 find no improvement


@pytest.mark.parametrize("kind", ["torch_plateau", "transformers_greedy"])
def test_a_metric_scheduler_passed_through_optimizers_gets_the_metric(tmp_path, tokenizer, make_tiny_model, sst2_small,
                                                                      kind):
    model = make_tiny_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6)
    if kind == "torch_plateau":
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0, factor=0.5, threshold=0.05)
        first_drop = 6
    else:  # GreedyLR: the first evaluation counts as an improvement; patience 1 -> lowered after two plateaus
        sched = GreedyLR(opt, patience=1, factor=0.5, threshold=0.05, min_lr=0.0)
        first_drop = 9
    trainer = Trainer(model, _plateau_args(tmp_path), train_dataset=sst2_small[0], eval_dataset=sst2_small[1],
                      processing_class=tokenizer, optimizers=(opt, sched))
    trainer.train()
    _assert_dropped_after(trainer, first_drop)


def test_greedy_schedule_by_name(tmp_path, tokenizer, make_tiny_model, sst2_small):
    args = _plateau_args(tmp_path, lr_scheduler_type="greedy",
                         lr_scheduler_kwargs={"patience": 1, "factor": 0.5, "threshold": 0.05, "min_lr": 0.0})
    trainer = Trainer(make_tiny_model(), args, train_dataset=sst2_small[0], eval_dataset=sst2_small[1],
                      processing_class=tokenizer)
    trainer.train()
    assert isinstance(trainer.lr_scheduler, GreedyLR)
    _assert_dropped_after(trainer, 9)


@pytest.mark.slow
def test_plateau_schedule_resumes_exactly(tmp_path, tokenizer, make_tiny_model, sst2_small):
    kw = dict(lr_scheduler_type="reduce_lr_on_plateau", save_strategy="steps", save_steps=3, learning_rate=1e-6,
              lr_scheduler_kwargs={"patience": 0, "factor": 0.5, "threshold": 0.05})

    def run(out, resume=None, callbacks=None):
        trainer = Trainer(make_tiny_model(dropout=0.1), _plateau_args(out, **kw), train_dataset=sst2_small[0],
                          eval_dataset=sst2_small[1], processing_class=tokenizer, callbacks=callbacks)
        trainer.train(resume_from_checkpoint=resume)
        return trainer

    full = run(tmp_path / "full")
    run(tmp_path / "cut", callbacks=[StopAt(6)])
    resumed = run(tmp_path / "cut", resume=True)
    for (n, p), (_, q) in zip(full.model.named_parameters(), resumed.model.named_parameters()):
        assert torch.equal(p, q), n
    assert resumed.lr_scheduler.state_dict() == full.lr_scheduler.state_dict()
    assert _logged_lrs(resumed) == _logged_lrs(full)


def test_the_evaluation_before_training_does_not_step_the_schedule(tmp_path, tokenizer, make_tiny_model, sst2_small):
    args = _plateau_args(tmp_path, lr_scheduler_type="reduce_lr_on_plateau", eval_on_start=True,
                         lr_scheduler_kwargs={"patience": 0, "factor": 0.5, "threshold": 0.05})
    trainer = Trainer(make_tiny_model(), args, train_dataset=sst2_small[0], eval_dataset=sst2_small[1],
                      processing_class=tokenizer)
    trainer.train()
    _assert_dropped_after(trainer, 6)  # as without eval_on_start: the step-0 evaluation leaves the schedule alone
