"""Client code in the shape of transformers' example scripts (examples/pytorch, run with only the trainer imports
changed; the list and outcomes are in docs/compatibility.md). Each fix found that way is pinned here by a client
script of our own (tests/client_scripts/accept_*.py, run as its users run it) or a short in-process check."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT, tiny_bert_config
from trainwright import ModelError, Trainer, TrainingArguments

CLIENT_SCRIPTS = Path(__file__).resolve().parent / "client_scripts"


def _env():
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", HF_DATASETS_DISABLE_PROGRESS_BARS="1")
    return env


def _choice_rows(tokenizer, n=8, choices=4, segment=None):
    """``n`` multiple-choice rows: ``input_ids`` / ``token_type_ids`` / ``attention_mask`` hold one list per choice."""
    from datasets import Dataset
    firsts = [f"sentence number {i} starts" for i in range(n) for _ in range(choices)]
    seconds = [f"and ends with option {c}" for _ in range(n) for c in range(choices)]
    enc = tokenizer(firsts, seconds, truncation=True, max_length=24)
    cols = {k: [v[i:i + choices] for i in range(0, len(v), choices)] for k, v in enc.items()}
    if segment is not None:  # row, choice, value
        row, choice, value = segment
        cols["token_type_ids"][row][choice] = [value] * len(cols["token_type_ids"][row][choice])
    cols["label"] = [i % choices for i in range(n)]
    return Dataset.from_dict(cols)


class _PopLabelCollator:
    """run_swag.py's collator pattern: pops ``"label"`` from each row, pads the flattened choices."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.seen = set()

    def __call__(self, rows):
        self.seen.update(rows[0])
        labels = torch.tensor([row.pop("label") for row in rows])
        k = len(rows[0]["input_ids"])
        flat = [{key: row[key][c] for key in row} for row in rows for c in range(k)]
        batch = self.tokenizer.pad(flat, padding=True, return_tensors="pt")
        batch = {key: value.view(len(rows), k, -1) for key, value in batch.items()}
        batch["labels"] = labels
        return batch


def _mc_trainer(tmp_path, tokenizer, data, collator):
    from transformers import BertForMultipleChoice
    torch.manual_seed(0)
    model = BertForMultipleChoice(tiny_bert_config(tokenizer, num_labels=1))
    args = TrainingArguments(str(tmp_path), per_device_train_batch_size=4, max_steps=2, save_strategy="no",
                             report_to="none", disable_tqdm=True, write_report=False)
    return Trainer(model, args, train_dataset=data, data_collator=collator, processing_class=tokenizer)


def test_a_collator_of_the_script_sees_the_label_column_as_transformers_gives_it(tmp_path, tokenizer):
    """Before: the Trainer renamed 'label' to 'labels' in the dataset, so a collator that pops "label" (run_swag.py)
    failed with KeyError: 'label' before the first step. transformers leaves the column as it is."""
    data = _choice_rows(tokenizer)
    collator = _PopLabelCollator(tokenizer)
    trainer = _mc_trainer(tmp_path, tokenizer, data, collator)
    assert trainer.train().global_step == 2
    assert "label" in collator.seen and "labels" not in collator.seen
    assert "label" in trainer.train_dataset.column_names


def test_preflight_reads_nested_token_type_ids_of_multiple_choice_rows(tmp_path, tokenizer):
    """Before: the pre-flight range check of token_type_ids failed inside pyarrow (ArrowNotImplementedError:
    min_max on list<int8>) when each row holds a list per choice. Now the nested values are checked, and a bad
    segment id still names its row."""
    bad = _choice_rows(tokenizer, segment=(5, 2, 3))
    with pytest.raises(ModelError, match=r"segment id 3 \(row 5\).*type_vocab_size=2"):
        _mc_trainer(tmp_path / "bad", tokenizer, bad, _PopLabelCollator(tokenizer)).train()


@pytest.mark.slow
def test_multiple_choice_client_script(tmp_path):
    """run_swag.py's shape end to end: rows of 4 tokenized choices, the script's own collator and accuracy,
    evaluation during training, predict() with one row of 4 scores per example."""
    out = tmp_path / "mc"
    proc = subprocess.run([sys.executable, str(CLIENT_SCRIPTS / "accept_multiple_choice.py"), str(out)],
                          env=_env(), cwd=str(ROOT), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["predictions_shape"] == [20, 4]
    assert summary["label_ids"] == [i % 4 for i in range(20)]
    assert 0.0 <= summary["eval"]["eval_accuracy"] <= 1.0 and summary["eval"]["eval_loss"] > 0
    assert summary["train_loss"] > 0


def test_best_model_metric_missing_from_an_overridden_evaluate_is_named(tmp_path, tokenizer, make_tiny_model,
                                                                          sst2_small):
    """trainer_qa.py's evaluate() computes its metrics only where ``args.should_save`` (the main process); elsewhere it
    returns the runtime alone. The error says what is missing instead of 'It produces: .'."""
    from trainwright import ConfigError

    class RuntimeOnly(Trainer):
        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
            metrics = {f"{metric_key_prefix}_runtime": 0.01}
            self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
            return metrics

    train, dev = sst2_small
    args = TrainingArguments(str(tmp_path), max_steps=2, eval_strategy="steps", eval_steps=1, save_strategy="no",
                             metric_for_best_model="f1", report_to="none", disable_tqdm=True, write_report=False)
    trainer = RuntimeOnly(make_tiny_model(), args, train_dataset=train.select(range(16)),
                          eval_dataset=dev.select(range(8)), processing_class=tokenizer)
    with pytest.raises(ConfigError, match=r"produced no 'eval_f1', only its runtime\. Return it from compute_metrics"):
        trainer.train()


@pytest.mark.slow
def test_resume_a_transformers_run_and_train_twice_client_script(tmp_path):
    """A run checkpointed by transformers.Trainer is resumed by trainwright's Trainer (nothing unpickled), and a second
    train() on a model_init Trainer starts over, as client scripts do."""
    out = tmp_path / "compat"
    out.mkdir()
    proc = subprocess.run([sys.executable, str(CLIENT_SCRIPTS / "compat_rerun_and_hf_resume.py"), str(out)],
                          env=_env(), cwd=str(ROOT), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed_global_step"] == 6 and summary["resumed_train_loss"] > 0
    assert (out / "tw_run" / "checkpoint-6").is_dir()
    assert summary["twice_steps"] == [6, 6] and summary["twice_same_weights"]
    assert summary["twice_losses"][0] == summary["twice_losses"][1]
    assert summary["twice_log_history_steps"] == [3, 6, 6]  # the second run's history only: two logs + the summary
