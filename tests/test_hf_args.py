"""TrainingArguments as transformers' scripts use them: HfArgumentParser (command line, JSON, YAML, dict),
transformers' post-processing, the run-time API (log level, parallel mode, main_process_first, ...), the set_*
helpers, and a transformers.TrainingArguments object given to trainwright's Trainer."""
from __future__ import annotations

import dataclasses
import enum
import json
import logging
import os
import subprocess
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import transformers
from transformers import HfArgumentParser

from conftest import DATA, ROOT, minilm_path
from trainwright import ConfigError, Seq2SeqTrainer, Seq2SeqTrainingArguments, Trainer, TrainingArguments

CLIENTS = Path(__file__).resolve().parent / "client_scripts"
OURS_ONLY = {"logging_dir", "max_tokens_per_batch", "max_consecutive_nonfinite_steps", "on_save_error", "write_report",
             "trim_padding", "chunked_cross_entropy", "save_in_background"}


@dataclass
class ModelArguments:  # shaped like run_glue.py's own dataclasses
    model_name_or_path: str = field(metadata={"help": "Model path."})
    cache_dir: str | None = field(default=None, metadata={"help": "Cache directory."})
    use_fast_tokenizer: bool = field(default=True, metadata={"help": "Fast tokenizer."})


@dataclass
class DataTrainingArguments:
    task_name: str | None = field(default=None, metadata={"help": "GLUE task."})
    max_seq_length: int = field(default=128, metadata={"help": "Sequence length."})
    pad_to_max_length: bool = field(default=True, metadata={"help": "Pad to max length."})


def _plain(value):
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _actions(parser):
    out = {}
    for action in parser._actions:
        if action.dest != "help":
            out.setdefault(action.dest, []).append(action)
    return out


def _describe(action):
    kind = getattr(action.type, "__name__", repr(action.type))
    return dict(options=tuple(action.option_strings), nargs=action.nargs, const=action.const, default=action.default,
                choices=None if action.choices is None else list(action.choices), required=action.required,
                action=type(action).__name__, type="choice" if kind == "<lambda>" else kind)


def _parse(cls, argv):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return HfArgumentParser(cls).parse_args_into_dataclasses(argv, look_for_args_file=False)[0]


# ============================================================================================ the parser
@pytest.mark.parametrize("ours,theirs", [(TrainingArguments, transformers.TrainingArguments),
                                         (Seq2SeqTrainingArguments, transformers.Seq2SeqTrainingArguments)])
def test_parser_builds_the_same_options_as_for_transformers(ours, theirs):
    mine, hf = _actions(HfArgumentParser(ours)), _actions(HfArgumentParser(theirs))
    assert set(hf) <= set(mine), f"options transformers has and trainwright lacks: {set(hf) - set(mine)}"
    for dest, hf_actions in hf.items():
        for a, b in zip(mine[dest], hf_actions, strict=True):
            da, db = _describe(a), _describe(b)
            if dest == "train_sampling_strategy":  # deliberate: default "auto" (length grouping when it helps)
                assert da["default"] == "auto" and set(db["choices"]) < set(da["choices"])
                da["default"], da["choices"] = db["default"], db["choices"]
            assert da == db, dest
    assert set(mine) - set(hf) == OURS_ONLY
    for dest in OURS_ONLY:
        assert mine[dest][0].help, dest
    text = HfArgumentParser(ours).format_help()
    assert "--lr_scheduler_type" in text and "--max_tokens_per_batch" in text and "--no_remove_unused_columns" in text


def _cli_tokens(value):
    """The command-line spelling of a field value, or None where the command line cannot express it."""
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, bool):
        return ["true" if value else "false"]
    if isinstance(value, (list, tuple)):
        return [str(_plain(v)) for v in value]
    if isinstance(value, dict):
        return [json.dumps(value)]
    return [str(_plain(value))]


# values for the fields whose default (None, [], "") the command line cannot spell
SAMPLES = {"lr_scheduler_kwargs": {"num_cycles": 2}, "optim_args": "momentum=0.9", "tf32": False,
           "activation_checkpointing_kwargs": {"use_reentrant": False},
           "gradient_checkpointing_kwargs": {"use_reentrant": False}, "torch_compile_backend": "eager",
           "torch_compile_mode": "default", "torch_empty_cache_steps": 4, "logging_dir": "logs",
           "report_to": "tensorboard", "eval_steps": 5, "eval_accumulation_steps": 2, "include_for_metrics": ["inputs"],
           "save_total_limit": 2, "metric_for_best_model": "f1", "greater_is_better": False, "data_seed": 3,
           "dataloader_multiprocessing_context": "spawn", "label_names": ["a", "b"],
           "ddp_find_unused_parameters": False,
           "ddp_bucket_cap_mb": 25, "ddp_broadcast_buffers": False, "ddp_static_graph": True, "ddp_backend": "gloo",
           "fsdp": "full_shard offload", "fsdp_config": {"min_num_params": 10}, "resume_from_checkpoint": "ckpt",
           "max_tokens_per_batch": 512, "trim_padding": False, "generation_max_length": 10, "generation_num_beams": 2,
           "generation_config": "gen_dir", "hub_token": "tok", "hub_model_id": "me/model", "hub_revision": "dev",
           "hub_private_repo": True, "neftune_noise_alpha": 5.0, "trackio_space_id": "me/space",
           "trackio_bucket_id": "me/bucket", "trackio_static_space_id": "me/static"}
UNSUPPORTED_SAMPLES = {"debug": "underflow_overflow"}
CLI_UNPARSABLE = {"liger_kernel_config", "parallelism_config"}
NEEDS_OTHERS = {"dataloader_prefetch_factor": ("4", ["--dataloader_num_workers", "2"])}


@pytest.mark.parametrize("cls", [TrainingArguments, Seq2SeqTrainingArguments])
def test_every_field_round_trips_through_the_command_line(cls):
    """Each field's default (or, where the command line cannot spell it, a sample value) given on the command
    line gives what the constructor gives; the fields trainwright does not implement raise naming the field."""
    from trainwright.args import UNSUPPORTED
    parser = HfArgumentParser(cls)
    defaults = cls()
    assert _plain(_parse(cls, []).to_dict()) == _plain(defaults.to_dict())
    for f in dataclasses.fields(cls):
        tokens, expected, extra = _cli_tokens(getattr(defaults, f.name)), defaults, []
        if tokens is None and f.name in SAMPLES:
            tokens = _cli_tokens(SAMPLES[f.name])
            expected = cls(**{f.name: SAMPLES[f.name]})
        elif tokens is None and f.name in NEEDS_OTHERS:
            value, extra = NEEDS_OTHERS[f.name]
            tokens, expected = [value], cls(**{f.name: int(value), "dataloader_num_workers": 2})
        elif tokens is None:
            assert f.name in UNSUPPORTED, f"{f.name}: no command-line check"
            if f.name in CLI_UNPARSABLE:  # transformers' parser cannot read these from a command line either
                with pytest.raises(SystemExit):
                    parser.parse_args_into_dataclasses([f"--{f.name}", "x"], look_for_args_file=False)
                continue
            with pytest.raises(ConfigError, match=f.name):
                parser.parse_args_into_dataclasses([f"--{f.name}", UNSUPPORTED_SAMPLES.get(f.name, "2")],
                                                   look_for_args_file=False)
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            (parsed,) = parser.parse_args_into_dataclasses([f"--{f.name}", *tokens, *extra], look_for_args_file=False)
        assert _plain(getattr(parsed, f.name)) == _plain(getattr(expected, f.name)), (f.name, tokens)


SCRIPT_ARGV = ["--model_name_or_path", "bert", "--task_name", "mrpc", "--no_pad_to_max_length",
               "--output_dir", "~/tw-args-out", "--do_train", "--do_eval", "--report_to", "none",
               "--fsdp", "full_shard", "--eval_strategy", "epoch", "--save_strategy", "epoch",
               "--lr_scheduler_type", "cosine", "--lr_scheduler_kwargs", '{"num_cycles": 0.5}',
               "--include_for_metrics", "inputs", "--label_names", "start_positions", "end_positions",
               "--bf16", "--tf32", "false", "--no_remove_unused_columns", "--logging_steps", "10",
               "--warmup_steps", "0.1", "--load_best_model_at_end", "--metric_for_best_model", "f1",
               "--per_device_train_batch_size", "16", "--seed", "3", "--optim", "adamw_torch"]


def test_run_glue_command_line_with_the_scripts_own_dataclasses():
    from transformers.trainer_utils import IntervalStrategy, SchedulerType
    parser = HfArgumentParser((ModelArguments, DataTrainingArguments, TrainingArguments))
    model_args, data_args, args = parser.parse_args_into_dataclasses(SCRIPT_ARGV, look_for_args_file=False)
    assert model_args.model_name_or_path == "bert" and data_args.task_name == "mrpc"
    assert data_args.pad_to_max_length is False
    assert isinstance(args, TrainingArguments)
    assert args.output_dir == os.path.expanduser("~/tw-args-out") and "~" not in args.output_dir
    assert args.do_train and args.do_eval and args.report_to == [] and args.fsdp == "full_shard"
    assert args.eval_strategy == IntervalStrategy.EPOCH and args.lr_scheduler_type == SchedulerType.COSINE
    assert args.lr_scheduler_kwargs == {"num_cycles": 0.5}
    assert args.include_for_metrics == ["inputs"] and args.label_names == ["start_positions", "end_positions"]
    assert args.bf16 is True and args.tf32 is False and args.remove_unused_columns is False
    assert args.logging_steps == 10 and isinstance(args.logging_steps, int) and args.warmup_steps == 0.1
    assert args.load_best_model_at_end and args.metric_for_best_model == "f1" and args.greater_is_better is True
    assert args.per_device_train_batch_size == 16 and args.seed == 3 and args.optim == "adamw_torch"
    assert args.to_json_string()  # always serialisable


def test_command_line_values_match_what_transformers_parses():
    argv = [a for a in SCRIPT_ARGV if a != "--bf16"]  # transformers refuses bf16 on a CPU-only machine
    argv += ["--gradient_checkpointing", "--torch_compile_mode", "default", "--use_cpu"]
    parser_args = dict(args=argv, look_for_args_file=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        *_, ours = HfArgumentParser((ModelArguments, DataTrainingArguments, TrainingArguments)
                                    ).parse_args_into_dataclasses(**parser_args)
        *_, hf = HfArgumentParser((ModelArguments, DataTrainingArguments, transformers.TrainingArguments)
                                  ).parse_args_into_dataclasses(**parser_args)
    for name in ("output_dir", "do_train", "do_eval", "report_to", "eval_strategy", "save_strategy",
                 "lr_scheduler_type",
                 "lr_scheduler_kwargs", "include_for_metrics", "label_names", "tf32", "remove_unused_columns",
                 "logging_steps", "warmup_steps", "load_best_model_at_end", "metric_for_best_model",
                 "greater_is_better", "per_device_train_batch_size", "seed", "optim", "activation_checkpointing",
                 "gradient_checkpointing", "torch_compile", "torch_compile_mode", "torch_compile_backend", "use_cpu",
                 "dataloader_pin_memory", "debug", "disable_tqdm", "eval_steps", "include_num_input_tokens_seen"):
        assert _plain(getattr(ours, name)) == _plain(getattr(hf, name)), name


def test_bool_flags_with_and_without_a_value():
    a = _parse(TrainingArguments, ["--do_train", "--do_eval", "false", "--no_dataloader_pin_memory",
                                   "--activation_checkpointing", "--fsdp"])
    assert a.do_train is True and a.do_eval is False and a.dataloader_pin_memory is False
    assert a.activation_checkpointing is True and a.gradient_checkpointing is True and a.fsdp is True
    b = _parse(TrainingArguments, ["--skip_memory_metrics", "false", "--no-average-tokens-across-devices"])
    assert b.skip_memory_metrics is False and b.average_tokens_across_devices is False


def _config_dict(tmp_path):
    return {"model_name_or_path": "bert", "task_name": "mrpc", "output_dir": str(tmp_path / "out"),
            "do_train": True, "eval_strategy": "steps", "eval_steps": 5, "save_steps": 10,
            "lr_scheduler_type": "cosine_with_min_lr", "lr_scheduler_kwargs": {"min_lr_rate": 0.1},
            "fsdp_config": '{"min_num_params": "100", "reshard_after_forward": "false"}',
            "report_to": ["tensorboard"], "include_for_metrics": ["inputs", "loss"], "label_names": ["labels"],
            "learning_rate": 3e-4, "warmup_steps": 0.05, "optim": "sgd", "debug": ""}


def _check_parsed(outputs):
    model_args, data_args, args = outputs
    assert model_args.model_name_or_path == "bert" and data_args.task_name == "mrpc"
    assert args.do_train and args.do_eval and args.eval_strategy == "steps" and args.eval_steps == 5
    assert args.lr_scheduler_type == "cosine_with_min_lr" and args.lr_scheduler_kwargs == {"min_lr_rate": 0.1}
    assert args.fsdp_config == {"min_num_params": 100, "reshard_after_forward": False}
    assert args.report_to == ["tensorboard"] and args.include_for_metrics == ["inputs", "loss"]
    assert args.label_names == ["labels"] and args.learning_rate == 3e-4 and args.optim == "sgd"
    assert args.debug == []


def test_parse_json_yaml_and_dict(tmp_path):
    import yaml
    parser = HfArgumentParser((ModelArguments, DataTrainingArguments, TrainingArguments))
    data = _config_dict(tmp_path)
    (tmp_path / "args.json").write_text(json.dumps(data))
    (tmp_path / "args.yaml").write_text(yaml.safe_dump(data))
    _check_parsed(parser.parse_json_file(str(tmp_path / "args.json")))
    _check_parsed(parser.parse_yaml_file(str(tmp_path / "args.yaml")))
    _check_parsed(parser.parse_dict(data))
    with pytest.raises(ValueError, match="not used"):  # as transformers: an unknown key is reported
        parser.parse_dict({**data, "learnig_rate": 1.0})


def test_invalid_json_in_a_dict_field_names_the_field():
    for name in ("lr_scheduler_kwargs", "fsdp_config", "gradient_checkpointing_kwargs"):
        with pytest.raises(ConfigError, match=name):
            _parse(TrainingArguments, [f"--{name}", '{"num_cycles": 0.5'])
    with pytest.raises(ConfigError, match="lr_scheduler_kwargs"):
        TrainingArguments("o", lr_scheduler_kwargs="{'num_cycles': 0.5}")


# ============================================================================================ post-processing
def test_post_processing_as_transformers(tmp_path):
    a = TrainingArguments("~/tw-out", logging_dir="~/tw-logs", eval_strategy="epoch", torch_compile_mode="max-autotune",
                          use_cpu=True, debug="", activation_checkpointing_kwargs='{"use_reentrant": "false"}')
    assert a.output_dir == os.path.expanduser("~/tw-out") and a.logging_dir == os.path.expanduser("~/tw-logs")
    assert a.do_eval is True
    assert a.torch_compile is True and a.torch_compile_backend == "inductor"
    assert a.dataloader_pin_memory is False
    assert a.activation_checkpointing_kwargs == {"use_reentrant": False}
    assert a.gradient_checkpointing_kwargs == {"use_reentrant": False}  # the old name mirrors the new one
    assert a.activation_checkpointing is False and a.gradient_checkpointing is False
    assert a.debug == [] and isinstance(a.disable_tqdm, bool)
    from transformers.debug_utils import DebugOption
    assert DebugOption.TPU_METRICS_DEBUG not in a.debug
    assert TrainingArguments("o", torch_compile_backend="eager").torch_compile is True
    with pytest.warns(FutureWarning, match="activation_checkpointing"):
        b = TrainingArguments("o", gradient_checkpointing=True)
    assert b.activation_checkpointing is True and b.gradient_checkpointing is True


def test_to_dict_writes_dtypes_and_enums_as_strings():
    from transformers.trainer_utils import IntervalStrategy, SchedulerType
    a = TrainingArguments("o", eval_strategy=IntervalStrategy.STEPS, eval_steps=3,
                          lr_scheduler_type=SchedulerType.COSINE,
                          fsdp_config={"reduce_dtype": torch.float32, "nested": {"dtype": torch.bfloat16}})
    d = a.to_dict()
    assert d["eval_strategy"] == "steps" and d["lr_scheduler_type"] == "cosine"
    assert d["fsdp_config"] == {"reduce_dtype": "float32", "nested": {"dtype": "bfloat16"}}
    assert json.loads(a.to_json_string())["fsdp_config"]["reduce_dtype"] == "float32"
    s = a.to_sanitized_dict()
    assert s["train_batch_size"] == 8 and s["eval_batch_size"] == 8
    assert all(type(v) in (bool, int, float, str) for v in s.values())


def test_metric_schedulers_need_an_evaluation_and_default_to_the_loss():
    with pytest.raises(ConfigError, match="eval_strategy"):
        TrainingArguments("o", lr_scheduler_type="reduce_lr_on_plateau")
    a = TrainingArguments("o", lr_scheduler_type="greedy", eval_strategy="epoch")
    assert a.metric_for_best_model == "loss" and a.greater_is_better is False


# ============================================================================================ run-time API
def test_process_api_in_a_single_process(monkeypatch):
    from transformers.training_args import ParallelMode
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    a = TrainingArguments("o", per_device_train_batch_size=4, warmup_steps=0.1)
    assert a.world_size == 1 and a.process_index == 0 and a.local_process_index == 0
    assert a.should_log and a.should_save
    assert a.parallel_mode == ParallelMode.NOT_PARALLEL and a.parallel_mode.value == "not_parallel"
    on_cuda = torch.cuda.is_available()
    assert a.device.type == ("cuda" if on_cuda else transformers.TrainingArguments("o").device.type)
    assert a.n_gpu == (1 if on_cuda else 0)  # one device per process: no DataParallel
    assert TrainingArguments("o", use_cpu=True).device == torch.device("cpu")
    assert a.train_batch_size == 4 and a.eval_batch_size == 8
    assert a.get_warmup_steps(95) == 10 and TrainingArguments("o", warmup_steps=7).get_warmup_steps(95) == 7
    ran = []
    with a.main_process_first(desc="work"):
        ran.append(True)
    assert ran == [True] and not torch.distributed.is_initialized()


def test_process_api_reads_the_torchrun_environment(monkeypatch):
    from transformers.training_args import ParallelMode
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    a = TrainingArguments("o", log_level="info", log_level_replica="error")
    assert a.world_size == 4 and a.process_index == 3 and a.local_process_index == 1
    assert a.parallel_mode == ParallelMode.DISTRIBUTED and a.parallel_mode.value == "distributed"
    assert not a.should_log and not a.should_save
    assert a.get_process_log_level() == logging.ERROR
    monkeypatch.setenv("LOCAL_RANK", "0")  # main process of the second node
    assert a.should_log and not a.should_save and a.get_process_log_level() == logging.INFO
    assert not TrainingArguments("o", log_on_each_node=False).should_log
    assert TrainingArguments("o", save_on_each_node=True).should_save


def test_get_process_log_level_passive_is_transformers_verbosity():
    verbosity = transformers.utils.logging.get_verbosity()
    try:
        transformers.utils.logging.set_verbosity_error()
        assert TrainingArguments("o").get_process_log_level() == logging.ERROR
        assert TrainingArguments("o", log_level="debug").get_process_log_level() == logging.DEBUG
    finally:
        transformers.utils.logging.set_verbosity(verbosity)


SCRIPT_ATTRIBUTES = ["seed", "output_dir", "do_train", "do_eval", "do_predict", "resume_from_checkpoint", "local_rank",
                     "device", "n_gpu", "fp16", "bf16", "parallel_mode", "world_size", "process_index",
                     "local_process_index", "should_save", "should_log", "push_to_hub", "hub_model_id",
                     "label_smoothing_factor", "max_steps", "num_train_epochs", "per_device_train_batch_size",
                     "per_device_eval_batch_size", "train_batch_size", "eval_batch_size", "gradient_accumulation_steps",
                     "learning_rate", "eval_strategy", "save_strategy", "logging_strategy", "report_to", "label_names",
                     "remove_unused_columns", "debug", "eval_do_concat_batches", "include_for_metrics",
                     "prediction_loss_only", "metric_for_best_model", "greater_is_better", "load_best_model_at_end",
                     "gradient_checkpointing", "torch_compile", "fsdp", "dataloader_num_workers", "hub_token",
                     "predict_with_generate", "generation_max_length", "generation_num_beams", "sortish_sampler",
                     "eval_accumulation_steps", "logging_steps", "save_total_limit", "ddp_find_unused_parameters"]


def _kind(value):
    value = _plain(value)
    return "number" if isinstance(value, (int, float)) and not isinstance(value, bool) else type(value).__name__


def test_attributes_that_example_scripts_read_exist_with_transformers_types():
    ours = Seq2SeqTrainingArguments("o")
    hf = transformers.Seq2SeqTrainingArguments("o")
    for name in SCRIPT_ATTRIBUTES:
        assert _kind(getattr(ours, name)) == _kind(getattr(hf, name)), name
    assert ours.use_legacy_prediction_loop is False  # trainer_qa.py reads it
    assert TrainingArguments("o", use_legacy_prediction_loop=False).use_legacy_prediction_loop is False
    with pytest.raises(ConfigError, match="use_legacy_prediction_loop"):
        TrainingArguments("o", use_legacy_prediction_loop=True)
    with pytest.warns(FutureWarning, match="overwrite_output_dir"):
        assert TrainingArguments("o", overwrite_output_dir=True).overwrite_output_dir is True
    assert TrainingArguments("o").overwrite_output_dir is False


# ============================================================================================ set_* helpers
SETTERS = [
    ("set_training", dict(learning_rate=1e-4, batch_size=32, weight_decay=0.01, num_epochs=2, max_steps=100,
                          gradient_accumulation_steps=2, seed=3, activation_checkpointing=True)),
    ("set_evaluate", dict(strategy="steps", steps=100, batch_size=16, accumulation_steps=4, delay=10, loss_only=True)),
    ("set_testing", dict(batch_size=32, loss_only=True)),
    ("set_save", dict(strategy="epoch", steps=100, total_limit=2, on_each_node=True)),
    ("set_logging", dict(strategy="steps", steps=10, report_to="none", level="info", first_step=True,
                         on_each_node=False, replica_level="error")),
    ("set_optimizer", dict(name="sgd", learning_rate=0.1, weight_decay=0.01, beta1=0.8, beta2=0.99, epsilon=1e-6,
                           args="momentum=0.9")),
    ("set_lr_scheduler", dict(name="cosine", num_epochs=5, max_steps=50, warmup_steps=0.05)),
    ("set_dataloader", dict(train_batch_size=16, eval_batch_size=64, drop_last=True, num_workers=2, pin_memory=False,
                            persistent_workers=True, prefetch_factor=4, multiprocessing_context="spawn",
                            ignore_data_skip=True, sampler_seed=5)),
]


@pytest.mark.parametrize("method,kwargs", SETTERS, ids=[m for m, _ in SETTERS])
def test_set_helpers_have_transformers_effects(method, kwargs):
    hf = transformers.TrainingArguments("o")
    before = hf.to_dict()
    assert getattr(hf, method)(**kwargs) is hf
    changed = {k: v for k, v in hf.to_dict().items() if v != before[k]}
    assert changed
    ours = TrainingArguments("o")
    assert getattr(ours, method)(**kwargs) is ours
    mine = ours.to_dict()
    for name, value in changed.items():
        if name == "report_to" and value == "none":  # transformers' set_logging stores it unnormalised
            value = []
        assert mine[name] == value, name


def test_set_helpers_validate_again_and_leave_the_arguments_unchanged_on_error():
    a = TrainingArguments("o")
    with pytest.raises(ConfigError, match="per_device_train_batch_size"):
        a.set_training(batch_size=0, learning_rate=1e-3)
    assert a.per_device_train_batch_size == 8 and a.learning_rate == 5e-5 and a.do_train is False
    with pytest.raises(ConfigError, match="lr_scheduler_type"):
        a.set_lr_scheduler(name="cosin")
    with pytest.raises(ConfigError, match="hub_strategy"):
        a.set_push_to_hub("me/model", strategy="sometimes")
    assert a.push_to_hub is False
    a.set_push_to_hub("me/model", strategy="checkpoint")
    assert a.push_to_hub and a.hub_model_id == "me/model" and a.hub_strategy == "checkpoint"
    a.set_evaluate(strategy="epoch")
    assert a.do_eval and a.eval_strategy == "epoch"


# ============================================================================================ transformers' object
def test_transformers_arguments_are_converted_field_by_field(tmp_path, make_tiny_model, sst2_small, caplog):
    hf = transformers.TrainingArguments(str(tmp_path), learning_rate=1e-4, eval_strategy="epoch", save_strategy="epoch",
                                        lr_scheduler_type="cosine", per_device_train_batch_size=4, report_to="none",
                                        load_best_model_at_end=True, warmup_steps=0.1, label_names=["labels"])
    with caplog.at_level(logging.INFO, logger="trainwright"):
        trainer = Trainer(make_tiny_model(), hf, train_dataset=sst2_small[0], eval_dataset=sst2_small[1])
    args = trainer.args
    assert type(args) is TrainingArguments
    assert args.output_dir == str(tmp_path) and args.learning_rate == 1e-4 and args.eval_strategy == "epoch"
    assert args.lr_scheduler_type == "cosine" and args.per_device_train_batch_size == 4
    assert args.load_best_model_at_end and args.metric_for_best_model == "loss" and args.warmup_steps == 0.1
    assert args.label_names == ["labels"] and args.report_to == []
    assert args.train_sampling_strategy == "auto"  # left at transformers' default: trainwright's default
    assert args.optim == "adamw_torch_fused" and args.seed == 42
    lines = [r.getMessage() for r in caplog.records if "transformers TrainingArguments" in r.getMessage()]
    assert len(lines) == 1 and "learning_rate" in lines[0]


def test_converted_transformers_arguments_still_refuse_unsupported_values(tmp_path, make_tiny_model):
    hf = transformers.TrainingArguments(str(tmp_path), use_liger_kernel=True, report_to="none")
    with pytest.raises(ConfigError, match="use_liger_kernel"):
        Trainer(make_tiny_model(), hf)
    hf = transformers.TrainingArguments(str(tmp_path), lr_scheduler_type="cosine", per_device_train_batch_size=3,
                                        report_to="none", optim="adamw_bnb_8bit")
    with pytest.raises(ConfigError, match="optim"):
        TrainingArguments.from_transformers(hf)


def test_transformers_seq2seq_arguments_become_seq2seq_arguments(tmp_path):
    from transformers import BartConfig, BartForConditionalGeneration
    hf = transformers.Seq2SeqTrainingArguments(str(tmp_path), predict_with_generate=True, generation_max_length=12,
                                               generation_num_beams=2, report_to="none")
    model = BartForConditionalGeneration(BartConfig(vocab_size=64, d_model=16, encoder_layers=1, decoder_layers=1,
                                                    encoder_attention_heads=2, decoder_attention_heads=2,
                                                    encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=32))
    trainer = Seq2SeqTrainer(model, hf)
    assert type(trainer.args) is Seq2SeqTrainingArguments
    assert trainer.args.predict_with_generate and trainer.args.generation_max_length == 12
    assert trainer.args.generation_num_beams == 2
    assert type(TrainingArguments.from_transformers(hf)) is Seq2SeqTrainingArguments


def test_other_objects_still_get_a_clear_error(make_tiny_model):
    with pytest.raises(ConfigError, match="trainwright.TrainingArguments"):
        Trainer(make_tiny_model(), {"output_dir": "x"})


# ============================================================================================ client scripts
def _client_env():
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false")
    return env


GLUE_ARGS = {"do_train": True, "eval_strategy": "epoch", "max_steps": 6, "per_device_train_batch_size": 16,
             "learning_rate": 1e-3, "lr_scheduler_type": "cosine", "lr_scheduler_kwargs": {"num_cycles": 0.5},
             "report_to": "none", "logging_steps": 2, "save_strategy": "no", "disable_tqdm": True,
             "max_train_samples": 192, "max_eval_samples": 64, "write_report": False, "log_level": "info"}


@pytest.mark.slow
@pytest.mark.parametrize("form", ["command_line", "json", "yaml"])
def test_run_glue_style_client_script(tmp_path, form):
    import yaml
    values = {**GLUE_ARGS, "tokenizer_name": str(minilm_path()), "data_dir": str(DATA),
              "output_dir": str(tmp_path / "out")}
    if form == "command_line":
        argv = []
        for key, value in values.items():
            if value is True and key != "disable_tqdm":  # a bare flag; disable_tqdm (bool | None) takes a value
                argv.append(f"--{key}")
            else:
                argv += [f"--{key}", json.dumps(value) if isinstance(value, dict) else str(value)]
    elif form == "json":
        (tmp_path / "args.json").write_text(json.dumps(values))
        argv = [str(tmp_path / "args.json")]
    else:
        (tmp_path / "args.yaml").write_text(yaml.safe_dump(values))
        argv = [str(tmp_path / "args.yaml")]
    proc = subprocess.run([sys.executable, str(CLIENTS / "args_run_glue.py"), *argv], cwd=str(tmp_path),
                          env=_client_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "parallel_mode=not_parallel" in proc.stdout
    result = json.loads(next(line[7:] for line in proc.stdout.splitlines() if line.startswith("RESULT ")))
    assert result["parsed"] == {"learning_rate": 1e-3, "lr_scheduler_type": "cosine",
                                "lr_scheduler_kwargs": {"num_cycles": 0.5}, "eval_strategy": "epoch",
                                "report_to": [], "do_eval": True, "label_names": None, "max_steps": 6}
    assert result["global_step"] == 6 and result["train_loss"] > 0
    assert {"eval_loss", "eval_accuracy", "eval_f1"} <= set(result["eval"])
    assert (tmp_path / "out" / "model.safetensors").exists() and (tmp_path / "out" / "eval_results.json").exists()
    assert "Training/evaluation parameters" in proc.stdout  # log_level=info reached the script's logger


@pytest.mark.torchrun
@pytest.mark.slow
def test_main_process_first_under_torchrun(tmp_path):
    from test_distributed import TORCHRUN, Launch
    if not TORCHRUN.exists() or not torch.distributed.is_available():
        pytest.skip("needs torch.distributed and torchrun")
    launch = Launch("main_first", str(CLIENTS / "args_main_process_first.py"), tmp_path, log_dir=tmp_path).wait(240)
    assert launch.proc.returncode == 0, launch.output[-4000:]
    r0, r1 = (json.loads((tmp_path / f"rank{i}.json").read_text()) for i in (0, 1))
    assert r0["world_size"] == r1["world_size"] == 2 and r0["parallel_mode"] == "distributed"
    assert not r0["group_before"] and r0["group_after"] and r1["group_after"] and r0["backend"] == "gloo"
    assert r1["entered"] >= r0["left"] - 0.05  # the replica ran the block after the main process finished it
    for r in (r0, r1):
        assert r["trainer_same_group"] and r["trainer_owns_group"] and r["trainer_world_size"] == 2


def test_building_arguments_imports_neither_torch_nor_transformers():
    code = ("import sys\nfrom trainwright import TrainingArguments\n"
            "a = TrainingArguments('o', eval_strategy='epoch', lr_scheduler_type='greedy', "
            "lr_scheduler_kwargs='{\"patience\": 1}', report_to='none')\n"
            "a.set_training(learning_rate=1e-4).to_json_string()\n"
            "bad = [m for m in ('torch', 'transformers', 'datasets') if m in sys.modules]\n"
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], env=_client_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
