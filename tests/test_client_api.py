"""The Trainer API that client scripts call, as transformers has it: the getters, save_model / save_state /
log_metrics / save_metrics from rank 0 only or from every rank under torchrun (FSDP2's rank-0-only save_model is
refused clearly instead of hanging), and two client scripts run as their users run them (tests/client_scripts):
a question-answering script in the run_qa.py / trainer_qa.py pattern, and a torchrun script that saves on rank 0."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT
from trainwright import ConfigError, Trainer, TrainingArguments

CLIENT_SCRIPTS = Path(__file__).resolve().parent / "client_scripts"


def _env():
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", HF_DATASETS_DISABLE_PROGRESS_BARS="1")
    return env


# ====================================================================== getters
def test_trainable_parameters_learning_rates_and_optimizer_groups(tmp_path, tokenizer, make_tiny_model, sst2_small):
    model = make_tiny_model()
    for p in model.bert.embeddings.parameters():
        p.requires_grad_(False)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.bert.embeddings.parameters())
    trainer = Trainer(model, TrainingArguments(str(tmp_path), max_steps=2, learning_rate=1e-3,
                                               lr_scheduler_type="constant",
                                               weight_decay=0.01, report_to="none", disable_tqdm=True,
                                               save_strategy="no", write_report=False),
                      train_dataset=sst2_small[0].select(range(16)), processing_class=tokenizer)
    assert trainer.get_num_trainable_parameters() == trainable == sum(p.numel() for p in model.parameters()) - frozen
    with pytest.raises(ConfigError, match="no optimizer yet.*create_optimizer"):
        trainer.get_learning_rates()
    with pytest.raises(ValueError):  # HF raises ValueError: ConfigError is one
        trainer.get_optimizer_group()
    trainer.create_optimizer()
    groups = trainer.optimizer.param_groups
    assert trainer.get_learning_rates() == [1e-3] * len(groups)
    assert trainer.get_optimizer_group() == [g["params"] for g in groups]
    weight = model.classifier.weight
    group = trainer.get_optimizer_group(weight)
    assert any(p is weight for p in group["params"]) and group["weight_decay"] == 0.01
    assert trainer.get_optimizer_group("classifier.bias")["weight_decay"] == 0.0  # by name, too
    frozen_param = model.bert.embeddings.word_embeddings.weight  # in no group: every group's parameters, as HF
    assert trainer.get_optimizer_group(frozen_param) == [g["params"] for g in groups]
    trainer.train()
    assert trainer.get_learning_rates() == [g["lr"] for g in trainer.optimizer.param_groups]
    assert trainer.get_learning_rates()[0] == pytest.approx(1e-3)


def test_save_calls_write_on_the_main_process(tmp_path, tokenizer, make_tiny_model, capsys):
    trainer = Trainer(make_tiny_model(), TrainingArguments(str(tmp_path / "out"), report_to="none"),
                      processing_class=tokenizer)
    trainer.save_model()
    trainer.save_state()
    trainer.log_metrics("train", {"train_loss": 0.5, "epoch": 1.0})
    trainer.save_metrics("train", {"train_loss": 0.5})
    trainer.save_metrics("eval", {"eval_loss": 0.25})
    out = tmp_path / "out"
    assert (out / "model.safetensors").exists() and (out / "trainer_state.json").exists()
    assert json.loads((out / "all_results.json").read_text()) == {"train_loss": 0.5, "eval_loss": 0.25}
    assert "***** train metrics *****" in capsys.readouterr().out


# ====================================================================== client scripts
@pytest.mark.slow
def test_question_answering_client_script(tmp_path):
    """run_qa.py's shape: a trainer_qa.py-style subclass, post-processing, metrics.load("squad"), the best model
    by f1 (refused before: the pre-flight dry run found no 'eval_f1'), then create_model_card()."""
    out = tmp_path / "qa"
    proc = subprocess.run([sys.executable, str(CLIENT_SCRIPTS / "api_qa.py"), str(out)], env=_env(), cwd=str(ROOT),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    summary = json.loads((out / "summary.json").read_text())
    per_epoch = summary["eval_f1_per_epoch"][:4]  # the 4 epoch evaluations (then the one after train())
    assert len(per_epoch) == 4 and summary["best_metric"] == max(per_epoch)
    best_epoch = per_epoch.index(max(per_epoch)) + 1
    best_state = json.loads((Path(summary["best_model_checkpoint"]) / "trainer_state.json").read_text())
    assert best_state["epoch"] == best_epoch
    assert summary["final"]["eval_f1"] == pytest.approx(summary["best_metric"])  # the best model was loaded
    results = json.loads((out / "all_results.json").read_text())
    assert {"train_loss", "eval_f1", "eval_exact_match", "test_f1", "test_exact_match"} <= set(results)
    predictions = json.loads((out / "predictions.json").read_text())
    assert len(predictions) == summary["n_eval_examples"] == 64
    assert all(set(p) == {"id", "prediction_text"} for p in predictions)
    card = (out / "README.md").read_text()
    from huggingface_hub import ModelCard
    (result,) = ModelCard.load(out / "README.md").data.eval_results[:1]
    assert result.task_type == "question-answering" and result.metric_type in ("exact_match", "f1")
    header = card.split("### Training results")[1].strip().splitlines()[0]
    assert [c.strip() for c in header.strip("|").split("|")] == ["Training Loss", "Epoch", "Step", "Exact Match", "F1"]


@pytest.mark.torchrun
@pytest.mark.slow
def test_torchrun_script_saving_on_rank_0_only(tmp_path):
    """Under DDP, save_model / save_state / log_metrics / save_metrics called on rank 0 only and then on every rank,
    with evaluate() after them (before: rank 0 waited in save_model's barrier -- a hang). Under FSDP2 a rank-0-only
    save_model is refused with the fix named, and the every-rank call that follows works."""
    from test_distributed import TORCHRUN, Launch
    if not torch.distributed.is_available() or not TORCHRUN.exists():
        pytest.skip("needs torch.distributed and torchrun")
    out = tmp_path / "run"
    launch = Launch("api_rank0_save", CLIENT_SCRIPTS / "api_rank0_save.py", out, log_dir=tmp_path).wait(timeout=300)
    launch.check()
    from safetensors.torch import load_file
    for sub in ("rank0", "every_rank"):
        d = out / sub
        assert load_file(str(d / "model.safetensors")) and json.loads((d / "trainer_state.json").read_text())[
            "global_step"] == 3
        assert json.loads((d / "train_results.json").read_text())["train_loss"] > 0
    assert "eval_loss" in json.loads((out / "every_rank" / "eval_results.json").read_text())
    assert launch.output.count("***** train metrics *****") == 2  # rank 0's two calls; rank 1 prints nothing
    error = (out / "fsdp_error.txt").read_text()
    assert "save_model() with fsdp='full_shard' was called on rank 0, but only 1 of 2 ranks called it" in error
    assert "Call trainer.save_model() on every rank" in error
    assert not (out / "fsdp_rank0_model").exists()
    from transformers import BertForSequenceClassification
    model = BertForSequenceClassification.from_pretrained(str(out / "fsdp_model"))
    assert json.loads((out / "done.json").read_text())["world_size"] == 2 and model.config.num_labels == 2


# ====================================================================== transformers' helper methods
def test_log_metrics_prints_as_transformers(tmp_path, tokenizer, make_tiny_model, capsys):
    """log_metrics / metrics_format give transformers' text (runtimes h:mm:ss.cc, total_flos in GF, 4 decimals).
    Before: raw floats (total_flos = 142280408304.0)."""
    from transformers.trainer_pt_utils import log_metrics as hf_log_metrics
    from transformers.trainer_pt_utils import metrics_format as hf_metrics_format
    trainer = Trainer(make_tiny_model(), TrainingArguments(str(tmp_path), report_to="none"), processing_class=tokenizer)
    metrics = {"train_runtime": 14.9162, "total_flos": 142280408304.0, "train_loss": 0.690146493911743,
               "train_samples": 64, "epoch": 1.25, "train_mem_cpu_alloc_delta": 3 << 20}
    assert trainer.metrics_format(metrics) == hf_metrics_format(metrics)
    trainer.log_metrics("train", metrics)
    ours = capsys.readouterr().out
    hf_log_metrics(trainer, "train", metrics)  # transformers' function, run on this trainer
    assert ours == capsys.readouterr().out
    assert "train_runtime             = 0:00:14.91" in ours and "total_flos                =      132GF" in ours


def test_methods_that_subclasses_copy_from_transformers(tmp_path, tokenizer, make_tiny_model, sst2_small):
    """A training_step that uses compute_loss_context_manager and a create_optimizer built from
    get_decay_parameter_names / get_optimizer_cls_and_kwargs (as transformers' own code, which subclasses copy)
    train as the defaults do. Before: AttributeError on each of them."""
    train, _ = sst2_small
    train = train.select(range(32))

    class Copied(Trainer):
        def training_step(self, model, inputs, num_items_in_batch=None):
            model.train()
            inputs = self._prepare_inputs(inputs)
            with self.compute_loss_context_manager():
                loss = self.compute_loss(model, inputs, num_items_in_batch=num_items_in_batch)
            loss.backward()
            return loss.detach()

        def create_optimizer(self):
            decay = self.get_decay_parameter_names(self.model)
            groups = [
                {"params": [p for n, p in self.model.named_parameters() if n in decay and p.requires_grad],
                 "weight_decay": self.args.weight_decay},
                {"params": [p for n, p in self.model.named_parameters() if n not in decay and p.requires_grad],
                 "weight_decay": 0.0},
            ]
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, self.model)
            self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
            return self.optimizer

    def args(name):
        return TrainingArguments(str(tmp_path / name), max_steps=2, learning_rate=1e-3, weight_decay=0.01,
                                 per_device_train_batch_size=8, train_sampling_strategy="random", report_to="none",
                                 disable_tqdm=True, save_strategy="no", write_report=False, use_cpu=True)
    copied = Copied(make_tiny_model(), args("copied"), train_dataset=train, processing_class=tokenizer)
    plain = Trainer(make_tiny_model(), args("plain"), train_dataset=train, processing_class=tokenizer)
    copied.train()
    plain.train()
    assert [(type(o), [len(g["params"]) for g in o.param_groups]) for o in (copied.optimizer, plain.optimizer)] \
        == [(type(plain.optimizer), [len(g["params"]) for g in plain.optimizer.param_groups])] * 2
    assert "classifier.bias" not in copied.get_decay_parameter_names(copied.model)
    for a, b in zip(copied.model.parameters(), plain.model.parameters()):
        torch.testing.assert_close(a, b)  # the same updates as the Trainer's own step and optimizer
    with pytest.raises(ConfigError, match="hyperparameter_search.*not implemented"):
        plain.hyperparameter_search(n_trials=2)
