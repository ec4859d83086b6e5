"""What a TrainingArguments value may be, and the checks that run when the arguments are built (and again after
every ``set_*``): each wrong value raises ``ConfigError`` naming the argument and the fix; the rest is normalised as
transformers' ``__post_init__`` does (enums to their strings, ratios to step counts, derived defaults).

The tables of valid names, unsupported arguments and older names live here; :mod:`trainwright.args` holds the
fields, the constructor and the JSON form.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import sys
import warnings
from typing import Any

from .args_compat import parse_dict_field
from .args_runtime import LOG_LEVELS
from .errors import ConfigError, did_you_mean

STRATEGIES = ("no", "steps", "epoch")
SAVE_STRATEGIES = ("no", "steps", "epoch", "best")
HUB_STRATEGIES = ("end", "every_save", "checkpoint", "all_checkpoints")
OPTIMIZERS = ("adamw_torch", "adamw_torch_fused", "adamw_torch_foreach", "adamw", "sgd", "adafactor", "adagrad",
              "rmsprop")
# transformers 5.x SchedulerType, every one built by transformers' get_scheduler (optim.create_scheduler)
SCHEDULERS = (
    "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
    "inverse_sqrt", "reduce_lr_on_plateau", "cosine_with_min_lr", "cosine_warmup_with_min_lr",
    "warmup_stable_decay", "greedy",
)
METRIC_SCHEDULERS = ("reduce_lr_on_plateau", "greedy")  # stepped with the evaluation metric
SAMPLING = ("auto", "random", "sequential", "group_by_length")
# dict fields that may be given as a JSON string (command line, YAML), as transformers' _VALID_DICT_FIELDS
DICT_FIELDS = ("lr_scheduler_kwargs", "fsdp_config", "activation_checkpointing_kwargs", "gradient_checkpointing_kwargs",
               "accelerator_config", "deepspeed")

# transformers arguments that trainwright accepts only at their default value, with the reason.
UNSUPPORTED = {
    "deepspeed": "DeepSpeed is not used; for sharding use fsdp='full_shard' (FSDP2) under torchrun",
    "use_liger_kernel": "Liger kernels are not integrated",
    "liger_kernel_config": "Liger kernels are not integrated",
    "optim_target_modules": "GaLore/APOLLO-style target modules are not implemented",
    "accelerator_config": "trainwright does not use accelerate; distributed settings are ddp_* / fsdp*",
    "parallelism_config": "trainwright does not use accelerate's parallelism config; use fsdp / torchrun",
    "enable_jit_checkpoint": "use SIGTERM handling, which always writes a checkpoint before exiting",
    "debug": "debug modes (underflow_overflow, tpu_metrics_debug) are not implemented",
}

# Older transformers names: old -> (new, how to convert)
RENAMED = {
    "evaluation_strategy": "eval_strategy",
    "warmup_ratio": "warmup_steps",
    "no_cuda": "use_cpu",
    "group_by_length": "train_sampling_strategy",
    "save_safetensors": None,  # always True here
    "overwrite_output_dir": None,  # no effect: checkpoints are never overwritten in place
}
REMOVED = {
    "fp16_opt_level": "apex is not supported; fp16=True uses torch.amp",
    "half_precision_backend": "mixed precision always uses torch.amp",
    "fp16_backend": "mixed precision always uses torch.amp",
    "jit_mode_eval": "TorchScript evaluation is not supported; use torch_compile=True",
    "use_ipex": "Intel Extension for PyTorch is not supported",
    "tpu_num_cores": "TPUs are not supported",
    "past_index": "past_index (Transformer-XL memories) is not supported",
    "use_mps_device": "MPS is chosen automatically when available",
    "use_legacy_prediction_loop": "there is one evaluation loop",
    "push_to_hub_model_id": "it was removed from transformers; use hub_model_id",
    "push_to_hub_organization": "it was removed from transformers; use hub_model_id='organization/name'",
    "push_to_hub_token": "it was removed from transformers; use hub_token",
    "ray_scope": "hyperparameter search is not implemented",
}

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def notice(message: str) -> None:
    """A FutureWarning attributed to the user's line (the first frame outside trainwright and dataclasses)."""
    level, frame = 2, sys._getframe(1)
    while frame is not None and (frame.f_code.co_filename.startswith(_PACKAGE_DIR) or
                                 frame.f_code.co_filename == "<string>"):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, FutureWarning, stacklevel=level)


def field_default(f: dataclasses.Field) -> Any:
    """The default of a dataclass field (calling its default_factory)."""
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


# ================================================================================================ the constructor
def map_old_names(args: Any, kwargs: dict) -> dict:
    """The keyword arguments with older transformers names mapped to the current ones (one notice each); a name
    transformers removed raises naming the reason."""
    kwargs = dict(kwargs)
    for old, new in RENAMED.items():
        if old not in kwargs:
            continue
        value = kwargs.pop(old)
        if old == "warmup_ratio":
            if value and not kwargs.get("warmup_steps"):
                kwargs["warmup_steps"] = float(value)
            notice("warmup_ratio is deprecated: use warmup_steps=<float below 1> (a fraction of all steps).")
        elif old == "group_by_length":
            if "train_sampling_strategy" not in kwargs:  # an explicit False asks for transformers' random order
                kwargs["train_sampling_strategy"] = "group_by_length" if value else "random"
            notice("group_by_length is deprecated: use train_sampling_strategy='group_by_length' (True) or "
                   "'random' (False); the default 'auto' groups by length when that saves padding.")
        elif new is None:
            if old == "overwrite_output_dir":
                args.overwrite_output_dir = bool(value)  # scripts read it back
            notice(f"{old} has no effect in trainwright and can be removed.")
        else:
            if new in kwargs:
                raise ConfigError(f"Both {old}= and its new name {new}= were given; keep only {new}=.")
            kwargs[new] = value
            notice(f"{old} is deprecated: use {new} instead.")
    if kwargs.get("use_legacy_prediction_loop") is False:
        kwargs.pop("use_legacy_prediction_loop")  # transformers' old default: nothing to do
    for old, reason in REMOVED.items():
        if old in kwargs:
            raise ConfigError(f"TrainingArguments({old}=...) is not supported by trainwright: {reason}. Remove {old}.")
    return kwargs


# ================================================================================================ validation
def validate(args: Any) -> None:
    """Check every value of ``args`` and normalise it, in place (see the module docstring)."""
    _parse_inputs(args)
    _check_numbers(args)
    _check_choices(args)
    _check_intervals(args)
    _check_precision_and_devices(args)
    _normalise_reporting(args)
    _check_best_model(args)
    if args.run_name is None:
        args.run_name = os.path.basename(os.path.normpath(args.output_dir)) or "run"
    if args.fsdp in (False, "", None, []):
        args.fsdp = None


def _parse_inputs(args) -> None:
    """JSON strings, unsupported values, paths, the old activation-checkpointing names, the tqdm default."""
    for name in DICT_FIELDS:  # JSON strings from the command line / YAML
        setattr(args, name, parse_dict_field(name, getattr(args, name)))
    for name in ("lr_scheduler_kwargs", "activation_checkpointing_kwargs", "gradient_checkpointing_kwargs"):
        if getattr(args, name) is not None and not isinstance(getattr(args, name), dict):
            raise ConfigError(f"{name}={getattr(args, name)!r} must be a dict or a JSON object string, "
                              f"e.g. {name}='{{\"key\": 1}}'.")
    if args.debug is None or args.debug == "":
        args.debug = []
    elif isinstance(args.debug, str):
        args.debug = args.debug.split()
    defaults = {f.name: f for f in dataclasses.fields(args)}
    for name, reason in UNSUPPORTED.items():
        default = field_default(defaults[name])
        value = getattr(args, name)
        if value != default and not (value in (None, "", [], False) and default in (None, "", [], False)):
            raise ConfigError(f"TrainingArguments({name}={value!r}) is not supported by trainwright: {reason}. "
                              f"Remove {name} from your arguments.")
    if args.output_dir is None:
        args.output_dir = "trainer_output"
    args.output_dir = os.path.expanduser(os.fspath(args.output_dir))
    if args.logging_dir is not None:
        args.logging_dir = os.path.expanduser(os.fspath(args.logging_dir))
    # gradient_checkpointing* are transformers 5.x's old names of activation_checkpointing*: the new name
    # wins, the old one mirrors it (the Trainer reads either)
    for old, new in (("gradient_checkpointing", "activation_checkpointing"),
                     ("gradient_checkpointing_kwargs", "activation_checkpointing_kwargs")):
        if getattr(args, new) is None and getattr(args, old) is not None:
            notice(f"{old} is deprecated: use {new} instead.")
            setattr(args, new, getattr(args, old))
        setattr(args, old, getattr(args, new))
    if args.activation_checkpointing is None:
        args.activation_checkpointing = args.gradient_checkpointing = False
    if args.disable_tqdm is None:  # as transformers: no bar when its logger is quieter than WARNING
        args.disable_tqdm = logging.getLogger("transformers").getEffectiveLevel() > logging.WARNING


def _positive_int(args, name: str, allow_zero: bool = False) -> None:
    value = getattr(args, name)
    if not isinstance(value, int) or isinstance(value, bool) or value < (0 if allow_zero else 1):
        raise ConfigError(f"{name}={value!r} must be an integer >= {0 if allow_zero else 1}; "
                          f"e.g. {name}={8 if 'batch' in name else 1}.")


def _check_numbers(args) -> None:
    for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
        _positive_int(args, name)
    _positive_int(args, "dataloader_num_workers", allow_zero=True)
    if not isinstance(args.max_steps, int) or args.max_steps == 0 or args.max_steps < -1:
        raise ConfigError(f"max_steps={args.max_steps!r} must be a positive integer, or -1 to train for "
                          "num_train_epochs.")
    if args.max_steps < 0 and not (args.num_train_epochs > 0):
        raise ConfigError(f"num_train_epochs={args.num_train_epochs!r} must be > 0 (or set max_steps).")
    if not (isinstance(args.learning_rate, (int, float)) and args.learning_rate >= 0
            and math.isfinite(args.learning_rate)):
        raise ConfigError(f"learning_rate={args.learning_rate!r} must be a finite number >= 0; typical fine-tuning "
                          "values are 1e-5 to 5e-5.")
    if args.weight_decay < 0:
        raise ConfigError(f"weight_decay={args.weight_decay!r} must be >= 0 (0.01 is common).")
    if not (0 <= args.adam_beta1 < 1 and 0 <= args.adam_beta2 < 1):
        raise ConfigError(f"adam_beta1={args.adam_beta1!r} and adam_beta2={args.adam_beta2!r} must be in [0, 1).")
    if args.adam_epsilon <= 0:
        raise ConfigError(f"adam_epsilon={args.adam_epsilon!r} must be > 0 (default 1e-8).")
    if args.max_grad_norm is not None and args.max_grad_norm < 0:
        raise ConfigError(f"max_grad_norm={args.max_grad_norm!r} must be >= 0 (0 or None turns clipping off).")
    if not 0 <= args.label_smoothing_factor < 1:
        raise ConfigError(f"label_smoothing_factor={args.label_smoothing_factor!r} must be in [0, 1).")
    if args.warmup_steps < 0:
        raise ConfigError(f"warmup_steps={args.warmup_steps!r} must be >= 0: an int is a number of steps, a float "
                          "< 1 a fraction of all steps.")
    if isinstance(args.warmup_steps, float) and args.warmup_steps >= 1 and not args.warmup_steps.is_integer():
        raise ConfigError(f"warmup_steps={args.warmup_steps!r}: a float must be < 1 (a fraction of all steps) or a "
                          "whole number of steps.")
    if args.torch_empty_cache_steps is not None:
        _positive_int(args, "torch_empty_cache_steps")


def _check_choices(args) -> None:
    args.eval_strategy = choice("eval_strategy", args.eval_strategy, STRATEGIES)
    args.logging_strategy = choice("logging_strategy", args.logging_strategy, STRATEGIES)
    args.save_strategy = choice("save_strategy", args.save_strategy, SAVE_STRATEGIES)
    args.hub_strategy = choice("hub_strategy", args.hub_strategy, HUB_STRATEGIES)
    args.chunked_cross_entropy = chunk_setting(args.chunked_cross_entropy)
    if args.hub_token == "<HUB_TOKEN>":  # the masked value to_dict() writes: no token
        args.hub_token = None
    args.optim = choice("optim", args.optim, OPTIMIZERS)
    args.lr_scheduler_type = scheduler_choice(args.lr_scheduler_type)
    if getattr(args.train_sampling_strategy, "value", args.train_sampling_strategy) == "batch_rebalance":
        raise ConfigError("train_sampling_strategy='batch_rebalance' is not supported by trainwright; use 'auto' "
                          "(length-grouped batches when that saves padding) or max_tokens_per_batch=N.")
    args.train_sampling_strategy = choice("train_sampling_strategy", args.train_sampling_strategy, SAMPLING)
    args.on_save_error = choice("on_save_error", args.on_save_error, ("continue", "stop"))
    args.log_level = choice("log_level", args.log_level, tuple(LOG_LEVELS))
    args.log_level_replica = choice("log_level_replica", args.log_level_replica, tuple(LOG_LEVELS))
    if args.dataloader_multiprocessing_context is not None:
        args.dataloader_multiprocessing_context = choice(
            "dataloader_multiprocessing_context", args.dataloader_multiprocessing_context,
            ("fork", "spawn", "forkserver"))
    if args.dataloader_num_workers == 0 and args.dataloader_prefetch_factor is not None:
        raise ConfigError("dataloader_prefetch_factor needs worker processes: set dataloader_num_workers > 0 "
                          "or remove dataloader_prefetch_factor.")


def _check_intervals(args) -> None:
    """Steps of logging / saving / evaluation: whole numbers of steps, or fractions of all steps."""
    if args.do_eval is False and args.eval_strategy != "no":
        args.do_eval = True  # as transformers: an evaluation strategy turns the script flag on
    if args.eval_strategy == "steps" and not args.eval_steps:
        args.eval_steps = args.logging_steps
    for name, strategy in (("logging_steps", args.logging_strategy), ("save_steps", args.save_strategy),
                           ("eval_steps", args.eval_strategy)):
        value = getattr(args, name)
        if value is None or strategy != "steps":
            continue
        if value <= 0 or (value > 1 and not float(value).is_integer()):
            raise ConfigError(f"{name}={value!r} must be a positive integer number of steps, or a float in (0, 1) as "
                              "a fraction of all steps.")
        if value >= 1:
            setattr(args, name, int(value))
    if args.max_tokens_per_batch is not None and args.max_tokens_per_batch < 1:
        raise ConfigError(f"max_tokens_per_batch={args.max_tokens_per_batch!r} must be a positive number of "
                          "(padded) tokens per batch.")
    if args.max_tokens_per_batch and args.auto_find_batch_size:
        raise ConfigError("auto_find_batch_size=True lowers per_device_train_batch_size, which token-budget batches "
                          f"(max_tokens_per_batch={args.max_tokens_per_batch}) do not use: lower max_tokens_per_batch "
                          "instead, or drop max_tokens_per_batch to search the batch size.")
    if args.max_consecutive_nonfinite_steps < 1:
        raise ConfigError("max_consecutive_nonfinite_steps must be >= 1.")


def _check_precision_and_devices(args) -> None:
    if args.fp16 and args.bf16:
        raise ConfigError("fp16=True and bf16=True are both set: choose one (bf16 is preferred where the hardware "
                          "has it).")
    if args.fp16_full_eval and args.bf16_full_eval:
        raise ConfigError("fp16_full_eval=True and bf16_full_eval=True are both set: choose one.")
    if (args.torch_compile_mode is not None or args.torch_compile_backend is not None) and not args.torch_compile:
        args.torch_compile = True  # as transformers: a compile mode or backend turns compiling on
    if args.torch_compile and args.torch_compile_backend is None:
        args.torch_compile_backend = "inductor"
    if args.use_cpu:
        args.dataloader_pin_memory = False
    args.mixed_precision = "fp16" if args.fp16 else "bf16" if args.bf16 else "no"


def _normalise_reporting(args) -> None:
    if isinstance(args.report_to, str):
        args.report_to = [] if args.report_to in ("none", "") else ["all"] if args.report_to == "all" \
            else [args.report_to]
    elif args.report_to is None:
        args.report_to = []
    else:
        args.report_to = [r for r in args.report_to if r != "none"]
    if isinstance(args.include_num_input_tokens_seen, bool):
        args.include_num_input_tokens_seen = "all" if args.include_num_input_tokens_seen else "no"


def _check_best_model(args) -> None:
    """metric_for_best_model, greater_is_better, load_best_model_at_end and the metric-stepped schedules."""
    if args.lr_scheduler_type in METRIC_SCHEDULERS and args.eval_strategy == "no":
        raise ConfigError(f"lr_scheduler_type={args.lr_scheduler_type!r} lowers the learning rate from evaluation "
                          "results: set eval_strategy='epoch' or 'steps' (and an eval_dataset).")
    if (args.load_best_model_at_end or args.lr_scheduler_type in METRIC_SCHEDULERS) and \
            args.metric_for_best_model is None:
        args.metric_for_best_model = "loss"
    if args.save_strategy == "best" and args.metric_for_best_model is None:
        raise ConfigError("save_strategy='best' needs metric_for_best_model (e.g. metric_for_best_model='accuracy').")
    if args.greater_is_better is None and args.metric_for_best_model is not None:
        args.greater_is_better = not args.metric_for_best_model.endswith("loss")
    if not args.load_best_model_at_end:
        return
    if args.save_strategy not in ("best",) and args.eval_strategy != args.save_strategy:
        raise ConfigError(
            f"load_best_model_at_end=True needs the save and evaluation strategies to match, "
            f"got eval_strategy={args.eval_strategy!r} and save_strategy={args.save_strategy!r}: "
            f"set both to 'epoch' or both to 'steps'.")
    if args.eval_strategy == "no":
        raise ConfigError("load_best_model_at_end=True needs evaluations: set eval_strategy='epoch' or 'steps'.")
    if args.eval_strategy == "steps" and args.save_strategy == "steps" and isinstance(args.save_steps, int) \
            and isinstance(args.eval_steps, int) and args.save_steps % args.eval_steps != 0:
        raise ConfigError(
            f"load_best_model_at_end=True needs save_steps ({args.save_steps}) to be a multiple of "
            f"eval_steps ({args.eval_steps}), so every checkpoint has an evaluation.")


# ================================================================================================ value parsers
def chunk_setting(value: Any) -> bool | int:
    """chunked_cross_entropy from Python (True/False/int) or text ("true", "false", "1024")."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("true", "auto"):
            return True
        if text in ("false", "none", ""):
            return False
        if text.isdigit():
            return chunk_setting(int(text))
        raise ConfigError(f"chunked_cross_entropy={value!r} must be true (automatic chunk size), false, or a "
                          "positive number of tokens per chunk (e.g. 1024).")
    if value is None:
        return False
    if isinstance(value, bool) or (isinstance(value, int) and value >= 1):
        return value
    raise ConfigError(f"chunked_cross_entropy={value!r} must be true (automatic chunk size), false, or a "
                      "positive number of tokens per chunk (e.g. 1024).")


def choice(name: str, value: Any, valid: tuple) -> str:
    """``value`` (or an enum's value) if it is one of ``valid``; else ConfigError naming the closest one."""
    value = getattr(value, "value", value)  # accept HF's enums (IntervalStrategy.EPOCH, ...)
    if value not in valid:
        raise ConfigError(f"{name}={value!r} is not valid; choose one of {', '.join(map(repr, valid))}."
                          f"{did_you_mean(value, valid)}")
    return value


def scheduler_choice(value: Any) -> str:
    """Any transformers SchedulerType name: the 5.x list without importing transformers, and, for a name
    added by a later transformers release, transformers' own SchedulerType."""
    value = getattr(value, "value", value)
    if value in SCHEDULERS:
        return value
    try:
        from transformers.trainer_utils import SchedulerType
        return SchedulerType(value).value
    except (ImportError, ValueError):
        return choice("lr_scheduler_type", value, SCHEDULERS)
