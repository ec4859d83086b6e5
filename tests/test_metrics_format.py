"""Trainer.log_metrics / metrics_format print what transformers prints, line for line (issue 18 item 3)."""
from __future__ import annotations

import types

import pytest

from trainwright import Trainer
from trainwright.metrics_format import log_lines, metrics_format

TRAIN = {"train_runtime": 3725.5166666666667, "train_samples_per_second": 12.345678, "train_steps_per_second": 0.8,
         "total_flos": 3.5e12, "train_loss": 0.5166666666666667, "epoch": 3.0, "num_input_tokens_seen": 123456,
         "train_mem_cpu_alloc_delta": 1364197376, "train_mem_cpu_peaked_delta": 0,
         "init_mem_cpu_alloc_delta": -5242880, "train_skipped_nonfinite_steps": 2}
EVAL = {"eval_loss": 0.31415926535, "eval_accuracy": 0.875, "eval_runtime": 0.4567, "eval_samples_per_second": 280.2,
        "eval_steps_per_second": 35.03, "epoch": 3.0}


class _Main:
    def is_world_process_zero(self):
        return True


def _hf_output(split, metrics, capsys):
    from transformers.trainer_pt_utils import log_metrics
    log_metrics(_Main(), split, dict(metrics))
    return capsys.readouterr().out


@pytest.mark.parametrize("split,metrics", [("train", TRAIN), ("eval", EVAL), ("test", {"test_loss": 1.0})])
def test_log_metrics_prints_what_transformers_prints(split, metrics, capsys):
    expected = _hf_output(split, metrics, capsys)
    Trainer.log_metrics(_Main(), split, dict(metrics))
    got = capsys.readouterr().out
    assert got.splitlines() == expected.splitlines()
    assert got == expected


def test_metrics_format_matches_transformers():
    from transformers.trainer_pt_utils import metrics_format as hf_metrics_format
    for metrics in (TRAIN, EVAL):
        assert metrics_format(metrics) == hf_metrics_format(dict(metrics))
    formatted = metrics_format(TRAIN)
    assert formatted["train_runtime"] == "1:02:05.51"
    assert formatted["train_loss"] == 0.5167 and formatted["total_flos"] == "3259GF"
    assert formatted["train_mem_cpu_alloc_delta"] == "1301MB" and formatted["init_mem_cpu_alloc_delta"] == "-5MB"
    assert TRAIN["train_loss"] == 0.5166666666666667  # the caller's dict is left alone
    trainer = types.SimpleNamespace()
    assert Trainer.metrics_format(trainer, EVAL) == metrics_format(EVAL)


def test_values_transformers_cannot_print_are_shown_as_they_are(capsys):
    metrics = {"eval_loss": None, "eval_runtime": float("nan"), "eval_mem_cpu_alloc_delta": 1.5e6,
               "eval_per_class": [0.5, 0.25]}
    lines = log_lines("eval", metrics)
    assert lines[0] == "***** eval metrics *****"
    assert [line.split("=")[0].strip() for line in lines[1:]] == sorted(metrics)
    shown = {line.split("=")[0].strip(): line.split("=", 1)[1].strip() for line in lines[1:]}
    assert shown == {"eval_loss": "None", "eval_runtime": "nan", "eval_mem_cpu_alloc_delta": "1MB",
                     "eval_per_class": "[0.5, 0.25]"}
    assert log_lines("eval", {}) == ["***** eval metrics *****"]


def test_log_metrics_on_a_real_trainer(tmp_path, tokenizer, make_tiny_model, sst2_small, capsys):
    from trainwright import TrainingArguments
    train, dev = sst2_small
    args = TrainingArguments(str(tmp_path), max_steps=2, per_device_train_batch_size=8, report_to="none",
                             disable_tqdm=True, write_report=False, save_strategy="no")
    trainer = Trainer(make_tiny_model(), args, train_dataset=train.select(range(16)), eval_dataset=dev.select(range(8)),
                      processing_class=tokenizer)
    metrics = trainer.train().metrics
    capsys.readouterr()
    expected = _hf_output("train", metrics, capsys)
    trainer.log_metrics("train", metrics)
    got = capsys.readouterr().out
    assert got == expected
    assert "train_runtime            = 0:00:0" in got and "0.5166666" not in got
