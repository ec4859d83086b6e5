"""TrainingArguments: transformers 5.x names and defaults, validated up front, serialised as JSON.

Every value is checked when the object is built (or, for checks that need the datasets, when
``Trainer(...)`` is built), so a mistake fails before the first training step with a message that
names the argument and the fix. Renamed arguments from older transformers releases keep working
with a one-line notice; arguments that transformers has but trainwright does not implement raise
instead of being ignored.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

STRATEGIES = ("no", "steps", "epoch")
SAVE_STRATEGIES = ("no", "steps", "epoch", "best")
OPTIMIZERS = ("adamw_torch", "adamw_torch_fused", "adamw_torch_foreach", "adamw", "sgd", "adafactor", "adagrad", "rmsprop")
SCHEDULERS = (
    "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
    "inverse_sqrt", "reduce_lr_on_plateau", "cosine_with_min_lr", "warmup_stable_decay",
)
SAMPLING = ("auto", "random", "sequential", "group_by_length")

# transformers arguments that trainwright accepts only at their default value, with the reason.
UNSUPPORTED = {
    "deepspeed": "DeepSpeed is not used; for sharding use fsdp='full_shard' (FSDP2) under torchrun",
    "push_to_hub": "trainwright works offline and does not push; upload output_dir with huggingface_hub yourself",
    "hub_token": "trainwright does not push to the Hub",
    "hub_model_id": "trainwright does not push to the Hub",
    "hub_private_repo": "trainwright does not push to the Hub",
    "hub_revision": "trainwright does not push to the Hub",
    "use_liger_kernel": "Liger kernels are not integrated",
    "liger_kernel_config": "Liger kernels are not integrated",
    "auto_find_batch_size": "automatic batch-size search is not implemented; set per_device_train_batch_size",
    "optim_target_modules": "GaLore/APOLLO-style target modules are not implemented",
    "accelerator_config": "trainwright does not use accelerate; distributed settings are ddp_* / fsdp*",
    "parallelism_config": "trainwright does not use accelerate's parallelism config; use fsdp / torchrun",
    "trackio_space_id": "the trackio tracker is not integrated; use report_to tensorboard, mlflow or wandb",
    "trackio_bucket_id": "the trackio tracker is not integrated",
    "trackio_static_space_id": "the trackio tracker is not integrated",
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
    "logging_nan_inf_filter": None,
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
    "push_to_hub_model_id": "trainwright does not push to the Hub",
    "push_to_hub_organization": "trainwright does not push to the Hub",
    "push_to_hub_token": "trainwright does not push to the Hub",
    "ray_scope": "hyperparameter search is not implemented",
}


def _notice(message: str) -> None:
    warnings.warn(message, FutureWarning, stacklevel=4)


@dataclass
class TrainingArguments:
    output_dir: str | None = None
    # --- schedule and batches
    per_device_train_batch_size: int = 8
    per_device_eval_batch_size: int = 8
    num_train_epochs: float = 3.0
    max_steps: int = -1
    gradient_accumulation_steps: int = 1
    average_tokens_across_devices: bool = True
    # --- optimizer and schedule
    learning_rate: float = 5e-5
    lr_scheduler_type: str = "linear"
    lr_scheduler_kwargs: dict | None = None
    warmup_steps: float = 0
    optim: str = "adamw_torch_fused"
    optim_args: str | None = None
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    label_smoothing_factor: float = 0.0
    # --- precision and speed
    bf16: bool = False
    fp16: bool = False
    bf16_full_eval: bool = False
    fp16_full_eval: bool = False
    tf32: bool | None = None
    gradient_checkpointing: bool | None = None
    gradient_checkpointing_kwargs: dict | None = None
    activation_checkpointing: bool | None = None
    activation_checkpointing_kwargs: dict | None = None
    torch_compile: bool = False
    torch_compile_backend: str | None = None
    torch_compile_mode: str | None = None
    torch_empty_cache_steps: int | None = None
    # --- logging
    logging_dir: str | None = None
    logging_strategy: str = "steps"
    logging_steps: float = 500
    logging_first_step: bool = False
    log_on_each_node: bool = True
    include_num_input_tokens_seen: str | bool = "no"
    log_level: str = "passive"
    log_level_replica: str = "warning"
    disable_tqdm: bool | None = None
    report_to: str | list[str] | None = "none"
    run_name: str | None = None
    project: str = "huggingface"
    # --- evaluation
    eval_strategy: str = "no"
    eval_steps: float | None = None
    eval_delay: float = 0
    prediction_loss_only: bool = False
    eval_on_start: bool = False
    eval_do_concat_batches: bool = True
    eval_accumulation_steps: int | None = None
    include_for_metrics: list[str] = field(default_factory=list)
    # --- checkpoints
    save_strategy: str = "steps"
    save_steps: float = 500
    save_total_limit: int | None = None
    save_only_model: bool = False
    save_on_each_node: bool = False
    load_best_model_at_end: bool = False
    metric_for_best_model: str | None = None
    greater_is_better: bool | None = None
    ignore_data_skip: bool = False
    restore_callback_states_from_checkpoint: bool = False
    resume_from_checkpoint: str | None = None
    # --- randomness and devices
    seed: int = 42
    data_seed: int | None = None
    full_determinism: bool = False
    use_cpu: bool = False
    # --- data loading
    dataloader_drop_last: bool = False
    dataloader_num_workers: int = 0
    dataloader_pin_memory: bool = True
    dataloader_persistent_workers: bool = False
    dataloader_prefetch_factor: int | None = None
    dataloader_multiprocessing_context: str | None = None
    dataloader_in_order: bool = True
    remove_unused_columns: bool = True
    label_names: list[str] | None = None
    train_sampling_strategy: str = "auto"
    length_column_name: str = "length"
    # --- distributed
    ddp_find_unused_parameters: bool | None = None
    ddp_bucket_cap_mb: int | None = None
    ddp_broadcast_buffers: bool | None = None
    ddp_static_graph: bool | None = None
    ddp_backend: str | None = None
    ddp_timeout: int = 1800
    fsdp: str | list | bool | None = None
    fsdp_config: dict | str | None = None
    local_rank: int = -1
    # --- script flags (kept for HF scripts that read them)
    skip_memory_metrics: bool = True
    do_train: bool = False
    do_eval: bool = False
    do_predict: bool = False
    # --- trainwright additions
    max_tokens_per_batch: int | None = None
    max_consecutive_nonfinite_steps: int = 10
    on_save_error: str = "continue"
    write_report: bool = True
    chunked_cross_entropy: bool | int = False  # causal LMs: loss without the logits tensor (True, or tokens per chunk)
    # --- accepted only at their defaults (see UNSUPPORTED)
    deepspeed: Any = None
    push_to_hub: bool = False
    hub_token: str | None = None
    hub_model_id: str | None = None
    hub_private_repo: bool | None = None
    hub_strategy: str = "every_save"
    hub_always_push: bool = False
    hub_revision: str | None = None
    use_liger_kernel: bool = False
    liger_kernel_config: dict | None = None
    neftune_noise_alpha: float | None = None
    auto_find_batch_size: bool = False
    optim_target_modules: Any = None
    accelerator_config: Any = None
    parallelism_config: Any = None
    trackio_space_id: str | None = None
    trackio_bucket_id: str | None = None
    trackio_static_space_id: str | None = None
    eval_use_gather_object: bool = False
    batch_eval_metrics: bool = False
    enable_jit_checkpoint: bool = False
    debug: str | list = ""
    use_cache: bool = False

    def __post_init__(self):
        self._validate()

    # ------------------------------------------------------------------ validation
    def _validate(self):
        for name, reason in UNSUPPORTED.items():
            default = _FIELD_DEFAULTS[name]
            value = getattr(self, name)
            if value != default and not (value in (None, "", [], False) and default in (None, "", [], False)):
                raise ConfigError(f"TrainingArguments({name}={value!r}) is not supported by trainwright: {reason}. "
                                  f"Remove {name} from your arguments.")
        if self.output_dir is None:
            self.output_dir = "trainer_output"
        self.output_dir = os.fspath(self.output_dir)

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

        self.eval_strategy = _choice("eval_strategy", self.eval_strategy, STRATEGIES)
        self.logging_strategy = _choice("logging_strategy", self.logging_strategy, STRATEGIES)
        self.save_strategy = _choice("save_strategy", self.save_strategy, SAVE_STRATEGIES)
        self.optim = _choice("optim", self.optim, OPTIMIZERS)
        self.lr_scheduler_type = _choice("lr_scheduler_type", self.lr_scheduler_type, SCHEDULERS)
        self.train_sampling_strategy = _choice("train_sampling_strategy", self.train_sampling_strategy, SAMPLING)
        self.on_save_error = _choice("on_save_error", self.on_save_error, ("continue", "stop"))

        for name in ("logging_steps", "save_steps", "eval_steps"):
            value = getattr(self, name)
            if value is None:
                continue
            if value <= 0 or (value > 1 and not float(value).is_integer()):
                raise ConfigError(f"{name}={value!r} must be a positive integer number of steps, or a float in (0, 1) as a fraction of all steps.")
            if value >= 1:
                setattr(self, name, int(value))
        if self.eval_strategy == "steps" and self.eval_steps is None:
            self.eval_steps = self.logging_steps
        if self.max_tokens_per_batch is not None and self.max_tokens_per_batch < 1:
            raise ConfigError(f"max_tokens_per_batch={self.max_tokens_per_batch!r} must be a positive number of (padded) tokens per batch.")
        if self.max_consecutive_nonfinite_steps < 1:
            raise ConfigError("max_consecutive_nonfinite_steps must be >= 1.")

        if self.fp16 and self.bf16:
            raise ConfigError("fp16=True and bf16=True are both set: choose one (bf16 is preferred where the hardware has it).")

        if isinstance(self.report_to, str):
            self.report_to = [] if self.report_to in ("none", "") else ["all"] if self.report_to == "all" else [self.report_to]
        elif self.report_to is None:
            self.report_to = []
        else:
            self.report_to = [r for r in self.report_to if r != "none"]
        if isinstance(self.include_num_input_tokens_seen, bool):
            self.include_num_input_tokens_seen = "all" if self.include_num_input_tokens_seen else "no"

        if self.load_best_model_at_end and self.metric_for_best_model is None:
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

    # ------------------------------------------------------------------ derived values
    @property
    def local_process_index(self) -> int:
        return int(os.environ.get("LOCAL_RANK", max(self.local_rank, 0)))

    @property
    def process_index(self) -> int:
        return int(os.environ.get("RANK", 0))

    @property
    def world_size(self) -> int:
        return int(os.environ.get("WORLD_SIZE", 1))

    @property
    def should_log(self) -> bool:
        return self.process_index == 0

    @property
    def should_save(self) -> bool:
        return self.process_index == 0 or (self.save_on_each_node and self.local_process_index == 0)

    @property
    def device(self):
        from .distributed import select_device
        return select_device(self)

    @property
    def n_gpu(self) -> int:
        return 1 if self.device.type == "cuda" else 0

    @property
    def train_batch_size(self) -> int:
        return self.per_device_train_batch_size

    @property
    def eval_batch_size(self) -> int:
        return self.per_device_eval_batch_size

    def get_warmup_steps(self, num_training_steps: int) -> int:
        if isinstance(self.warmup_steps, float) and self.warmup_steps < 1:
            return math.ceil(num_training_steps * self.warmup_steps)
        return int(self.warmup_steps)

    @property
    def ddp_timeout_delta(self):
        import datetime
        return datetime.timedelta(seconds=self.ddp_timeout)

    # ------------------------------------------------------------------ JSON (never pickle)
    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = value if _json_safe(value) else repr(value)
        return out

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def to_sanitized_dict(self) -> dict[str, Any]:
        """Flat str/int/float/bool values, for trackers' hyperparameter tables."""
        out = {}
        for k, v in self.to_dict().items():
            out[k] = v if isinstance(v, (bool, int, float, str)) else str(v)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainingArguments":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def from_json_file(cls, path: str) -> "TrainingArguments":
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))

    def save_to_json(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.to_json_string() + "\n")

    def __str__(self):
        return f"{self.__class__.__name__}(\n" + ",\n".join(f"  {k}={v!r}" for k, v in self.to_dict().items()) + "\n)"

    __repr__ = __str__


def _json_safe(value) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False


def _choice(name: str, value, valid: tuple) -> str:
    value = getattr(value, "value", value)  # accept HF's enums (IntervalStrategy.EPOCH, ...)
    if value not in valid:
        near = difflib.get_close_matches(str(value), valid, n=1)
        hint = f" Did you mean {near[0]!r}?" if near else ""
        raise ConfigError(f"{name}={value!r} is not valid; choose one of {', '.join(map(repr, valid))}.{hint}")
    return value


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
            _notice(f"{old} has no effect in trainwright and can be removed.")
        else:
            if new in kwargs:
                raise ConfigError(f"Both {old}= and its new name {new}= were given; keep only {new}=.")
            kwargs[new] = value
            _notice(f"{old} is deprecated: use {new} instead.")
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
