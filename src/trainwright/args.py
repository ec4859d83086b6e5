"""TrainingArguments: transformers 5.x names, defaults and field types, validated up front, serialised as JSON.

Every value is checked when the object is built (or, for checks that need the datasets, when
``Trainer(...)`` is built), so a mistake fails before the first training step with a message that
names the argument and the fix. Renamed arguments from older transformers releases keep working
with a one-line notice; arguments that transformers has but trainwright does not implement raise
instead of being ignored.

The fields transformers also has carry transformers' own annotations and parser metadata, so
``transformers.HfArgumentParser`` builds the same command-line options from this class (see
:mod:`trainwright.args_compat`); the run-time API lives in :mod:`trainwright.args_runtime` and the
``set_*`` helpers in :mod:`trainwright.args_setters`.
"""
from __future__ import annotations

import dataclasses
import difflib
import enum
import json
import logging
import math
import os
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

from .args_compat import convert_transformers_args, hf_types, parse_dict_field
from .args_runtime import LOG_LEVELS, ProcessView
from .args_setters import Setters
from .errors import ConfigError

STRATEGIES = ("no", "steps", "epoch")
SAVE_STRATEGIES = ("no", "steps", "epoch", "best")
HUB_STRATEGIES = ("end", "every_save", "checkpoint", "all_checkpoints")
OPTIMIZERS = ("adamw_torch", "adamw_torch_fused", "adamw_torch_foreach", "adamw", "sgd", "adafactor", "adagrad", "rmsprop")
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
    "auto_find_batch_size": "automatic batch-size search is not implemented; set per_device_train_batch_size",
    "optim_target_modules": "GaLore/APOLLO-style target modules are not implemented",
    "accelerator_config": "trainwright does not use accelerate; distributed settings are ddp_* / fsdp*",
    "parallelism_config": "trainwright does not use accelerate's parallelism config; use fsdp / torchrun",
    "eval_use_gather_object": "evaluation gathers tensors only",
    "batch_eval_metrics": "compute_metrics is called once on the whole evaluation set",
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


def _notice(message: str) -> None:
    """A FutureWarning attributed to the user's line (the first frame outside trainwright and dataclasses)."""
    level, frame = 2, sys._getframe(1)
    while frame is not None and (frame.f_code.co_filename.startswith(_PACKAGE_DIR) or
                                 frame.f_code.co_filename == "<string>"):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, FutureWarning, stacklevel=level)


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _arg(default=dataclasses.MISSING, help: str = "", *, factory=dataclasses.MISSING, **metadata):
    """A field with argparse metadata for HfArgumentParser (help, and nargs / const / choices where needed)."""
    return field(default=default, default_factory=factory, metadata={"help": help, **metadata})


@dataclass
class TrainingArguments(ProcessView, Setters):
    """transformers' TrainingArguments (5.x fields, defaults and annotations) plus trainwright's additions.

    Works with ``transformers.HfArgumentParser`` (command line, JSON, YAML, dict). After building, enum fields
    hold their string values ("epoch", "cosine", ...), which compare equal to transformers' enums.
    """

    output_dir: str | None = _arg(None, "Where checkpoints, the model and the run's files are written "
                                        "(default 'trainer_output'); '~' is expanded.")
    # --- schedule and batches
    per_device_train_batch_size: int = _arg(8, "Batch size per device for training.")
    num_train_epochs: float = _arg(3.0, "Number of training epochs (a fraction trains part of the last one).")
    max_steps: int = _arg(-1, "Number of optimizer steps; overrides num_train_epochs when positive.")
    # --- optimizer and schedule
    learning_rate: float = _arg(5e-5, "Peak learning rate.")
    lr_scheduler_type: hf_types.SchedulerType | str = _arg(
        "linear", "Learning-rate schedule: any transformers SchedulerType name.")
    lr_scheduler_kwargs: dict | str | None = _arg(
        None, "Extra keyword arguments of the schedule, as a dict or a JSON string, e.g. '{\"num_cycles\": 0.5}'.")
    warmup_steps: float = _arg(0, "Linear warmup: a number of steps (>= 1) or a fraction of all steps (< 1).")
    optim: hf_types.OptimizerNames | str = _arg(
        "adamw_torch_fused", "Optimizer: adamw_torch_fused, adamw_torch, adamw_torch_foreach, sgd, adafactor, "
                             "adagrad or rmsprop.")
    optim_args: str | None = _arg(None, "Extra optimizer keywords as 'key=value,key=value'.")
    weight_decay: float = _arg(0.0, "Weight decay (not applied to biases and normalisation weights).")
    adam_beta1: float = _arg(0.9, "Adam beta1.")
    adam_beta2: float = _arg(0.999, "Adam beta2.")
    adam_epsilon: float = _arg(1e-8, "Adam epsilon.")
    optim_target_modules: None | str | list[str] = _arg(None, "Not supported (GaLore/APOLLO target modules).")
    gradient_accumulation_steps: int = _arg(1, "Micro-batches accumulated per optimizer step.")
    average_tokens_across_devices: bool = _arg(True, "Normalise the loss by the label items of all processes.")
    max_grad_norm: float = _arg(1.0, "Gradient clipping norm; 0 turns clipping off.")
    label_smoothing_factor: float = _arg(0.0, "Label smoothing for the cross-entropy loss.")
    # --- precision and speed
    bf16: bool = _arg(False, "bfloat16 mixed precision.")
    fp16: bool = _arg(False, "float16 mixed precision with a gradient scaler.")
    bf16_full_eval: bool = _arg(False, "Evaluate with the model cast to bfloat16.")
    fp16_full_eval: bool = _arg(False, "Evaluate with the model cast to float16.")
    tf32: bool | None = _arg(None, "Set the TF32 matmul flags on CUDA.")
    activation_checkpointing: bool | None = _arg(
        None, "Recompute activations in backward to save memory.", nargs="?", const=True)
    activation_checkpointing_kwargs: dict[str, Any] | str | None = _arg(
        None, "Keyword arguments of gradient_checkpointing_enable, as a dict or a JSON string.")
    gradient_checkpointing: bool | None = _arg(
        None, "Old name of activation_checkpointing.", nargs="?", const=True)
    gradient_checkpointing_kwargs: dict[str, Any] | str | None = _arg(
        None, "Old name of activation_checkpointing_kwargs.")
    torch_compile: bool = _arg(False, "Compile the model with torch.compile.")
    torch_compile_backend: str | None = _arg(None, "torch.compile backend; setting it turns torch_compile on.")
    torch_compile_mode: str | None = _arg(None, "torch.compile mode; setting it turns torch_compile on.")
    use_liger_kernel: bool = _arg(False, "Not supported (Liger kernels).")
    liger_kernel_config: dict[str, bool] | None = _arg(None, "Not supported (Liger kernels).")
    use_cache: bool = _arg(False, "Value of model.config.use_cache while training.")
    neftune_noise_alpha: float | None = _arg(None, "NEFTune: noise of this scale on the input embeddings while training.")
    torch_empty_cache_steps: int | None = _arg(None, "Empty the device cache every N steps.")
    auto_find_batch_size: bool = _arg(False, "Not supported (automatic batch-size search).")
    # --- logging
    logging_dir: str | None = _arg(None, "TensorBoard directory (trainwright keeps this transformers 4.x "
                                         "argument); '~' is expanded.")
    logging_strategy: hf_types.IntervalStrategy | str = _arg("steps", "When to log: no, steps or epoch.")
    logging_steps: float = _arg(500, "Log every N steps (or a fraction of all steps when < 1).")
    logging_first_step: bool = _arg(False, "Also log the first step.")
    log_on_each_node: bool = _arg(True, "Log on the main process of every node, not only of the job.")
    logging_nan_inf_filter: bool = _arg(True, "Accepted; trainwright always leaves NaN/inf steps out of the "
                                              "logged mean loss and counts them.")
    include_num_input_tokens_seen: str | bool = _arg("no", "Count input tokens: all, non_padding or no.")
    log_level: str = _arg("passive", "Log level of the main process (passive: leave it as it is).",
                          choices=list(LOG_LEVELS))
    log_level_replica: str = _arg("warning", "Log level of the other processes.", choices=list(LOG_LEVELS))
    disable_tqdm: bool | None = _arg(None, "Print logs instead of a progress bar.")
    report_to: None | str | list[str] = _arg("none", "Trackers: tensorboard, mlflow, wandb, all or none.")
    run_name: str | None = _arg(None, "Run name for the trackers (default: the output directory's name).")
    project: str = _arg("huggingface", "Project name for the trackers that have one.")
    trackio_space_id: str | None = _arg(None, "report_to trackio: Hub Space of the dashboard (local when unset).")
    trackio_bucket_id: str | None = _arg(None, "report_to trackio: Hub bucket that stores the logs.")
    trackio_static_space_id: str | None | Literal[False] = _arg(None, "report_to trackio: static Space made after "
                                                                      "training (False: none).")
    # --- evaluation
    eval_strategy: hf_types.IntervalStrategy | str = _arg("no", "When to evaluate: no, steps or epoch.")
    eval_steps: float | None = _arg(None, "Evaluate every N steps (default: logging_steps).")
    eval_delay: float = _arg(0, "Epochs or steps to wait before the first evaluation.")
    per_device_eval_batch_size: int = _arg(8, "Batch size per device for evaluation.")
    prediction_loss_only: bool = _arg(False, "Evaluation returns the loss only.")
    eval_on_start: bool = _arg(False, "Evaluate once before training.")
    eval_do_concat_batches: bool = _arg(True, "Concatenate the predictions of all batches.")
    eval_use_gather_object: bool = _arg(False, "Not supported (gather_object).")
    eval_accumulation_steps: int | None = _arg(None, "Move predictions to the CPU every N batches.")
    include_for_metrics: list[str] = _arg(help="Also give compute_metrics: inputs and/or loss.", factory=list)
    batch_eval_metrics: bool = _arg(False, "Not supported (batched compute_metrics).")
    # --- checkpoints
    save_only_model: bool = _arg(False, "Checkpoints hold the model only (no optimizer state: no exact resume).")
    save_strategy: hf_types.SaveStrategy | str = _arg("steps", "When to save: no, steps, epoch or best.")
    save_steps: float = _arg(500, "Save every N steps (or a fraction of all steps when < 1).")
    save_on_each_node: bool = _arg(False, "Save on the main process of every node.")
    save_total_limit: int | None = _arg(None, "Keep at most N checkpoints (the best one is always kept).")
    enable_jit_checkpoint: bool = _arg(False, "Not supported; SIGTERM always writes a checkpoint.")
    push_to_hub: bool = _arg(False, "Push the model to the Hub (see docs/sharing.md).")
    hub_token: str | None = _arg(None, "Token for the Hub (default: the logged-in token).")
    hub_private_repo: bool | None = _arg(None, "Create the Hub repository as private.")
    hub_model_id: str | None = _arg(None, "Hub repository to push to (default: the output_dir name).")
    hub_strategy: hf_types.HubStrategy | str = _arg("every_save", "What to push and when: end, every_save, checkpoint or all_checkpoints.")
    hub_always_push: bool = _arg(False, "Push every save even while the previous push runs.")
    hub_revision: str | None = _arg(None, "Branch of the Hub repository to push to.")
    load_best_model_at_end: bool = _arg(False, "Load the best checkpoint at the end of training.")
    metric_for_best_model: str | None = _arg(None, "Metric that picks the best checkpoint (default: loss).")
    greater_is_better: bool | None = _arg(None, "Whether a larger metric is better (default: not for *loss).")
    ignore_data_skip: bool = _arg(False, "On resume, do not fast-forward the data (allows changed batch settings).")
    restore_callback_states_from_checkpoint: bool = _arg(False, "Restore the callbacks' states on resume.")
    # --- randomness and devices
    full_determinism: bool = _arg(False, "Deterministic algorithms everywhere (slower).")
    seed: int = _arg(42, "Random seed set at the start of training.")
    data_seed: int | None = _arg(None, "Seed of the data order (default: seed).")
    use_cpu: bool = _arg(False, "Run on the CPU even when a GPU is present.")
    accelerator_config: dict | str | None = _arg(None, "Not supported (accelerate is not used).")
    parallelism_config: hf_types.ParallelismConfig | None = _arg(None, "Not supported (accelerate is not used).")
    # --- data loading
    dataloader_drop_last: bool = _arg(False, "Drop the last incomplete training batch.")
    dataloader_num_workers: int = _arg(0, "Data loader worker processes.")
    dataloader_pin_memory: bool = _arg(True, "Pin host memory for faster copies to the GPU.")
    dataloader_persistent_workers: bool = _arg(False, "Keep the data loader workers between epochs.")
    dataloader_prefetch_factor: int | None = _arg(None, "Batches loaded in advance per worker.")
    dataloader_multiprocessing_context: str | None = _arg(
        None, "Start method of the data loader workers.", choices=["fork", "spawn", "forkserver"])
    dataloader_in_order: bool = _arg(True, "Yield batches in order (False: as soon as ready).")
    remove_unused_columns: bool = _arg(True, "Drop dataset columns the model's forward does not take.")
    label_names: list[str] | None = _arg(None, "Input keys that hold the labels.")
    train_sampling_strategy: str = _arg(
        "auto", "Training order: auto (length-grouped when that saves padding, else random), random, sequential "
                "or group_by_length.", choices=[*SAMPLING, "batch_rebalance"])
    length_column_name: str = _arg("length", "Column of precomputed lengths for length grouping.")
    # --- distributed
    ddp_find_unused_parameters: bool | None = _arg(None, "DDP find_unused_parameters.")
    ddp_bucket_cap_mb: int | None = _arg(None, "DDP bucket_cap_mb.")
    ddp_broadcast_buffers: bool | None = _arg(None, "DDP broadcast_buffers.")
    ddp_static_graph: bool | None = _arg(None, "DDP static_graph.")
    ddp_backend: str | None = _arg(None, "Process group backend (default: nccl on CUDA, gloo on the CPU).",
                                   choices=["nccl", "gloo", "mpi", "xccl", "hccl", "cncl", "mccl"])
    ddp_timeout: int = _arg(1800, "Process group timeout in seconds.")
    fsdp: str | None = _arg(None, "Shard with FSDP2 under torchrun: --fsdp, or options such as 'full_shard offload'.",
                            nargs="?", const=True)
    fsdp_config: dict[str, Any] | str | None = _arg(None, "FSDP settings: a dict, a JSON string or a JSON file path.")
    deepspeed: dict | str | None = _arg(None, "Not supported (DeepSpeed).")
    debug: str | list[hf_types.DebugOption] = _arg("", "Not supported (debug modes).")
    skip_memory_metrics: bool = _arg(True, "Leave memory figures out of the metrics.")
    # --- script flags (not used by the Trainer; read by scripts)
    do_train: bool = _arg(False, "Script flag: run training.")
    do_eval: bool = _arg(False, "Script flag: run evaluation (turned on by an eval_strategy other than no).")
    do_predict: bool = _arg(False, "Script flag: run prediction.")
    resume_from_checkpoint: str | None = _arg(None, "Script flag: checkpoint to resume from.")
    local_rank: int = _arg(-1, "Set by the old torch.distributed.launch; prefer local_process_index.")
    # --- trainwright additions
    max_tokens_per_batch: int | None = _arg(None, "trainwright: token-budget batches of at most N padded tokens.")
    max_consecutive_nonfinite_steps: int = _arg(10, "trainwright: stop after N consecutive NaN/inf steps.")
    on_save_error: str = _arg("continue", "trainwright: what a failed checkpoint write does: continue or stop.",
                              choices=["continue", "stop"])
    write_report: bool = _arg(True, "trainwright: write report.html at the end of train().")
    # True / False / tokens per chunk; annotated str for HfArgumentParser ("true", "false", "1024"), read by _validate
    chunked_cross_entropy: str | None = _arg(
        False, "trainwright: causal-LM loss without the logits tensor: true (automatic chunk size), false, or "
               "a number of tokens per chunk.")

    # read by transformers' example Trainer subclasses (trainer_qa.py); trainwright has one evaluation loop
    use_legacy_prediction_loop = False
    # transformers 4.x scripts read it; set by overwrite_output_dir=... (which has no other effect here)
    overwrite_output_dir = False

    def __post_init__(self):
        self._validate()

    # ------------------------------------------------------------------ validation and post-processing
    def _validate(self):
        """Check every value and normalise as transformers' __post_init__ does. Runs again after set_*."""
        for name in DICT_FIELDS:  # JSON strings from the command line / YAML
            setattr(self, name, parse_dict_field(name, getattr(self, name)))
        for name in ("lr_scheduler_kwargs", "activation_checkpointing_kwargs", "gradient_checkpointing_kwargs"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), dict):
                raise ConfigError(f"{name}={getattr(self, name)!r} must be a dict or a JSON object string, "
                                  f"e.g. {name}='{{\"key\": 1}}'.")
        if self.debug is None or self.debug == "":
            self.debug = []
        elif isinstance(self.debug, str):
            self.debug = self.debug.split()
        for name, reason in UNSUPPORTED.items():
            default = _FIELD_DEFAULTS[name]
            value = getattr(self, name)
            if value != default and not (value in (None, "", [], False) and default in (None, "", [], False)):
                raise ConfigError(f"TrainingArguments({name}={value!r}) is not supported by trainwright: {reason}. "
                                  f"Remove {name} from your arguments.")
        if self.output_dir is None:
            self.output_dir = "trainer_output"
        self.output_dir = os.path.expanduser(os.fspath(self.output_dir))
        if self.logging_dir is not None:
            self.logging_dir = os.path.expanduser(os.fspath(self.logging_dir))
        # gradient_checkpointing* are transformers 5.x's old names of activation_checkpointing*: the new name
        # wins, the old one mirrors it (the Trainer reads either)
        for old, new in (("gradient_checkpointing", "activation_checkpointing"),
                         ("gradient_checkpointing_kwargs", "activation_checkpointing_kwargs")):
            if getattr(self, new) is None and getattr(self, old) is not None:
                _notice(f"{old} is deprecated: use {new} instead.")
                setattr(self, new, getattr(self, old))
            setattr(self, old, getattr(self, new))
        if self.activation_checkpointing is None:
            self.activation_checkpointing = self.gradient_checkpointing = False
        if self.disable_tqdm is None:  # as transformers: no bar when its logger is quieter than WARNING
            self.disable_tqdm = logging.getLogger("transformers").getEffectiveLevel() > logging.WARNING

        def positive_int(name, allow_zero=False):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < (0 if allow_zero else 1):
                raise ConfigError(f"{name}={value!r} must be an integer >= {0 if allow_zero else 1}; "
                                  f"e.g. {name}={8 if 'batch' in name else 1}.")

        positive_int("per_device_train_batch_size")
        positive_int("per_device_eval_batch_size")
        positive_int("gradient_accumulation_steps")
        positive_int("dataloader_num_workers", allow_zero=True)
        if not isinstance(self.max_steps, int) or self.max_steps == 0 or self.max_steps < -1:
            raise ConfigError(f"max_steps={self.max_steps!r} must be a positive integer, or -1 to train for num_train_epochs.")
        if self.max_steps < 0 and not (self.num_train_epochs > 0):
            raise ConfigError(f"num_train_epochs={self.num_train_epochs!r} must be > 0 (or set max_steps).")
        if not (isinstance(self.learning_rate, (int, float)) and self.learning_rate >= 0 and math.isfinite(self.learning_rate)):
            raise ConfigError(f"learning_rate={self.learning_rate!r} must be a finite number >= 0; typical fine-tuning values are 1e-5 to 5e-5.")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay={self.weight_decay!r} must be >= 0 (0.01 is common).")
        if not (0 <= self.adam_beta1 < 1 and 0 <= self.adam_beta2 < 1):
            raise ConfigError(f"adam_beta1={self.adam_beta1!r} and adam_beta2={self.adam_beta2!r} must be in [0, 1).")
        if self.adam_epsilon <= 0:
            raise ConfigError(f"adam_epsilon={self.adam_epsilon!r} must be > 0 (default 1e-8).")
        if self.max_grad_norm is not None and self.max_grad_norm < 0:
            raise ConfigError(f"max_grad_norm={self.max_grad_norm!r} must be >= 0 (0 or None turns clipping off).")
        if not 0 <= self.label_smoothing_factor < 1:
            raise ConfigError(f"label_smoothing_factor={self.label_smoothing_factor!r} must be in [0, 1).")
        if self.warmup_steps < 0:
            raise ConfigError(f"warmup_steps={self.warmup_steps!r} must be >= 0: an int is a number of steps, a float < 1 a fraction of all steps.")
        if isinstance(self.warmup_steps, float) and self.warmup_steps >= 1 and not self.warmup_steps.is_integer():
            raise ConfigError(f"warmup_steps={self.warmup_steps!r}: a float must be < 1 (a fraction of all steps) or a whole number of steps.")
        if self.torch_empty_cache_steps is not None:
            positive_int("torch_empty_cache_steps")

        self.eval_strategy = _choice("eval_strategy", self.eval_strategy, STRATEGIES)
        self.logging_strategy = _choice("logging_strategy", self.logging_strategy, STRATEGIES)
        self.save_strategy = _choice("save_strategy", self.save_strategy, SAVE_STRATEGIES)
        self.hub_strategy = _choice("hub_strategy", self.hub_strategy, HUB_STRATEGIES)
        self.chunked_cross_entropy = _chunk_setting(self.chunked_cross_entropy)
        if self.hub_token == "<HUB_TOKEN>":  # the masked value to_dict() writes: no token
            self.hub_token = None
        self.optim = _choice("optim", self.optim, OPTIMIZERS)
        self.lr_scheduler_type = _scheduler_choice(self.lr_scheduler_type)
        if getattr(self.train_sampling_strategy, "value", self.train_sampling_strategy) == "batch_rebalance":
            raise ConfigError("train_sampling_strategy='batch_rebalance' is not supported by trainwright; use 'auto' "
                              "(length-grouped batches when that saves padding) or max_tokens_per_batch=N.")
        self.train_sampling_strategy = _choice("train_sampling_strategy", self.train_sampling_strategy, SAMPLING)
        self.on_save_error = _choice("on_save_error", self.on_save_error, ("continue", "stop"))
        self.log_level = _choice("log_level", self.log_level, tuple(LOG_LEVELS))
        self.log_level_replica = _choice("log_level_replica", self.log_level_replica, tuple(LOG_LEVELS))
        if self.dataloader_multiprocessing_context is not None:
            self.dataloader_multiprocessing_context = _choice(
                "dataloader_multiprocessing_context", self.dataloader_multiprocessing_context, ("fork", "spawn", "forkserver"))
        if self.dataloader_num_workers == 0 and self.dataloader_prefetch_factor is not None:
            raise ConfigError("dataloader_prefetch_factor needs worker processes: set dataloader_num_workers > 0 "
                              "or remove dataloader_prefetch_factor.")

        if self.do_eval is False and self.eval_strategy != "no":
            self.do_eval = True  # as transformers: an evaluation strategy turns the script flag on
        if self.eval_strategy == "steps" and not self.eval_steps:
            self.eval_steps = self.logging_steps
        for name, strategy in (("logging_steps", self.logging_strategy), ("save_steps", self.save_strategy),
                               ("eval_steps", self.eval_strategy)):
            value = getattr(self, name)
            if value is None or strategy != "steps":
                continue
            if value <= 0 or (value > 1 and not float(value).is_integer()):
                raise ConfigError(f"{name}={value!r} must be a positive integer number of steps, or a float in (0, 1) as a fraction of all steps.")
            if value >= 1:
                setattr(self, name, int(value))
        if self.max_tokens_per_batch is not None and self.max_tokens_per_batch < 1:
            raise ConfigError(f"max_tokens_per_batch={self.max_tokens_per_batch!r} must be a positive number of (padded) tokens per batch.")
        if self.max_consecutive_nonfinite_steps < 1:
            raise ConfigError("max_consecutive_nonfinite_steps must be >= 1.")

        if self.fp16 and self.bf16:
            raise ConfigError("fp16=True and bf16=True are both set: choose one (bf16 is preferred where the hardware has it).")
        if self.fp16_full_eval and self.bf16_full_eval:
            raise ConfigError("fp16_full_eval=True and bf16_full_eval=True are both set: choose one.")
        if (self.torch_compile_mode is not None or self.torch_compile_backend is not None) and not self.torch_compile:
            self.torch_compile = True  # as transformers: a compile mode or backend turns compiling on
        if self.torch_compile and self.torch_compile_backend is None:
            self.torch_compile_backend = "inductor"
        if self.use_cpu:
            self.dataloader_pin_memory = False
        self.mixed_precision = "fp16" if self.fp16 else "bf16" if self.bf16 else "no"

        if isinstance(self.report_to, str):
            self.report_to = [] if self.report_to in ("none", "") else ["all"] if self.report_to == "all" else [self.report_to]
        elif self.report_to is None:
            self.report_to = []
        else:
            self.report_to = [r for r in self.report_to if r != "none"]
        if isinstance(self.include_num_input_tokens_seen, bool):
            self.include_num_input_tokens_seen = "all" if self.include_num_input_tokens_seen else "no"

        if self.lr_scheduler_type in METRIC_SCHEDULERS and self.eval_strategy == "no":
            raise ConfigError(f"lr_scheduler_type={self.lr_scheduler_type!r} lowers the learning rate from evaluation "
                              "results: set eval_strategy='epoch' or 'steps' (and an eval_dataset).")
        if (self.load_best_model_at_end or self.lr_scheduler_type in METRIC_SCHEDULERS) and self.metric_for_best_model is None:
            self.metric_for_best_model = "loss"
        if self.save_strategy == "best" and self.metric_for_best_model is None:
            raise ConfigError("save_strategy='best' needs metric_for_best_model (e.g. metric_for_best_model='accuracy').")
        if self.greater_is_better is None and self.metric_for_best_model is not None:
            self.greater_is_better = not self.metric_for_best_model.endswith("loss")
        if self.load_best_model_at_end:
            if self.save_strategy not in ("best",) and self.eval_strategy != self.save_strategy:
                raise ConfigError(
                    f"load_best_model_at_end=True needs the save and evaluation strategies to match, "
                    f"got eval_strategy={self.eval_strategy!r} and save_strategy={self.save_strategy!r}: "
                    f"set both to 'epoch' or both to 'steps'.")
            if self.eval_strategy == "no":
                raise ConfigError("load_best_model_at_end=True needs evaluations: set eval_strategy='epoch' or 'steps'.")
            if self.eval_strategy == "steps" and self.save_strategy == "steps" and isinstance(self.save_steps, int) \
                    and isinstance(self.eval_steps, int) and self.save_steps % self.eval_steps != 0:
                raise ConfigError(
                    f"load_best_model_at_end=True needs save_steps ({self.save_steps}) to be a multiple of "
                    f"eval_steps ({self.eval_steps}), so every checkpoint has an evaluation.")
        if self.run_name is None:
            self.run_name = os.path.basename(os.path.normpath(self.output_dir)) or "run"
        if self.fsdp in (False, "", None, []):
            self.fsdp = None

    # ------------------------------------------------------------------ JSON (never pickle)
    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON-able values: enums as their values, dtypes as strings ("float32"), a set token
        masked, anything else that JSON cannot hold as its repr."""
        out = {}
        for f in dataclasses.fields(self):
            if not f.init:
                continue
            value = _jsonable(getattr(self, f.name))
            if f.name.endswith("_token") and value is not None:
                value = f"<{f.name.upper()}>"
            out[f.name] = value
        return out

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def to_sanitized_dict(self) -> dict[str, Any]:
        """Flat str/int/float/bool values (plus train_batch_size / eval_batch_size), for trackers' hyperparameter
        tables, as transformers."""
        out = {**self.to_dict(), "train_batch_size": self.train_batch_size, "eval_batch_size": self.eval_batch_size}
        return {k: v if type(v) in (bool, int, float, str) else str(v) for k, v in out.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainingArguments":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def from_json_file(cls, path: str) -> "TrainingArguments":
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))

    @classmethod
    def from_transformers(cls, hf_args) -> "TrainingArguments":
        """trainwright arguments from a ``transformers.TrainingArguments`` (or ``Seq2SeqTrainingArguments``):
        the fields set away from transformers' defaults are carried over and validated here (an unsupported
        value raises naming the field); the others keep trainwright's defaults."""
        return convert_transformers_args(cls, hf_args)

    def save_to_json(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.to_json_string() + "\n")

    def __str__(self):
        return f"{self.__class__.__name__}(\n" + ",\n".join(f"  {k}={v!r}" for k, v in self.to_dict().items()) + "\n)"

    __repr__ = __str__


def _jsonable(value):
    if isinstance(value, enum.Enum):
        return _jsonable(value.value)
    if type(value).__name__ == "dtype" and type(value).__module__ == "torch":
        return str(value).removeprefix("torch.")
    if isinstance(value, dict):
        return {str(k) if not isinstance(k, str) else k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "to_dict"):  # GenerationConfig, AcceleratorConfig, ...
        try:
            return _jsonable(value.to_dict())
        except Exception:
            pass
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return repr(value)


def _chunk_setting(value):
    """chunked_cross_entropy from Python (True/False/int) or text ("true", "false", "1024")."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("true", "auto"):
            return True
        if text in ("false", "none", ""):
            return False
        if text.isdigit():
            return _chunk_setting(int(text))
        raise ConfigError(f"chunked_cross_entropy={value!r} must be true (automatic chunk size), false, or a "
                          "positive number of tokens per chunk (e.g. 1024).")
    if value is None:
        return False
    if isinstance(value, bool) or (isinstance(value, int) and value >= 1):
        return value
    raise ConfigError(f"chunked_cross_entropy={value!r} must be true (automatic chunk size), false, or a "
                      "positive number of tokens per chunk (e.g. 1024).")


def _choice(name: str, value, valid: tuple) -> str:
    value = getattr(value, "value", value)  # accept HF's enums (IntervalStrategy.EPOCH, ...)
    if value not in valid:
        near = difflib.get_close_matches(str(value), valid, n=1)
        hint = f" Did you mean {near[0]!r}?" if near else ""
        raise ConfigError(f"{name}={value!r} is not valid; choose one of {', '.join(map(repr, valid))}.{hint}")
    return value


def _scheduler_choice(value) -> str:
    """Any transformers SchedulerType name: the 5.x list without importing transformers, and, for a name
    added by a later transformers release, transformers' own SchedulerType."""
    value = getattr(value, "value", value)
    if value in SCHEDULERS:
        return value
    try:
        from transformers.trainer_utils import SchedulerType
        return SchedulerType(value).value
    except (ImportError, ValueError):
        return _choice("lr_scheduler_type", value, SCHEDULERS)


_FIELD_DEFAULTS = {
    f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory())
    for f in dataclasses.fields(TrainingArguments)
}
_dataclass_init = TrainingArguments.__init__


def _init_with_aliases(self, *args, **kwargs):
    """Map old names to new ones (with a notice) and reject unknown names with the nearest match."""
    for old, new in RENAMED.items():
        if old not in kwargs:
            continue
        value = kwargs.pop(old)
        if old == "warmup_ratio":
            if value and not kwargs.get("warmup_steps"):
                kwargs["warmup_steps"] = float(value)
            _notice("warmup_ratio is deprecated: use warmup_steps=<float below 1> (a fraction of all steps).")
        elif old == "group_by_length":
            if "train_sampling_strategy" not in kwargs:  # an explicit False asks for transformers' random order
                kwargs["train_sampling_strategy"] = "group_by_length" if value else "random"
            _notice("group_by_length is deprecated: use train_sampling_strategy='group_by_length' (True) or "
                    "'random' (False); the default 'auto' groups by length when that saves padding.")
        elif new is None:
            if old == "overwrite_output_dir":
                self.overwrite_output_dir = bool(value)  # scripts read it back
            _notice(f"{old} has no effect in trainwright and can be removed.")
        else:
            if new in kwargs:
                raise ConfigError(f"Both {old}= and its new name {new}= were given; keep only {new}=.")
            kwargs[new] = value
            _notice(f"{old} is deprecated: use {new} instead.")
    if kwargs.get("use_legacy_prediction_loop") is False:
        kwargs.pop("use_legacy_prediction_loop")  # transformers' old default: nothing to do
    for old, reason in REMOVED.items():
        if old in kwargs:
            raise ConfigError(f"TrainingArguments({old}=...) is not supported by trainwright: {reason}. Remove {old}.")
    valid = set(_FIELD_DEFAULTS)
    unknown = [k for k in kwargs if k not in valid]
    if unknown:
        name = unknown[0]
        near = difflib.get_close_matches(name, sorted(valid), n=3)
        hint = f" Did you mean {', '.join(near)}?" if near else ""
        raise ConfigError(f"TrainingArguments got an unknown argument {name!r}.{hint}")
    _dataclass_init(self, *args, **kwargs)


TrainingArguments.__init__ = _init_with_aliases
