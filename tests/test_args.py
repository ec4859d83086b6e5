"""TrainingArguments: HF defaults, aliases with notices, bad values and unknown names fail clearly, JSON round trip."""
import json
import warnings

import pytest

from trainwright import ConfigError, TrainingArguments


def test_hf_defaults():
    a = TrainingArguments("out")
    assert a.learning_rate == 5e-5 and a.num_train_epochs == 3.0 and a.per_device_train_batch_size == 8
    assert a.eval_strategy == "no" and a.save_strategy == "steps" and a.save_steps == 500
    assert a.lr_scheduler_type == "linear" and a.optim == "adamw_torch_fused" and a.seed == 42
    assert a.report_to == [] and a.max_grad_norm == 1.0 and a.weight_decay == 0.0


@pytest.mark.parametrize("old,new,value,expected", [
    ("evaluation_strategy", "eval_strategy", "epoch", "epoch"),
    ("warmup_ratio", "warmup_steps", 0.1, 0.1),
    ("no_cuda", "use_cpu", True, True),
    ("group_by_length", "train_sampling_strategy", True, "group_by_length"),
    ("group_by_length", "train_sampling_strategy", False, "random"),  # explicit False: transformers' order
])
def test_renamed_arguments_work_with_one_notice(old, new, value, expected):
    with pytest.warns(FutureWarning, match=new) as record:
        a = TrainingArguments("out", **{old: value}, **({"eval_steps": 10} if new == "eval_strategy" else {}))
    assert getattr(a, new) == expected
    assert len([r for r in record if new in str(r.message)]) == 1


def test_warmup_steps_int_and_ratio():
    assert TrainingArguments("o", warmup_steps=10).get_warmup_steps(100) == 10
    assert TrainingArguments("o", warmup_steps=0.25).get_warmup_steps(100) == 25


@pytest.mark.parametrize("kwargs,needle", [
    ({"learning_rate": -1e-5}, "learning_rate"),
    ({"per_device_train_batch_size": 0}, "per_device_train_batch_size"),
    ({"per_device_eval_batch_size": -2}, "per_device_eval_batch_size"),
    ({"gradient_accumulation_steps": 0}, "gradient_accumulation_steps"),
    ({"eval_strategy": "epochs"}, "Did you mean 'epoch'"),
    ({"save_strategy": "sometimes"}, "save_strategy"),
    ({"lr_scheduler_type": "cosin"}, "Did you mean 'cosine'"),
    ({"optim": "adam_w"}, "optim"),
    ({"warmup_steps": -3}, "warmup_steps"),
    ({"max_steps": 0}, "max_steps"),
    ({"weight_decay": -0.1}, "weight_decay"),
    ({"fp16": True, "bf16": True}, "choose one"),
    ({"logging_steps": 0}, "logging_steps"),
    ({"label_smoothing_factor": 1.5}, "label_smoothing_factor"),
    ({"load_best_model_at_end": True, "eval_strategy": "epoch", "save_strategy": "steps"}, "match"),
    ({"load_best_model_at_end": True, "eval_strategy": "steps", "eval_steps": 30, "save_steps": 50}, "multiple"),
    ({"save_strategy": "best"}, "metric_for_best_model"),
])
def test_bad_values_fail_naming_the_argument(kwargs, needle):
    with pytest.raises(ConfigError, match=needle):
        TrainingArguments("out", **kwargs)


def test_unknown_argument_suggests_nearest():
    with pytest.raises(ConfigError, match="learning_rate"):
        TrainingArguments("out", learnig_rate=1e-4)


@pytest.mark.parametrize("name,value", [("deepspeed", "ds.json"), ("use_liger_kernel", True), ("fp16_opt_level", "O2")])
def test_unimplemented_hf_arguments_are_not_silently_ignored(name, value):
    with pytest.raises(ConfigError, match=name):
        TrainingArguments("out", **{name: value})


def test_metric_for_best_model_defaults_and_direction():
    a = TrainingArguments("o", load_best_model_at_end=True, eval_strategy="epoch", save_strategy="epoch")
    assert a.metric_for_best_model == "loss" and a.greater_is_better is False
    b = TrainingArguments("o", metric_for_best_model="accuracy")
    assert b.greater_is_better is True


def test_json_round_trip_no_pickle(tmp_path):
    a = TrainingArguments(str(tmp_path), learning_rate=3e-4, eval_strategy="steps", eval_steps=7,
                          lr_scheduler_kwargs={"num_cycles": 2}, report_to=["tensorboard"])
    path = tmp_path / "args.json"
    a.save_to_json(str(path))
    data = json.loads(path.read_text())
    assert data["learning_rate"] == 3e-4 and data["eval_steps"] == 7
    b = TrainingArguments.from_json_file(str(path))
    assert b.to_dict() == a.to_dict()


def test_no_notice_for_current_names():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TrainingArguments("out", eval_strategy="epoch", warmup_steps=0.1)
