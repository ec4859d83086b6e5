"""num_input_tokens_seen / include_num_input_tokens_seen as transformers 5.x (issue 18 item 3): the same counts
and the same logged keys as transformers.Trainer on the same batches; the model's main_input_name; padding
counted or not; a batch without the main input."""
from __future__ import annotations

import logging

import pytest
import torch

from conftest import tiny_bert_config
from trainwright import Trainer, TrainingArguments
from trainwright.tokens_seen import InputTokenCounter, counting_mode

STEPS, LOG_EVERY, EVAL_AT = 4, 2, 3
TOKEN_KEYS = ("num_input_tokens_seen", "train_runtime", "train_tokens_per_second")


def _data(tokenizer, n=24):
    """Sentences of different lengths: dynamic padding pads every batch."""
    from datasets import Dataset
    words = ["good movie", "bad film", "a fine and pleasant story with actors", "terrible", "ok",
             "great acting here and there"]
    texts = [words[i % 6] + " " + words[(i * 5) % 6] for i in range(n)]
    return Dataset.from_dict({**tokenizer(texts), "label": [i % 2 for i in range(n)]})


def _model(tokenizer):
    from transformers import BertForSequenceClassification
    torch.manual_seed(0)
    return BertForSequenceClassification(tiny_bert_config(tokenizer))


def _common(out, mode):
    return dict(output_dir=str(out), per_device_train_batch_size=4, per_device_eval_batch_size=4, max_steps=STEPS,
                logging_steps=LOG_EVERY, eval_strategy="steps", eval_steps=EVAL_AT, save_strategy="no",
                report_to="none", disable_tqdm=True, train_sampling_strategy="sequential", use_cpu=True,
                include_num_input_tokens_seen=mode)


def _token_logs(history):
    """(step, kind, {token keys present}) per log, and the counts."""
    out = []
    for h in history:
        kind = "final" if "train_loss" in h else "eval" if "eval_loss" in h else "train"
        out.append((h["step"], kind, sorted(k for k in TOKEN_KEYS if k in h), h.get("num_input_tokens_seen")))
    return out


@pytest.mark.parametrize("mode", ["all", "non_padding", "no", True])
def test_counts_and_logged_keys_match_transformers(tmp_path, tokenizer, mode):
    import transformers

    data = _data(tokenizer)
    hf = transformers.Trainer(_model(tokenizer), transformers.TrainingArguments(**_common(tmp_path / "hf", mode)),
                              train_dataset=data, eval_dataset=data.select(range(8)), processing_class=tokenizer)
    hf.train()
    ours = Trainer(_model(tokenizer), TrainingArguments(**_common(tmp_path / "tw", mode), write_report=False),
                   train_dataset=data, eval_dataset=data.select(range(8)), processing_class=tokenizer)
    ours.train()

    assert ours.state.num_input_tokens_seen == hf.state.num_input_tokens_seen
    assert _token_logs(ours.state.log_history) == _token_logs(hf.state.log_history)
    if mode == "no":
        assert ours.state.num_input_tokens_seen == 0
        return
    lengths = [len(ids) for ids in data["input_ids"][: STEPS * 4]]
    padded = sum(4 * max(lengths[i:i + 4]) for i in range(0, len(lengths), 4))
    assert ours.state.num_input_tokens_seen == (sum(lengths) if mode == "non_padding" else padded)
    assert sum(lengths) < padded  # the two modes really differ on this data
    step_log = next(h for h in ours.state.log_history if "loss" in h)
    assert step_log["train_tokens_per_second"] > 0 and step_log["train_runtime"] > 0


def test_main_input_name_is_what_is_counted(tmp_path, caplog):
    """A model whose main input is not input_ids: "all" counts every element of that input, as transformers."""
    from datasets import Dataset

    class Regressor(torch.nn.Module):
        main_input_name = "features"

        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(3, 1)

        def forward(self, features, labels=None):
            pred = self.linear(features).mean(dim=1).squeeze(-1)
            return {"loss": torch.nn.functional.mse_loss(pred, labels), "logits": pred}

    rows = 16
    data = Dataset.from_dict({"features": [[[float(i), 1.0, 2.0]] * 5 for i in range(rows)],
                              "labels": [float(i % 3) for i in range(rows)]})
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=4, logging_steps=2,
                             save_strategy="no", report_to="none", disable_tqdm=True, write_report=False,
                             include_num_input_tokens_seen="all")
    trainer = Trainer(Regressor(), args, train_dataset=data)
    trainer.train()
    assert trainer.state.num_input_tokens_seen == rows * 5 * 3  # every element of `features`
    assert [h["num_input_tokens_seen"] for h in trainer.state.log_history if "loss" in h] == [8 * 15, 16 * 15]


def test_counter_non_padding_without_a_mask_and_without_the_main_input(caplog):
    class Args:
        include_num_input_tokens_seen = "non_padding"

    class Tok:
        pad_token_id = 0

    ids = torch.tensor([[5, 6, 7, 0], [5, 0, 0, 0]])
    mask = (ids != 0).long()
    counter = InputTokenCounter(Args(), model=None, processing_class=Tok())
    assert counter.count({"input_ids": ids, "attention_mask": mask}) == 4
    assert counter.count({"input_ids": ids}) == 4                         # pad_token_id of the processing class
    no_pad = InputTokenCounter(Args(), model=None, processing_class=None)
    with caplog.at_level(logging.WARNING, logger="trainwright"):
        assert no_pad.count({"input_ids": ids}) == 8                      # transformers' fallback: every token
        assert no_pad.count({"input_ids": ids}) == 8
        assert no_pad.count({"pixel_values": torch.ones(2, 3)}) == 0      # no main input: not counted
        assert no_pad.count({"pixel_values": torch.ones(2, 3)}) == 0
    messages = [r.getMessage() for r in caplog.records]
    assert sum("falling back to counting all tokens" in m for m in messages) == 1
    assert sum("add a `main_input_name` attribute" in m and "'input_ids'" in m for m in messages) == 1
    assert no_pad.take_device_count() == 0


@pytest.mark.parametrize("value,mode", [(True, "all"), (False, "no"), ("no", "no"), ("all", "all"),
                                        ("non_padding", "non_padding")])
def test_counting_mode(value, mode):
    class Args:
        include_num_input_tokens_seen = value
    assert counting_mode(Args()) == mode


def test_unknown_mode_counts_all_with_a_warning_naming_the_argument(caplog):
    class Args:
        include_num_input_tokens_seen = "non-padding"
    with caplog.at_level(logging.WARNING, logger="trainwright"):
        assert counting_mode(Args()) == "all"
    assert "include_num_input_tokens_seen='non-padding'" in caplog.text and "'non_padding'" in caplog.text


def test_resumed_run_continues_the_count(tmp_path, tokenizer):
    """The count is saved in the checkpoint; train_tokens_per_second counts this call's tokens only."""
    from conftest import StopAt

    data = _data(tokenizer)
    kw = dict(output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=STEPS, logging_steps=LOG_EVERY,
              save_strategy="steps", save_steps=2, report_to="none", disable_tqdm=True, write_report=False,
              include_num_input_tokens_seen="non_padding", train_sampling_strategy="sequential")
    full = Trainer(_model(tokenizer), TrainingArguments(**{**kw, "output_dir": str(tmp_path / "full")}),
                   train_dataset=data, processing_class=tokenizer)
    full.train()
    first = Trainer(_model(tokenizer), TrainingArguments(**kw), train_dataset=data, processing_class=tokenizer,
                    callbacks=[StopAt(2)])
    first.train()
    resumed = Trainer(_model(tokenizer), TrainingArguments(**kw), train_dataset=data, processing_class=tokenizer)
    resumed.train(resume_from_checkpoint=True)
    assert resumed.state.num_input_tokens_seen == full.state.num_input_tokens_seen > first.state.num_input_tokens_seen
    (log,) = [h for h in resumed.state.log_history if "loss" in h and h["step"] == 4]
    assert log["num_input_tokens_seen"] == full.state.num_input_tokens_seen
    this_call = full.state.num_input_tokens_seen - first.state.num_input_tokens_seen
    assert log["train_tokens_per_second"] == pytest.approx(this_call / log["train_runtime"], rel=1e-2)


def test_report_keeps_the_step_logs_that_carry_train_runtime(tmp_path, tokenizer):
    """With the option on, training-step logs carry train_runtime (as transformers): the run report still reads
    them as training logs, and only the last log as the final summary."""
    from trainwright.report import load_run

    data = _data(tokenizer)
    args = TrainingArguments(**_common(tmp_path, "all"), write_report=False)
    trainer = Trainer(_model(tokenizer), args, train_dataset=data, eval_dataset=data.select(range(8)),
                      processing_class=tokenizer)
    trainer.train()
    run = load_run(str(tmp_path))
    assert [r["step"] for r in run.train_logs] == [2, 4]
    assert "train_loss" in run.final_log and [r["step"] for r in run.eval_logs] == [3, 4]
