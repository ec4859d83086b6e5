"""The Trainer: ``train()`` reads top to bottom -- set up, resume, the epoch loop, finish -- and each piece a user may
want to change is a method to override, with transformers' names and arguments (``compute_loss``,
``training_step``, ``prediction_step``, ``evaluation_loop``, ``create_optimizer``, ``get_train_dataloader``, ...).

The work is done by components the Trainer holds -- ``Distributed`` (ranks, DDP / FSDP2), ``Precision``,
``CheckpointManager`` (when and where to save, the best model, resuming), ``LossTracker`` and ``Throughput`` (what
the loop counts; saved with every checkpoint), ``StopSignal`` (SIGTERM / SIGINT) -- and by the functions of
:mod:`.dataloaders`, :mod:`.train_plan`, :mod:`.train_step` and :mod:`.evaluation`. The hot loop never waits for the
device. ``HubMixin`` (``hub.py``) adds the Hub methods: a cohesive concern with its own state (the push queue).
"""
from __future__ import annotations

import logging
import time
import warnings
import weakref
from collections.abc import Callable
from typing import Any

import torch

from . import batch_metrics, dataloaders, evaluation, train_step
from . import callbacks as cb
from .args import TrainingArguments
from .args_compat import as_trainwright_args
from .batch_size_search import BatchSizeSearch, evaluate_in_training
from .checkpoint.manager import CheckpointManager
from .checkpoint.run_lock import check_output_dir, holds_output_dir_lock
from .console import print_training_header
from .data.columns import default_label_names, has_length
from .distributed import Distributed, unwrap_model
from .errors import ConfigError, ModelError
from .hub import HubMixin
from .memory import prepare_model_for_training
from .neftune import neftune_callbacks
from .optim import current_learning_rate, parameter_groups, step_on_metric, steps_on_metric
from .outputs import EvalPrediction, PredictionOutput, TrainOutput, set_seed, write_json_result
from .precision import Precision
from .progress import LossTracker, Throughput
from .quantization import place_model
from .signals import StopSignal, stop_on_signal
from .state import TrainerState
from .tokens_seen import InputTokenCounter
from .tokens_seen import log_fields as tokens_log_fields
from .train_plan import TrainPlan, ratio_to_steps
from .trainer_methods import TrainerMethodsMixin

logger = logging.getLogger("trainwright")

_TRAINER_ARGS = ("model, args, data_collator, train_dataset, eval_dataset, processing_class (or tokenizer), "
                 "model_init, compute_loss_func, compute_metrics, callbacks, optimizers, optimizer_cls_and_kwargs, "
                 "preprocess_logits_for_metrics")


class Trainer(HubMixin, TrainerMethodsMixin):
    """``transformers.Trainer``'s constructor, methods and behaviour; see the module docstring for how it is built.

    Args:
        model: the model to train (a ``torch.nn.Module``; transformers models return their loss from ``labels``).
        args: a :class:`TrainingArguments` (a ``transformers.TrainingArguments`` is converted field by field;
            default: ``TrainingArguments(output_dir="trainer_output")``).
        data_collator: builds a batch from a list of rows (default: ``DataCollatorWithPadding`` with a tokenizer
            ``processing_class``, else ``default_data_collator``).
        train_dataset, eval_dataset: map-style or iterable datasets; ``eval_dataset`` may be a dict of them.
        processing_class: the tokenizer (or processor), saved with every checkpoint (``tokenizer=`` is its old name).
        model_init: a function returning a new model, called at each ``train()`` (instead of ``model``).
        compute_loss_func: ``(outputs, labels, num_items_in_batch=...) -> loss`` instead of the model's loss.
        compute_metrics: ``EvalPrediction -> dict`` of numbers, called after each evaluation.
        callbacks: ``TrainerCallback`` classes or instances added to the default ones.
        optimizers: ``(optimizer, lr_scheduler)`` to use instead of building them.
        optimizer_cls_and_kwargs: ``(optimizer class, kwargs)`` built over the model's parameter groups.
        preprocess_logits_for_metrics: ``(logits, labels) -> logits`` applied to each evaluation batch.
    """

    # evaluate/predict run batches sorted by length and return outputs in dataset order (set False to run
    # them in dataset order, e.g. for a collator whose output rows are not one per input row)
    eval_sort_by_length = True
    # with sorted rows, a batch of short rows takes more rows: per_device_eval_batch_size x the longest row's
    # padded tokens (the first batch's memory), at most eval_max_rows_factor x per_device_eval_batch_size rows
    eval_fill_batches = True
    eval_max_rows_factor = 8
    # on a CPU larger batches of long rows run slower per row: fill only up to this many padded tokens there
    eval_fill_cpu_max_tokens = 2048

    def __init__(self, model: torch.nn.Module | None = None, args: TrainingArguments | None = None,
                 data_collator: Callable | None = None, train_dataset: Any = None, eval_dataset: Any = None,
                 processing_class: Any = None, model_init: Callable | None = None,
                 compute_loss_func: Callable | None = None,
                 compute_metrics: Callable[[EvalPrediction], dict] | None = None, callbacks: list | None = None,
                 optimizers: tuple = (None, None), optimizer_cls_and_kwargs: tuple | None = None,
                 preprocess_logits_for_metrics: Callable | None = None, **kwargs: Any):
        processing_class = _processing_class(processing_class, kwargs)
        self.args = args = as_trainwright_args(args)
        set_seed(args.seed, deterministic=args.full_determinism)
        self.device = args.device
        from .memory_metrics import MemoryTracker
        self._memory_tracker = MemoryTracker(not args.skip_memory_metrics, self.device)
        self._memory_tracker.start("init")
        self.dist = Distributed(args, self.device)
        from .verbosity import apply_log_level
        apply_log_level(args, logs=self.dist.is_main_process)  # log_level / log_level_replica, as transformers
        self.precision = Precision(args, self.device)
        self.model_init = model_init
        self.model = self.model_wrapped = self._initial_model(model)
        self.processing_class = processing_class
        self._user_collator = data_collator is not None  # a script's collator sees `label` as transformers gives it
        self.data_collator = data_collator if data_collator is not None else \
            dataloaders.default_collator(processing_class, self.device, args.torch_compile)
        self.train_dataset, self.eval_dataset = train_dataset, eval_dataset
        self.compute_metrics = batch_metrics.check_compute_metrics(args, compute_metrics)
        self.compute_loss_func, self.preprocess_logits_for_metrics = compute_loss_func, preprocess_logits_for_metrics
        self.optimizer, self.lr_scheduler = optimizers
        self._created_optimizer = self._created_lr_scheduler = False  # made by train(): see _new_run_model()
        self._label_smoothing_factor = train_step.label_smoothing_factor(args, self.model)
        if optimizer_cls_and_kwargs is not None and self.optimizer is not None:
            raise ConfigError("Pass either optimizers=(optimizer, scheduler) or optimizer_cls_and_kwargs, not both.")
        self.optimizer_cls_and_kwargs = optimizer_cls_and_kwargs
        self.label_names = args.label_names or default_label_names(unwrap_model(self.model))
        self._dropped_logged: set[str] = set()
        dataloaders.check_datasets(self)
        progress = cb.PrinterCallback if args.disable_tqdm else cb.ProgressCallback  # last, after the script's (HF)
        self.callback_handler = cb.CallbackHandler(self._default_callbacks() + list(callbacks or []) + [progress],
                                                   self.model,
                                                self.processing_class, self.optimizer, self.lr_scheduler)
        self.state = TrainerState(is_local_process_zero=self.dist.local_rank == 0,
                                  is_world_process_zero=self.dist.is_main_process)
        self.control = cb.TrainerControl()
        owner = weakref.proxy(self)  # the components' back-reference: no cycle keeps a finished Trainer alive
        self.callback_states = cb.CallbackStates(owner)
        self.checkpoints = CheckpointManager(owner)
        self.stop_signal = StopSignal()
        self.loss_tracker: LossTracker | None = None  # created by train()
        self.throughput: Throughput | None = None
        self._grad_norm: torch.Tensor | None = None
        self._init_hub()  # push_to_hub=True: create the repo (hub.py)
        self.control = self.callback_handler.on_init_end(self.args, self.state, self.control)
        self._memory_tracker.stop("init")

    def _initial_model(self, model):
        if model is None:
            if self.model_init is None:
                raise ConfigError("Trainer needs a model: pass model=... or model_init=<function returning a model>.")
            model = self.call_model_init()
        elif self.model_init is not None:
            warnings.warn("Both model and model_init were given; model_init re-creates the model at train().",
                          stacklevel=3)
        if not isinstance(model, torch.nn.Module):
            raise ModelError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
        if hasattr(getattr(model, "config", None), "use_cache"):
            model.config.use_cache = self.args.use_cache  # as transformers.Trainer.__init__: evaluate() before train()
        return place_model(model, self.device)  # a 4/8-bit base: checked, left on its GPU (quantization.py)

    def _default_callbacks(self) -> list:
        from .loggers import MetricsJsonlCallback, get_reporting_callbacks
        callbacks = [cb.DefaultFlowCallback, MetricsJsonlCallback()] + get_reporting_callbacks(self.args.report_to)
        return callbacks + neftune_callbacks(self.args)  # NEFTune noise while training (neftune.py)

    # ================================================================== callbacks and the model
    def call_model_init(self, trial: Any = None) -> torch.nn.Module:
        """A new model from ``model_init`` (given ``trial`` when it takes one argument)."""
        import inspect
        n_params = len(inspect.signature(self.model_init).parameters)
        model = self.model_init(trial) if n_params == 1 else self.model_init()
        if model is None:
            raise ConfigError("model_init returned None: it must return a torch.nn.Module.")
        return model

    def add_callback(self, callback: Any) -> None:
        """Adds a ``TrainerCallback`` (a class is instantiated)."""
        self.callback_handler.add_callback(callback)

    def pop_callback(self, callback: Any) -> Any:
        """Removes and returns the callback (an instance, or the first of a class); None when there is none."""
        return self.callback_handler.pop_callback(callback)

    def remove_callback(self, callback: Any) -> None:
        """Removes the callback (an instance, or the first of a class)."""
        self.callback_handler.remove_callback(callback)

    @property
    def tokenizer(self) -> Any:
        """The old name of ``processing_class``."""
        return self.processing_class

    # ================================================================== data
    def get_train_dataloader(self) -> torch.utils.data.DataLoader:
        """The train DataLoader: this rank's share of each global batch, in a resumable order (random, grouped by
        length or token-budget batches, per ``train_sampling_strategy`` / ``max_tokens_per_batch``)."""
        return dataloaders.train_dataloader(self)

    def _get_eval_dataloader(self, eval_dataset: Any = None) -> torch.utils.data.DataLoader:
        """The evaluation DataLoader of ``eval_dataset`` (a dataset, the name of one of a dict ``eval_dataset``, or
        None for the trainer's own), its batches sorted by length (``get_eval_dataloader`` adds the persistent-workers
        cache: trainer_methods.py)."""
        eval_dataset = dataloaders.named_eval_dataset(self, eval_dataset)
        return dataloaders.prediction_dataloader(self, eval_dataset, "eval_dataset")

    def get_test_dataloader(self, test_dataset: Any) -> torch.utils.data.DataLoader:
        """The DataLoader ``predict(test_dataset)`` runs, its batches sorted by length."""
        return dataloaders.prediction_dataloader(self, test_dataset, "test_dataset")

    # ================================================================== optimizer and schedule
    def create_optimizer(self) -> torch.optim.Optimizer:
        """The optimizer ``args.optim`` names (or ``optimizer_cls_and_kwargs``), built once, over the trainable
        parameters with weight decay except biases and normalisation weights."""
        if self.optimizer is None:
            model = unwrap_model(self.model)
            if self.optimizer_cls_and_kwargs is not None:
                cls, kwargs = self.optimizer_cls_and_kwargs
                self.optimizer = cls(parameter_groups(model, self.args.weight_decay), **kwargs)
            else:
                from .optim import create_optimizer
                self.optimizer = create_optimizer(model, self.args, self.device)
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None) -> Any:
        """The learning-rate schedule ``args.lr_scheduler_type`` over ``num_training_steps`` (built once) for
        ``optimizer`` (default: the trainer's), with ``args.lr_scheduler_kwargs`` and ``args.warmup_steps``."""
        if self.lr_scheduler is None:
            from .optim import create_scheduler
            self.lr_scheduler = create_scheduler(
                self.args.lr_scheduler_type, optimizer or self.optimizer,
                num_warmup_steps=self.args.get_warmup_steps(num_training_steps),
                num_training_steps=num_training_steps, kwargs=self.args.lr_scheduler_kwargs)
        return self.lr_scheduler

    def create_optimizer_and_scheduler(self, num_training_steps: int) -> None:
        """``create_optimizer()`` then ``create_scheduler(num_training_steps)``."""
        self.create_optimizer()
        self.create_scheduler(num_training_steps=num_training_steps, optimizer=self.optimizer)

    # ================================================================== train
    @holds_output_dir_lock  # one run per output_dir (the writing rank locks it until train() returns or raises)
    def train(self, resume_from_checkpoint: str | bool | None = None, trial: Any = None,
              ignore_keys_for_eval: list[str] | None = None, **kwargs: Any) -> TrainOutput:
        """Trains the model and returns a ``TrainOutput(global_step, training_loss, metrics)``.

        Args:
            resume_from_checkpoint: a checkpoint directory to continue from exactly (model, optimizer, scheduler,
                RNGs, data position, running loss), or True for the newest complete one in ``output_dir`` (None:
                ``args.resume_from_checkpoint``).
            trial: passed to ``model_init``.
            ignore_keys_for_eval: output keys left out of the evaluations' predictions.

        Every check of the data and the arguments runs before the first step. SIGTERM / SIGINT finish the step,
        write a checkpoint and exit with 128 + the signal number.
        """
        if kwargs:
            raise ConfigError(f"train() got unexpected arguments {sorted(kwargs)}; it takes "
                              "resume_from_checkpoint, trial and ignore_keys_for_eval.")
        return BatchSizeSearch(self).run(self._train_once, resume_from_checkpoint, trial, ignore_keys_for_eval)

    def _train_once(self, search: BatchSizeSearch, resume_from_checkpoint, trial,
                    ignore_keys_for_eval) -> TrainOutput:  # once, or once per batch size (auto_find_batch_size)
        with self.stop_signal.scope(), self.checkpoints.scope():  # handlers restored, the write in flight ended
            resume, fall_back = search.resume_target(resume_from_checkpoint)
            self._memory_tracker.start("train")
            check_output_dir(self.args.output_dir)
            plan = self._set_up_training(trial)
            if resume is not None:  # the run continues as if it had never stopped
                resume = self.checkpoints.resume(resume, plan.max_steps, fall_back=fall_back)
            print_training_header(self, plan, resume, own_loader=type(self).get_train_dataloader is
                                  Trainer.get_train_dataloader)
            self.stop_signal.install()
            self.control = self.callback_handler.on_train_begin(self.args, self.state, self.control)
            if self.args.eval_on_start and self.state.global_step == 0:
                self._evaluate(ignore_keys_for_eval, skip_scheduler=True)  # as transformers: no scheduler step yet
            start = (time.time(), self.state.global_step, self.state.samples_seen)
            self.throughput.start()
            self.throughput.counter.initial = self.state.num_input_tokens_seen  # this call's tokens/s (resumed runs)
            self._run_epochs(plan, ignore_keys_for_eval)
            self.stop_signal.restore_handlers()
            return self._finish_training(start)

    def _set_up_training(self, trial) -> TrainPlan:
        """A new model (model_init) if due, the dataloader and the pre-flight checks, the plan, the wrapped model,
        the optimizer and schedule, a new state and new loop components."""
        self._new_run_model(trial)
        from .special_tokens import align_special_tokens
        align_special_tokens(self.model, self.processing_class)  # e.g. GPT-2's pad token into its config
        train_dataloader = self.get_train_dataloader()
        from .preflight import preflight
        preflight(self, train_dataloader)  # bad labels, ids, lengths, pad token, metrics: before any step
        plan = TrainPlan(self, train_dataloader)
        self._set_up_model_for_training()  # before the optimizer: FSDP2 replaces the parameters with sharded ones
        optimizer_before, scheduler_before = self.optimizer, self.lr_scheduler
        self.create_optimizer_and_scheduler(num_training_steps=plan.max_steps)
        self._created_optimizer = self._created_optimizer or self.optimizer is not optimizer_before
        self._created_lr_scheduler = self.lr_scheduler is not scheduler_before
        self.dist.check_optimizer(self.optimizer, self.model)
        self.callback_handler.optimizer, self.callback_handler.lr_scheduler = self.optimizer, self.lr_scheduler
        self.callback_handler.train_dataloader = train_dataloader
        args = self.args
        self.state = TrainerState(
            max_steps=plan.max_steps, num_train_epochs=plan.num_epochs if plan.sized else 1,
            train_batch_size=args.per_device_train_batch_size,
            logging_steps=ratio_to_steps(args.logging_steps, plan.max_steps),
            eval_steps=ratio_to_steps(args.eval_steps or args.logging_steps, plan.max_steps),
            save_steps=ratio_to_steps(args.save_steps, plan.max_steps),
            is_local_process_zero=self.dist.local_rank == 0, is_world_process_zero=self.dist.is_main_process)
        self.state.stateful_callbacks = {}
        self.loss_tracker = LossTracker(self.device)
        self.throughput = Throughput(unwrap_model(self.model), self.device, self.dist,
                                     InputTokenCounter(args, unwrap_model(self.model), self.processing_class))
        self._grad_norm = None
        return plan

    def _new_run_model(self, trial) -> None:
        """As transformers: with model_init a new (seeded) model and with it a new optimizer and scheduler; without
        model_init the optimizer the last train() made is kept and the scheduler made again."""
        if self.model_init is not None and (self.optimizer is None or self._created_optimizer):
            set_seed(self.args.seed, deterministic=self.args.full_determinism)
            self.model = self.model_wrapped = place_model(self.call_model_init(trial), self.device)
            self.callback_handler.model = self.model
            self.optimizer, self.lr_scheduler = None, None
        elif self._created_lr_scheduler:
            self.lr_scheduler = None

    def _set_up_model_for_training(self) -> None:
        """``use_cache`` off, activation checkpointing, then the model wrapped for DDP / FSDP2 and compiled."""
        args = self.args
        model = unwrap_model(self.model)
        config = getattr(model, "config", None)
        if config is not None and hasattr(config, "use_cache"):
            config.use_cache = args.use_cache  # a KV cache in training wastes memory and breaks packing masks
        prepare_model_for_training(self, model)  # activation checkpointing; chunked-loss checks (memory.py)
        wrapped = self.dist.wrap_model(model, self.precision)
        self.precision.adapt_to_sharding(self.dist.sharded)  # fp16 + FSDP2: agreed inf checks
        if args.torch_compile:
            wrapped = torch.compile(wrapped, backend=args.torch_compile_backend or "inductor",
                                    mode=args.torch_compile_mode)
        self.model_wrapped = wrapped

    def _run_epochs(self, plan: TrainPlan, ignore_keys_for_eval) -> None:
        args, model = self.args, self.model_wrapped
        first_epoch, steps_done = plan.start(self.state.global_step)
        for epoch in range(first_epoch, plan.num_epochs):
            skip = steps_done if epoch == first_epoch else 0
            plan.begin_epoch(epoch, skip)
            self.control = self.callback_handler.on_epoch_begin(args, self.state, self.control)
            steps_in_epoch = plan.steps_in_epoch(epoch)
            for step_in_epoch, micro_batches in plan.micro_batches(epoch, skip, args.ignore_data_skip):
                self._optimizer_step(model, micro_batches, epoch, step_in_epoch, steps_in_epoch)
                self._maybe_log_save_evaluate(model, ignore_keys_for_eval)
                if self.control.should_epoch_stop or self.control.should_training_stop:
                    break
            self.control = self.callback_handler.on_epoch_end(args, self.state, self.control)
            self._maybe_log_save_evaluate(model, ignore_keys_for_eval, epoch_end=True)
            if self.control.should_training_stop or self.state.global_step >= plan.max_steps:
                break

    def _finish_training(self, start: tuple) -> TrainOutput:
        """The best model (``load_best_model_at_end``), the run's metrics, ``on_train_end``, the pushes in flight
        and the report."""
        start_time, start_step, start_samples = start
        self.throughput.flush(self.state)  # every rank: the rows and tokens since the last log, summed over ranks
        self.checkpoints.finish()  # the checkpoint in flight complete, then load_best_model_at_end
        runtime = time.time() - start_time
        train_loss = self.loss_tracker.train_loss()
        # speed metrics count this call's work only (a resumed run does not claim the steps before it)
        steps_done = max(self.state.global_step - start_step, 1)
        samples = self.state.samples_seen - start_samples
        metrics = {"train_runtime": round(runtime, 4),
                   "train_samples_per_second": round(samples / runtime, 3) if runtime > 0 else 0.0,
                   "train_steps_per_second": round(steps_done / runtime, 3) if runtime > 0 else 0.0,
                   "total_flos": float(self.state.total_flos), "train_loss": train_loss}
        if self.state.skipped_nonfinite_steps:
            metrics["train_skipped_nonfinite_steps"] = self.state.skipped_nonfinite_steps
        self._memory_tracker.stop("train", metrics)  # skip_memory_metrics=False: train_mem_* (and init_mem_*)
        self.log(metrics)
        self.control = self.callback_handler.on_train_end(self.args, self.state, self.control)
        self._finish_current_push()  # as transformers: wait for the checkpoint pushes in flight
        if self.args.write_report and self.dist.is_main_process:
            self._write_report()
        return TrainOutput(self.state.global_step, train_loss, metrics)

    def _optimizer_step(self, model, micro_batches: list, epoch: int, step_in_epoch: int, steps_in_epoch: int):
        train_step.optimizer_step(self, model, micro_batches, epoch, step_in_epoch, steps_in_epoch)

    def training_step(self, model: torch.nn.Module, inputs: dict,
                      num_items_in_batch: int | torch.Tensor | None = None) -> torch.Tensor:
        """One micro-batch: forward under autocast, the loss as its share of the step (``num_items_in_batch``:
        the label items of the whole step, all ranks), backward. Returns the detached loss."""
        return train_step.training_step(self, Trainer.compute_loss, model, inputs, num_items_in_batch)

    def compute_loss(self, model: torch.nn.Module, inputs: dict, return_outputs: bool = False,
                     num_items_in_batch: int | torch.Tensor | None = None) -> Any:
        """The model's loss over this micro-batch (``(loss, outputs)`` with ``return_outputs``); given
        ``num_items_in_batch`` (the step's loss items), its share of the step's mean: ``sum / num_items_in_batch``
        (see ``loss_scaling``)."""
        return train_step.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)

    def _prepare_inputs(self, inputs: dict) -> dict:
        return train_step.prepare_inputs(inputs, self.device)

    # ================================================================== log / save / evaluate
    def _maybe_log_save_evaluate(self, model, ignore_keys_for_eval, epoch_end: bool = False) -> None:
        if self.control.should_log and self.loss_tracker.log_steps > 0:
            self._log_training_progress()
        elif epoch_end:
            self._check_nonfinite()
        metrics = None
        if self.control.should_evaluate:
            self.throughput.flush(self.state)  # every rank: the evaluation's log has the tokens seen up to this step
            metrics = self._evaluate(ignore_keys_for_eval)
        self.checkpoints.save_if_due(metrics)
        # under torchrun every rank must stop at the same step (the checkpoint is collective)
        self.stop_signal.received = self.dist.agreed_signal(self.stop_signal.received)
        if self.stop_signal.received is not None:
            stop_on_signal(self)

    def _log_training_progress(self) -> None:
        logs: dict[str, float] = {"loss": self.loss_tracker.read_log_loss()}
        if self._grad_norm is not None:
            logs["grad_norm"] = float(self._grad_norm.item())
        logs["learning_rate"] = current_learning_rate(self.lr_scheduler, self.optimizer)
        logs.update(self.throughput.read(self.state))
        self._check_nonfinite()
        self.log(logs, self.throughput.start_time)

    def _check_nonfinite(self) -> None:
        if self.precision.scaler is None:  # (the GradScaler skips non-finite steps itself)
            self.loss_tracker.check_nonfinite(self.state, self.args.max_consecutive_nonfinite_steps,
                                              self.checkpoints.last_checkpoint_path)

    def _evaluate(self, ignore_keys=None, skip_scheduler: bool = False) -> dict:
        """An evaluation during training: the best-model bookkeeping and a metric-stepped schedule's step."""
        self.checkpoints.before_evaluation()  # the best so far (read by callbacks) includes the write in flight
        metrics = evaluate_in_training(self, ignore_keys)  # auto_find_batch_size: an OOM here is not retried
        self.checkpoints.update_best(metrics)
        if not skip_scheduler and self.lr_scheduler is not None and steps_on_metric(self.lr_scheduler):
            step_on_metric(self.lr_scheduler, metrics, self.args.metric_for_best_model)
        return metrics

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Adds ``logs`` (with the epoch) to ``state.log_history`` and calls ``on_log`` (``start_time``: accepted
        for transformers' signature)."""
        if self.state.epoch is not None:
            logs["epoch"] = self.state.epoch
        logs.update(tokens_log_fields(self.args, self.state, start_time, getattr(self.throughput, "counter", None)))
        self.state.log_history.append({**logs, "step": self.state.global_step})
        self.control = self.callback_handler.on_log(self.args, self.state, self.control, logs)

    # ================================================================== evaluate / predict
    def evaluate(self, eval_dataset: Any = None, ignore_keys: list[str] | None = None,
                 metric_key_prefix: str = "eval") -> dict[str, float]:
        """Evaluates on ``eval_dataset`` (default: the trainer's; a dict evaluates each set, prefixed by its name)
        and returns the metrics (``eval_loss``, ``compute_metrics``' and the speed), also logged. ``ignore_keys``:
        model outputs left out of the predictions; ``metric_key_prefix``: the metrics' prefix."""
        override = eval_dataset is not None
        eval_dataset = eval_dataset if override else self.eval_dataset
        if isinstance(eval_dataset, dict):  # as HF: each set by name (get_eval_dataloader(name)), prefixed
            results = {}
            for name, ds in eval_dataset.items():
                results.update(self.evaluate(ds if override else name, ignore_keys, f"{metric_key_prefix}_{name}"))
            return results
        self._memory_tracker.start("eval")
        dataloader = self.get_eval_dataloader(eval_dataset)
        output = self._run_evaluation(dataloader, "Evaluation", ignore_keys, metric_key_prefix,
                                      prediction_loss_only=True if self.compute_metrics is None else None)
        self.log(output.metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, output.metrics)
        self._memory_tracker.stop("eval", output.metrics)  # returned, not logged (as transformers)
        return output.metrics

    def predict(self, test_dataset: Any, ignore_keys: list[str] | None = None,
                metric_key_prefix: str = "test") -> PredictionOutput:
        """Predictions (in dataset order), label ids and metrics on ``test_dataset``; ``ignore_keys`` and
        ``metric_key_prefix`` as in :meth:`evaluate` (prefix ``test``)."""
        self._memory_tracker.start("test")
        dataloader = self.get_test_dataloader(test_dataset)
        output = self._run_evaluation(dataloader, "Prediction", ignore_keys, metric_key_prefix)
        self.control = self.callback_handler.on_predict(self.args, self.state, self.control, output.metrics)
        self._memory_tracker.stop("test", output.metrics)
        return PredictionOutput(predictions=output.predictions, label_ids=output.label_ids, metrics=output.metrics)

    def _run_evaluation(self, dataloader: Any, description: str = "Evaluation", ignore_keys=None,
                        metric_key_prefix: str = "eval", prediction_loss_only=None, quiet: bool = False):
        """evaluation_loop plus the speed metrics, with no logging and no on_evaluate/on_predict: what evaluate()
        and predict() compute. ``quiet`` (the pre-flight dry run) also skips the per-batch callbacks and reports a
        failing compute_metrics as preflight.MetricsFailed (chained to the user's exception)."""
        return evaluation.run_evaluation(self, dataloader, description, ignore_keys, metric_key_prefix,
                                         prediction_loss_only, quiet)

    def evaluation_loop(self, dataloader: Any, description: str, prediction_loss_only: bool | None = None,
                        ignore_keys: list[str] | None = None,
                        metric_key_prefix: str = "eval") -> evaluation.EvalLoopOutput:
        """Runs ``prediction_step`` over ``dataloader`` (``description``: "Evaluation" or "Prediction"). Returns the
        predictions and label ids in dataset order, the metrics prefixed by ``metric_key_prefix`` and the rows."""
        return evaluation.evaluation_loop(self, dataloader, prediction_loss_only, ignore_keys, metric_key_prefix,
                                          description)

    def prediction_step(self, model: torch.nn.Module, inputs: dict, prediction_loss_only: bool,
                        ignore_keys: list[str] | None = None) -> tuple:
        """``(loss, logits, labels)`` of one batch, without gradients (loss only with ``prediction_loss_only``);
        outputs named in ``ignore_keys`` (default: the config's ``keys_to_ignore_at_inference``) left out."""
        return evaluation.prediction_step(self, model, inputs, prediction_loss_only, ignore_keys)

    # ================================================================== checkpoints and saving
    def _save_checkpoint(self, metrics: dict | None = None) -> None:
        self.checkpoints.save()

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Writes the model (and the processing class) to ``output_dir`` (default ``args.output_dir``) so that
        ``from_pretrained`` loads it; safetensors, atomically. Under FSDP2 every rank must call it."""
        from .checkpoint import save_model_dir
        output_dir = output_dir or self.args.output_dir
        # as HF, no barrier: rank 0 alone may call it (`if trainer.is_world_process_zero(): trainer.save_model()`).
        # FSDP2 gathers the full state from every rank: a rank-0-only call is refused instead of hanging
        self.dist.check_every_rank_calls("save_model")
        self.checkpoints.wait_for_write()  # the checkpoint being written in the background first
        model_view, _ = self.dist.state_for_saving(self.model)  # FSDP2: collective, gathered on rank 0
        if self.dist.is_main_process:
            save_model_dir(output_dir, model_view, self.processing_class)
        if self.args.push_to_hub and not _internal_call:
            self._push_after_save_model()  # hub.py: as transformers, save_model pushes

    def save_state(self) -> None:
        """Writes ``trainer_state.json`` in ``output_dir`` (main process; atomic, a full disk is one warning)."""
        if self.dist.is_main_process:
            write_json_result(self.args.output_dir, "trainer_state.json", self.state.to_dict(), indent=2, newline=True)

    def _write_report(self) -> None:
        try:
            from .report import write_report
            write_report(self.args.output_dir)
        except Exception as e:  # a report must never break a finished training run
            logger.warning("Could not write the run report: %s", e)

    # ================================================================== misc HF API
    def num_examples(self, dataloader: Any) -> int:
        """Rows of ``dataloader``'s dataset (or batches x the batch size when it has no length)."""
        dataset = getattr(dataloader, "dataset", None)
        if dataset is not None and has_length(dataset):
            return len(dataset)
        return len(dataloader) * self.args.per_device_train_batch_size  # as HF: batches x the batch size

    def is_world_process_zero(self) -> bool:
        """Whether this is the main process of the job (rank 0)."""
        return self.dist.is_main_process

    def is_local_process_zero(self) -> bool:
        """Whether this is the main process of its machine (local rank 0)."""
        return self.dist.local_rank == 0

    def create_model_card(self, language: str | None = None, license: str | None = None,
                          tags: str | list[str] | None = None, model_name: str | None = None,
                          finetuned_from: str | None = None, tasks: str | list[str] | None = None,
                          dataset_tags: str | list[str] | None = None, dataset: str | list[str] | None = None,
                          dataset_args: str | list[str] | None = None) -> None:
        """Writes a README.md model card in output_dir (main process only): the arguments fill its metadata --
        ``language``, ``license``, ``tags``, ``model_name``, ``finetuned_from``, ``tasks`` and the ``dataset*``
        names (defaults read from the run); see trainwright.model_card."""
        from .model_card import create_model_card
        create_model_card(self, language=language, license=license, tags=tags, model_name=model_name,
                          finetuned_from=finetuned_from, tasks=tasks, dataset_tags=dataset_tags, dataset=dataset,
                          dataset_args=dataset_args)

    def get_num_trainable_parameters(self) -> int:
        """The number of parameters with ``requires_grad``."""
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def get_learning_rates(self) -> list[float]:
        """The learning rate of each optimizer group (the optimizer must exist)."""
        return [group["lr"] for group in self._optimizer_or_error().param_groups]

    def get_optimizer_group(self, param: str | torch.nn.Parameter | None = None) -> dict | list:
        """The optimizer group holding ``param`` (a parameter, or its name in the model); without ``param``, or
        when no group holds it, the list of every group's parameters (as HF)."""
        groups = self._optimizer_or_error().param_groups
        if isinstance(param, str):
            param = dict(unwrap_model(self.model).named_parameters()).get(param, param)
        if param is not None:
            for group in groups:
                if any(p is param for p in group["params"]):
                    return group
        return [group["params"] for group in groups]

    def _optimizer_or_error(self):
        if self.optimizer is None:
            raise ConfigError("The Trainer has no optimizer yet: it is built by train(); call "
                              "trainer.create_optimizer() first to inspect it before training.")
        return self.optimizer


# ====================================================================== constructor helpers
def _processing_class(processing_class, kwargs: dict):
    """``tokenizer=`` as the old name of ``processing_class`` (with a FutureWarning); any other keyword raises."""
    if "tokenizer" in kwargs:
        tokenizer = kwargs.pop("tokenizer")
        if processing_class is not None and tokenizer is not None and tokenizer is not processing_class:
            raise ConfigError("Both tokenizer= and processing_class= were given; keep only processing_class=.")
        processing_class = processing_class or tokenizer
        warnings.warn("Trainer(tokenizer=...) is deprecated: use processing_class=... instead.",
                      FutureWarning, stacklevel=3)
    if kwargs:
        raise ConfigError(f"Trainer() got an unexpected argument {next(iter(kwargs))!r}. Valid arguments: "
                          f"{_TRAINER_ARGS}.")
    return processing_class
