"""TrainingArguments: transformers 5.x names, defaults and field types, validated up front, serialised as JSON.

Every value is checked when the object is built (or, for checks that need the datasets, when
``Trainer(...)`` is built), so a mistake fails before the first training step with a message that
names the argument and the fix. Renamed arguments from older transformers releases keep working
with a one-line notice; arguments that transformers has but trainwright does not implement raise
instead of being ignored.

The fields transformers also has carry transformers' own annotations and parser metadata, so
``transformers.HfArgumentParser`` builds the same command-line options from this class (see
:mod:`trainwright.args_compat`); the checks and the tables of valid, unsupported and older names live in
:mod:`trainwright.args_validate`, the run-time API in :mod:`trainwright.args_runtime` and the ``set_*`` helpers in
:mod:`trainwright.args_setters`.
"""
from __future__ import annotations

import dataclasses
import enum
import json
import os
from dataclasses import dataclass, field
from typing import Any, Literal

from .args_compat import convert_transformers_args, hf_types
from .args_runtime import LOG_LEVELS, ProcessView
from .args_setters import Setters
from .args_validate import (  # noqa: F401
    DICT_FIELDS,
    HUB_STRATEGIES,
    METRIC_SCHEDULERS,
    OPTIMIZERS,
    REMOVED,
    RENAMED,
    SAMPLING,
    SAVE_STRATEGIES,
    SCHEDULERS,
    STRATEGIES,
    UNSUPPORTED,
    field_default,
    map_old_names,
    validate,
)
from .errors import ConfigError, did_you_mean


def _arg(default=dataclasses.MISSING, help: str = "", *, factory=dataclasses.MISSING, **metadata):
    """A field with argparse metadata for HfArgumentParser (help, and nargs / const / choices where needed)."""
    return field(default=default, default_factory=factory, metadata={"help": help, **metadata})


@dataclass(init=False)
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
    neftune_noise_alpha: float | None = _arg(None,
                                             "NEFTune: noise of this scale on the input embeddings while training.")
    torch_empty_cache_steps: int | None = _arg(None, "Empty the device cache every N steps.")
    auto_find_batch_size: bool = _arg(False, "On out of memory, train again with the batch size x 0.9.")
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
    eval_use_gather_object: bool = _arg(False, "Gather list outputs as one object per row (all_gather_object).")
    eval_accumulation_steps: int | None = _arg(None, "Move predictions to the CPU every N batches.")
    include_for_metrics: list[str] = _arg(help="Also give compute_metrics: inputs and/or loss.", factory=list)
    batch_eval_metrics: bool = _arg(False, "Call compute_metrics per eval batch (compute_result=True: last).")
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
    hub_strategy: hf_types.HubStrategy | str = _arg(
        "every_save", "What to push and when: end, every_save, checkpoint or all_checkpoints.")
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
    trim_padding: bool | None = _arg(None, "trainwright: cut all-padding columns (None: when the model takes a mask).")
    max_consecutive_nonfinite_steps: int = _arg(10, "trainwright: stop after N consecutive NaN/inf steps.")
    on_save_error: str = _arg("continue", "trainwright: what a failed checkpoint write does: continue or stop.",
                              choices=["continue", "stop"])
    save_in_background: bool = _arg(True, "trainwright: write checkpoints in a background thread; training waits "
                                          "only for a copy of the state in host memory (False: before the next step).")
    write_report: bool = _arg(True, "trainwright: write report.html at the end of train().")
    # True / False / tokens per chunk; annotated str for HfArgumentParser ("true", "false", "1024"), read by _validate
    chunked_cross_entropy: str | None = _arg(
        False, "trainwright: causal-LM loss without the logits tensor: true (automatic chunk size), false, or "
               "a number of tokens per chunk.")

    # read by transformers' example Trainer subclasses (trainer_qa.py); trainwright has one evaluation loop
    use_legacy_prediction_loop = False
    # transformers 4.x scripts read it; set by overwrite_output_dir=... (which has no other effect here)
    overwrite_output_dir = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Build the arguments from keywords (any field below; ``output_dir`` may also come first, positionally, as
        in transformers). Older transformers names are mapped to the current ones with a ``FutureWarning``; a name
        that is neither a field nor an older name raises ``ConfigError`` naming the closest fields. Every value is
        then checked (:mod:`trainwright.args_validate`).

        An explicit constructor rather than the dataclass's own (no monkeypatching): ``dataclasses.fields`` still
        lists every field, so ``HfArgumentParser`` builds its options from them and calls this with keywords, and a
        ``@dataclass(init=False)`` subclass (``Seq2SeqTrainingArguments``) gets the same handling of its own fields.
        """
        kwargs = map_old_names(self, kwargs)
        fields = [f for f in dataclasses.fields(self) if f.init]
        names = [f.name for f in fields]
        if len(args) > len(names):
            raise TypeError(f"{type(self).__name__}() takes at most {len(names)} positional arguments")
        for name, value in zip(names, args):
            if name in kwargs:
                raise TypeError(f"{type(self).__name__}() got multiple values for argument {name!r}")
            kwargs[name] = value
        unknown = [k for k in kwargs if k not in names]
        if unknown:
            hint = did_you_mean(unknown[0], sorted(names), n=3, show=str)
            raise ConfigError(f"{type(self).__name__} got an unknown argument {unknown[0]!r}.{hint}")
        for f in fields:
            setattr(self, f.name, kwargs[f.name] if f.name in kwargs else field_default(f))
        self.__post_init__()

    def __post_init__(self) -> None:
        self._validate()

    def _validate(self) -> None:
        """Check every value and normalise as transformers' __post_init__ does. Runs again after set_*; a subclass
        with fields of its own checks them in its override."""
        validate(self)

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
        """``to_dict()`` as indented JSON with sorted keys."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def to_sanitized_dict(self) -> dict[str, Any]:
        """Flat str/int/float/bool values (plus train_batch_size / eval_batch_size), for trackers' hyperparameter
        tables, as transformers."""
        out = {**self.to_dict(), "train_batch_size": self.train_batch_size, "eval_batch_size": self.eval_batch_size}
        return {k: v if type(v) in (bool, int, float, str) else str(v) for k, v in out.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingArguments:
        """The arguments from ``data`` (e.g. a ``to_dict()`` or a ``training_args.json``); keys that are not fields
        (another version's) are ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def from_json_file(cls, path: str) -> TrainingArguments:
        """The arguments from a JSON file written by :meth:`save_to_json` (or a checkpoint's ``training_args.json``)."""
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))

    @classmethod
    def from_transformers(cls, hf_args: Any) -> TrainingArguments:
        """trainwright arguments from a ``transformers.TrainingArguments`` (or ``Seq2SeqTrainingArguments``):
        the fields set away from transformers' defaults are carried over and validated here (an unsupported
        value raises naming the field); the others keep trainwright's defaults."""
        return convert_transformers_args(cls, hf_args)

    def save_to_json(self, path: str) -> None:
        """Writes :meth:`to_json_string` to ``path`` (a set token masked)."""
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.to_json_string() + "\n")

    def __str__(self) -> str:
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
