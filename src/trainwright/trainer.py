"""The Trainer: train → epoch → step, evaluate, predict. Reads top to bottom; each piece a user may
want to change is a method to override (compute_loss, training_step, prediction_step,
create_optimizer, create_scheduler, get_train_dataloader, get_eval_dataloader, ...).

Distributed and precision policy live in ``Distributed`` and ``Precision``; checkpoints in
``checkpoint``; collation and sampling in ``data``. The hot loop never waits for the device: the
running loss, the gradient norm and the non-finite-step counters stay on the device and are read
only when logging.
"""
from __future__ import annotations

import logging
import math
import os
import signal
import sys
import time
import warnings
from collections.abc import Mapping
from typing import Any, Callable

import numpy as np
import torch

from .args import TrainingArguments
from .args_compat import is_transformers_args
from .callbacks import (CallbackHandler, DefaultFlowCallback, PrinterCallback, ProgressCallback,
                        TrainerCallback, TrainerControl, export_callback_states, restore_callback_states)
from .chunked_loss import compute_chunked_loss, uses_chunked_loss
from .data.batch_seeds import with_batch_seeds
from .data.collator import DataCollatorWithPadding, RemoveColumnsCollator, default_data_collator
from .data.columns import (check_not_column_dict, default_label_names, dropped_columns, has_length,
                           is_iterable_dataset, prepare_columns)
from .data.samplers import (EpochPlan, EvalBatchSampler, ResumableBatchSampler, TokenBudgetBatchSampler,
                            collator_padding, dataset_lengths, is_row_preserving,
                            restore_order)
from .distributed import Distributed, unwrap_model
from .errors import CheckpointError, ConfigError, DataError, ModelError, NonFiniteLossError
from .hub import HubMixin
from .loss_scaling import (count_items, model_takes_num_items, rows as _batch_size, shifts_labels,
                           takes_num_items, user_loss_is_normalised, weighted, zero_loss)
from .memory import prepare_model_for_training
from .neftune import neftune_callbacks
from .optim import steps_on_metric
from .outputs import EvalPrediction, PredictionOutput, TrainOutput, set_seed
from .precision import Precision
from .run_lock import holds_output_dir_lock
from .signals import SignalHandlers, restores_signal_handlers
from .state import TrainerState
from .trainer_methods import TrainerMethodsMixin, metrics_format

logger = logging.getLogger("trainwright")

PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10G": 125e12}


class Trainer(HubMixin, TrainerMethodsMixin):
    # evaluate/predict run batches sorted by length and return outputs in dataset order (set False to run
    # them in dataset order, e.g. for a collator whose output rows are not one per input row)
    eval_sort_by_length = True
    # with sorted rows, a batch of short rows takes more rows: per_device_eval_batch_size x the longest row's
    # padded tokens (the first batch's memory), at most eval_max_rows_factor x per_device_eval_batch_size rows
    eval_fill_batches = True
    eval_max_rows_factor = 8
    # on a CPU larger batches of long rows run slower per row: fill only up to this many padded tokens there
    eval_fill_cpu_max_tokens = 2048

    def __init__(
        self,
        model: torch.nn.Module | None = None,
        args: TrainingArguments | None = None,
        data_collator: Callable | None = None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        model_init: Callable | None = None,
        compute_loss_func: Callable | None = None,
        compute_metrics: Callable[[EvalPrediction], dict] | None = None,
        callbacks: list | None = None,
        optimizers: tuple = (None, None),
        optimizer_cls_and_kwargs: tuple | None = None,
        preprocess_logits_for_metrics: Callable | None = None,
        **kwargs,
    ):
        if "tokenizer" in kwargs:
            tokenizer = kwargs.pop("tokenizer")
            if processing_class is not None and tokenizer is not None and tokenizer is not processing_class:
                raise ConfigError("Both tokenizer= and processing_class= were given; keep only processing_class=.")
            processing_class = processing_class or tokenizer
            warnings.warn("Trainer(tokenizer=...) is deprecated: use processing_class=... instead.",
                          FutureWarning, stacklevel=2)
        if kwargs:
            name = next(iter(kwargs))
            raise ConfigError(f"Trainer() got an unexpected argument {name!r}. Valid arguments: model, args, "
                              "data_collator, train_dataset, eval_dataset, processing_class (or tokenizer), "
                              "model_init, compute_loss_func, compute_metrics, callbacks, optimizers, "
                              "optimizer_cls_and_kwargs, preprocess_logits_for_metrics.")
        if args is None:
            args = TrainingArguments(output_dir="trainer_output")
        elif not isinstance(args, TrainingArguments) and is_transformers_args(args):
            args = TrainingArguments.from_transformers(args)  # field by field; unsupported values raise here
        elif not isinstance(args, TrainingArguments):
            raise ConfigError(f"args must be a trainwright.TrainingArguments, got {type(args).__name__}. "
                              "Build it with `from trainwright import TrainingArguments`.")
        self.args = args
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
        if model is None:
            if model_init is None:
                raise ConfigError("Trainer needs a model: pass model=... or model_init=<function returning a model>.")
            model = self.call_model_init()
        elif model_init is not None:
            warnings.warn("Both model and model_init were given; model_init re-creates the model at train().")
        if not isinstance(model, torch.nn.Module):
            raise ModelError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
        self.model = model.to(self.device)
        self.model_wrapped = self.model
        if hasattr(getattr(model, "config", None), "use_cache"):
            model.config.use_cache = args.use_cache  # as transformers.Trainer.__init__: evaluate() before train() too

        self.processing_class = processing_class
        self._user_collator = data_collator is not None
        if data_collator is None:
            # torch_compile: lengths padded to buckets (multiples of 64 on GPU, 16 on CPU), few distinct shapes
            bucket = (64 if self.device.type == "cuda" else 16) if args.torch_compile else None
            data_collator = DataCollatorWithPadding(processing_class, pad_to_multiple_of=bucket) \
                if _is_tokenizer(processing_class) else default_data_collator
        self.data_collator = data_collator
        self.train_dataset = train_dataset
        self.eval_dataset = eval_dataset
        self.compute_metrics = compute_metrics
        self.compute_loss_func = compute_loss_func
        self.preprocess_logits_for_metrics = preprocess_logits_for_metrics
        self.optimizer, self.lr_scheduler = optimizers
        self._created_optimizer = self._created_lr_scheduler = False  # made by train(): see train()
        self._label_smoothing_factor = args.label_smoothing_factor
        if args.label_smoothing_factor != 0 and \
                getattr(getattr(model, "config", None), "problem_type", None) == "multi_label_classification":
            warnings.warn("Label smoothing is not compatible with multi-label classification. "
                          "Disabling label smoothing for this training run.", UserWarning)
            self._label_smoothing_factor = 0.0
        if optimizer_cls_and_kwargs is not None and self.optimizer is not None:
            raise ConfigError("Pass either optimizers=(optimizer, scheduler) or optimizer_cls_and_kwargs, not both.")
        self.optimizer_cls_and_kwargs = optimizer_cls_and_kwargs
        self.label_names = args.label_names or default_label_names(unwrap_model(self.model))
        self._dropped_logged: set[str] = set()

        self._validate_datasets()

        from .loggers import MetricsJsonlCallback, get_reporting_callbacks
        default_callbacks = [DefaultFlowCallback, MetricsJsonlCallback()] + get_reporting_callbacks(args.report_to)
        default_callbacks += neftune_callbacks(args)  # NEFTune noise while training (neftune.py)
        progress = PrinterCallback if args.disable_tqdm else ProgressCallback  # last, after the script's, as HF
        self.callback_handler = CallbackHandler(default_callbacks + list(callbacks or []) + [progress], self.model,
                                                self.processing_class, self.optimizer, self.lr_scheduler)
        self.state = TrainerState(is_local_process_zero=self.dist.local_rank == 0,
                                  is_world_process_zero=self.dist.is_main_process)
        self.control = TrainerControl()
        self._init_hub()  # push_to_hub=True: create the repo (hub.py)
        self.control = self.callback_handler.on_init_end(self.args, self.state, self.control)
        self._signal_received: int | None = None
        self._throughput: _Throughput | None = None  # created by train()
        self._memory_tracker.stop("init")

    # ================================================================== set-up helpers
    def call_model_init(self, trial=None):
        import inspect
        n_params = len(inspect.signature(self.model_init).parameters)
        model = self.model_init(trial) if n_params == 1 else self.model_init()
        if model is None:
            raise ConfigError("model_init returned None: it must return a torch.nn.Module.")
        return model

    def add_callback(self, callback):
        self.callback_handler.add_callback(callback)

    def pop_callback(self, callback):
        return self.callback_handler.pop_callback(callback)

    def remove_callback(self, callback):
        self.callback_handler.remove_callback(callback)

    @property
    def tokenizer(self):
        return self.processing_class

    def _validate_datasets(self):
        args = self.args
        if args.eval_strategy != "no" and self.eval_dataset is None:
            raise ConfigError(f"eval_strategy={args.eval_strategy!r} needs an eval_dataset: pass "
                              "Trainer(eval_dataset=...) or set eval_strategy='no'.")
        if args.load_best_model_at_end and self.eval_dataset is None:
            raise ConfigError("load_best_model_at_end=True needs an eval_dataset to pick the best model.")
        if args.eval_on_start and self.eval_dataset is None:
            raise ConfigError("eval_on_start=True needs an eval_dataset.")
        if self.train_dataset is not None:
            if is_iterable_dataset(self.train_dataset) or not has_length(self.train_dataset):
                if args.max_steps <= 0:
                    raise ConfigError("train_dataset has no length (an IterableDataset), so the number of steps "
                                      "is unknown: set max_steps=<number of optimizer steps> in TrainingArguments.")
            else:
                self.train_dataset, _ = prepare_columns(self.train_dataset, unwrap_model(self.model),
                                                        self.label_names, False, "train_dataset",
                                                        rename_label=not self._user_collator)
        check_not_column_dict(self.eval_dataset, "eval_dataset")
        eval_sets = self.eval_dataset if isinstance(self.eval_dataset, dict) else {"eval": self.eval_dataset}
        for name, ds in eval_sets.items():
            if ds is not None and has_length(ds) and len(ds) == 0:
                raise DataError(f"eval_dataset {name!r} is empty (0 rows). Pass a non-empty evaluation split.")

    # ================================================================== data
    def _remove_unused(self, dataset, description: str):
        if dataset is None or is_iterable_dataset(dataset):
            return dataset, self.data_collator
        model = unwrap_model(self.model)
        if self.args.remove_unused_columns:
            dropped = dropped_columns(dataset, model, self.label_names)
            key = f"{description}:{','.join(dropped)}"
            if dropped and key not in self._dropped_logged and self.dist.is_main_process:
                self._dropped_logged.add(key)
                logger.info("The following columns in %s are not used by %s.forward and were removed: %s",
                            description, type(model).__name__, ", ".join(dropped))
        dataset, keep = prepare_columns(dataset, model, self.label_names, self.args.remove_unused_columns, description,
                                        rename_label=not self._user_collator)
        collator = RemoveColumnsCollator(self.data_collator, keep) if keep else self.data_collator
        return dataset, collator

    def _dataloader_kwargs(self) -> dict:
        args = self.args
        kwargs = {"num_workers": args.dataloader_num_workers,
                  "pin_memory": args.dataloader_pin_memory and self.device.type == "cuda"}
        if args.dataloader_num_workers > 0:
            kwargs["persistent_workers"] = args.dataloader_persistent_workers
            if args.dataloader_prefetch_factor is not None:
                kwargs["prefetch_factor"] = args.dataloader_prefetch_factor
            if args.dataloader_multiprocessing_context is not None:
                kwargs["multiprocessing_context"] = args.dataloader_multiprocessing_context
        return kwargs

    def _train_sampling(self, dataset, collator):
        """(strategy, row lengths or None) for the train sampler. ``"auto"`` (the default) groups rows of
        similar length when that saves padding: the lengths are cheap to read (an Arrow ``input_ids`` or
        length column, or a list of rows), they differ, and the collator pads each batch to its longest row
        (not to a fixed ``max_length``). Otherwise it is HF's random order."""
        args = self.args
        strategy = args.train_sampling_strategy
        if strategy == "auto" and not args.max_tokens_per_batch:
            lengths = dataset_lengths(dataset, args.length_column_name, allow_slow=False)
            _, fixed = collator_padding(collator)
            varied = lengths is not None and len(lengths) > 1 and int(lengths.min()) != int(lengths.max())
            strategy = "group_by_length" if varied and fixed is None else "random"
            return strategy, (lengths if strategy == "group_by_length" else None)
        if strategy != "group_by_length" and not args.max_tokens_per_batch:
            return strategy, None
        lengths = dataset_lengths(dataset, args.length_column_name)  # Arrow column, computed once
        if lengths is None:
            raise DataError("train_sampling_strategy='group_by_length' and max_tokens_per_batch need the row lengths: "
                            f"give the dataset an 'input_ids' or {args.length_column_name!r} column.")
        return strategy, lengths

    def get_train_dataloader(self) -> torch.utils.data.DataLoader:
        if self.train_dataset is None:
            raise ConfigError("Trainer.train() needs a train_dataset: pass Trainer(train_dataset=...).")
        args = self.args
        dataset, collator = self._remove_unused(self.train_dataset, "train_dataset")
        generator = torch.Generator()
        generator.manual_seed(args.data_seed if args.data_seed is not None else args.seed)
        if is_iterable_dataset(dataset):
            dataset = self.dist.shard_iterable(dataset, args.per_device_train_batch_size)  # torchrun: this rank's rows
            return torch.utils.data.DataLoader(dataset, batch_size=args.per_device_train_batch_size,
                                               collate_fn=collator, drop_last=args.dataloader_drop_last,
                                               generator=generator, **self._dataloader_kwargs())
        strategy, lengths = self._train_sampling(dataset, collator)
        seed = args.data_seed if args.data_seed is not None else args.seed
        if args.max_tokens_per_batch:  # variable rows per batch, padded tokens per rank <= the budget
            multiple, fixed = collator_padding(collator)
            sampler = TokenBudgetBatchSampler(
                lengths if fixed is None else np.full(len(lengths), fixed), args.max_tokens_per_batch,
                shuffle=strategy != "sequential", seed=seed,
                world_size=self.dist.world_size, rank=self.dist.rank, pad_to_multiple_of=multiple,
                drop_last=args.dataloader_drop_last)
        else:
            sampler = ResumableBatchSampler(
                len(dataset), args.per_device_train_batch_size, shuffle=strategy != "sequential", seed=seed,
                drop_last=args.dataloader_drop_last, world_size=self.dist.world_size, rank=self.dist.rank,
                lengths=lengths, group_by_length=strategy == "group_by_length",
                # groups of whole optimizer steps: batch 16 and 4 x 4 accumulation see the same rows
                group_batches=args.gradient_accumulation_steps)
        if len(dataset) == 0:
            raise DataError("train_dataset is empty (0 rows). Check the split and any .filter()/.select() applied to it.")
        if len(sampler) == 0:
            raise DataError(f"train_dataset has {len(dataset)} rows, fewer than one batch of "
                            f"{args.per_device_train_batch_size * self.dist.world_size} with dataloader_drop_last=True: "
                            "lower per_device_train_batch_size or set dataloader_drop_last=False.")
        dataset, collator = with_batch_seeds(dataset, collator)  # collator randomness from (seed, epoch, batch)
        # our own generator: creating an iterator must not consume the global RNG (exact resume)
        return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collator,
                                           generator=generator, **self._dataloader_kwargs())

    def _get_eval_dataloader(self, eval_dataset=None) -> torch.utils.data.DataLoader:
        """get_eval_dataloader without the persistent-workers cache (trainer_methods.py)."""
        if isinstance(eval_dataset, str):  # as HF: a name of a dict eval_dataset
            if not isinstance(self.eval_dataset, dict) or eval_dataset not in self.eval_dataset:
                names = sorted(self.eval_dataset) if isinstance(self.eval_dataset, dict) else []
                raise ConfigError(f"get_eval_dataloader({eval_dataset!r}): there is no eval_dataset of that name "
                                  f"(names: {', '.join(names) or 'none, eval_dataset is not a dict'}).")
            eval_dataset = self.eval_dataset[eval_dataset]
        if eval_dataset is None:
            eval_dataset = self.eval_dataset
        if eval_dataset is None:
            raise ConfigError("evaluate() needs an eval_dataset: pass Trainer(eval_dataset=...) or evaluate(eval_dataset).")
        return self._prediction_dataloader(eval_dataset, "eval_dataset")

    def get_test_dataloader(self, test_dataset) -> torch.utils.data.DataLoader:
        return self._prediction_dataloader(test_dataset, "test_dataset")

    def _prediction_dataloader(self, dataset, description):
        dataset, collator = self._remove_unused(dataset, description)
        kwargs = self._dataloader_kwargs()
        if is_iterable_dataset(dataset):
            return torch.utils.data.DataLoader(dataset, batch_size=self.args.per_device_eval_batch_size,
                                               collate_fn=collator, **kwargs)
        if len(dataset) == 0:
            raise DataError(f"{description} is empty (0 rows).")
        # run the batches sorted by length (less padding); evaluation_loop restores dataset order
        lengths = dataset_lengths(dataset, self.args.length_column_name, allow_slow=False) \
            if self.eval_sort_by_length and is_row_preserving(collator) else None
        multiple, fixed = collator_padding(collator)
        fill = (self.eval_fill_batches and lengths is not None and fixed is None and self.args.eval_do_concat_batches
                and not getattr(self.args, "predict_with_generate", False) and not getattr(self.args, "batch_eval_metrics", False))
        bs = self.args.per_device_eval_batch_size
        sampler = EvalBatchSampler(len(dataset), bs, self.dist.world_size, self.dist.rank, lengths=lengths,
                                   fill_to_longest=fill, pad_to_multiple_of=multiple,
                                   max_rows=max(1, int(self.eval_max_rows_factor)) * bs,
                                   fill_max_tokens=self.eval_fill_cpu_max_tokens if self.device.type == "cpu" else None)
        return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collator, **kwargs)

    # ================================================================== optimizer and schedule
    def create_optimizer(self):
        if self.optimizer is None:
            model = unwrap_model(self.model)
            if self.optimizer_cls_and_kwargs is not None:
                from .optim import decay_parameter_names
                cls, kwargs = self.optimizer_cls_and_kwargs
                decay = decay_parameter_names(model)
                params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
                groups = [{"params": [p for n, p in params if n in decay], "weight_decay": self.args.weight_decay},
                          {"params": [p for n, p in params if n not in decay], "weight_decay": 0.0}]
                self.optimizer = cls([g for g in groups if g["params"]], **kwargs)
            else:
                from .optim import create_optimizer
                self.optimizer = create_optimizer(model, self.args, self.device)
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None:
            from .optim import create_scheduler
            self.lr_scheduler = create_scheduler(
                self.args.lr_scheduler_type, optimizer or self.optimizer,
                num_warmup_steps=self.args.get_warmup_steps(num_training_steps),
                num_training_steps=num_training_steps, kwargs=self.args.lr_scheduler_kwargs)
        return self.lr_scheduler

    def create_optimizer_and_scheduler(self, num_training_steps: int):
        self.create_optimizer()
        self.create_scheduler(num_training_steps=num_training_steps, optimizer=self.optimizer)

    # ================================================================== train
    @holds_output_dir_lock  # one run per output_dir (the writing rank locks it until train() returns or raises)
    @restores_signal_handlers
    def train(self, resume_from_checkpoint: str | bool | None = None, trial=None,
              ignore_keys_for_eval: list[str] | None = None, **kwargs):
        if kwargs:
            raise ConfigError(f"train() got unexpected arguments {sorted(kwargs)}; it takes "
                              "resume_from_checkpoint, trial and ignore_keys_for_eval.")
        args = self.args
        if resume_from_checkpoint is None:
            resume_from_checkpoint = args.resume_from_checkpoint
        if resume_from_checkpoint is False:
            resume_from_checkpoint = None
        newest_complete = resume_from_checkpoint is True  # a corrupt newest one falls back to an earlier one
        if resume_from_checkpoint is True:
            from .checkpoint import latest_checkpoint
            resume_from_checkpoint = latest_checkpoint(args.output_dir)
            if resume_from_checkpoint is None:
                raise CheckpointError(f"resume_from_checkpoint=True but {args.output_dir!r} holds no complete "
                                      "checkpoint-<step> directory. Train from scratch (drop the argument) or point "
                                      "resume_from_checkpoint at a checkpoint directory.")
        self._memory_tracker.start("train")
        self._check_output_dir()
        # a new run, as transformers: model_init makes a new (seeded) model and with it a new optimizer and
        # scheduler; without model_init the optimizer the last train() made is kept and the scheduler made again
        if self.model_init is not None and (self.optimizer is None or self._created_optimizer):
            set_seed(args.seed, deterministic=args.full_determinism)
            self.model = self.call_model_init(trial).to(self.device)
            self.model_wrapped = self.model
            self.callback_handler.model = self.model
            self.optimizer, self.lr_scheduler = None, None
        elif self._created_lr_scheduler:
            self.lr_scheduler = None
        from .special_tokens import align_special_tokens
        align_special_tokens(self.model, self.processing_class)  # e.g. GPT-2's pad token into its config

        train_dataloader = self.get_train_dataloader()
        from .validation import preflight
        preflight(self, train_dataloader)  # bad labels, ids, lengths, pad token, metrics: before any step
        batch_sampler = getattr(train_dataloader, "batch_sampler", None)
        sampler = batch_sampler if isinstance(batch_sampler, ResumableBatchSampler) else None
        # a subclass's get_train_dataloader may return any iterable of batches: with a length it has epochs (as HF)
        sized = sampler if sampler is not None else train_dataloader if (
            has_length(train_dataloader) and not is_iterable_dataset(getattr(train_dataloader, "dataset", None))) else None
        accum = args.gradient_accumulation_steps
        if sized is not None:
            batches_per_epoch = len(sized)
            plan = EpochPlan(sized, accum)  # steps per epoch; exact when token budgets vary them by epoch
            steps_per_epoch = plan.steps(0)
            if args.max_steps > 0:
                max_steps = args.max_steps
                num_epochs = plan.num_epochs(max_steps)
            else:
                max_steps = plan.total_steps(args.num_train_epochs)
                num_epochs = math.ceil(args.num_train_epochs)
            num_examples = sampler.num_samples if sampler is not None else self.num_examples(train_dataloader)
        else:  # iterable dataset: max_steps was checked at construction (a subclass's loader: here)
            if args.max_steps <= 0:
                raise ConfigError(f"get_train_dataloader() returned a {type(train_dataloader).__name__} without a "
                                  "length, so the number of steps is unknown: set max_steps=<number of optimizer "
                                  "steps> in TrainingArguments.")
            batches_per_epoch = None
            steps_per_epoch = max_steps = args.max_steps
            num_epochs = sys.maxsize
            num_examples = max_steps * args.per_device_train_batch_size * accum * self.dist.world_size

        self._set_up_model_for_training()  # before the optimizer: FSDP2 replaces the parameters with sharded ones
        optimizer_before, scheduler_before = self.optimizer, self.lr_scheduler
        self.create_optimizer_and_scheduler(num_training_steps=max_steps)
        self._created_optimizer = self._created_optimizer or self.optimizer is not optimizer_before
        self._created_lr_scheduler = self.lr_scheduler is not scheduler_before
        self.dist.check_optimizer(self.optimizer, self.model)
        self.callback_handler.optimizer, self.callback_handler.lr_scheduler = self.optimizer, self.lr_scheduler
        self.callback_handler.train_dataloader = train_dataloader
        model = self.model_wrapped

        self.state = TrainerState(
            max_steps=max_steps, num_train_epochs=num_epochs if sized is not None else 1,
            train_batch_size=args.per_device_train_batch_size,
            logging_steps=_ratio_to_steps(args.logging_steps, max_steps),
            eval_steps=_ratio_to_steps(args.eval_steps or args.logging_steps, max_steps),
            save_steps=_ratio_to_steps(args.save_steps, max_steps),
            is_local_process_zero=self.dist.local_rank == 0, is_world_process_zero=self.dist.is_main_process)
        self.state.stateful_callbacks = {}
        epochs_trained, steps_skipped = 0, 0
        if resume_from_checkpoint is not None:
            resume_from_checkpoint = self._load_from_checkpoint(resume_from_checkpoint, max_steps,
                                                                fall_back=newest_complete)
            epochs_trained, steps_skipped = plan.locate(self.state.global_step) if sampler is not None else \
                divmod(self.state.global_step, steps_per_epoch)

        self._print_training_header(num_examples, num_epochs, max_steps, resume_from_checkpoint, sampler)
        self._install_signal_handlers()
        self.control = self.callback_handler.on_train_begin(args, self.state, self.control)
        if args.eval_on_start and self.state.global_step == 0:
            self._evaluate(ignore_keys_for_eval, skip_scheduler=True)  # as transformers: no scheduler step yet

        start_time = time.time()
        self._total_loss = torch.zeros((), device=self.device)  # sum of step losses over the run
        self._log_loss = torch.zeros((), device=self.device)    # since the last log
        self._log_steps = 0
        self._total_finite = torch.zeros((), device=self.device)  # steps whose loss was finite (NaN/inf are
        self._log_finite = torch.zeros((), device=self.device)    # left out of the logged mean, as HF does)
        self._nonfinite_total = torch.zeros((), dtype=torch.long, device=self.device)
        self._nonfinite_run = torch.zeros((), dtype=torch.long, device=self.device)
        self._nonfinite_worst = torch.zeros((), dtype=torch.long, device=self.device)  # longest run so far
        self._grad_norm = None
        self._throughput = _Throughput(self.state, unwrap_model(self.model), self.device, self.dist)
        if resume_from_checkpoint is not None:  # the run continues as if it had never stopped
            extra = self._resumed_extra
            self._total_loss.fill_(extra.get("total_loss", 0.0))
            self._log_loss.fill_(extra.get("log_loss", 0.0))
            self._log_steps = extra.get("log_steps", 0)
            self._total_finite.fill_(extra.get("total_finite", self.state.global_step))
            self._log_finite.fill_(extra.get("log_finite", self._log_steps))
            self._nonfinite_total.fill_(extra.get("nonfinite_total", 0))
        # speed metrics count this call's work only (a resumed run does not claim the steps before it)
        speed_steps0, speed_samples0 = self.state.global_step, self.state.samples_seen

        for epoch in range(epochs_trained, num_epochs):
            skip = steps_skipped if epoch == epochs_trained else 0
            if sampler is not None:
                sampler.set_epoch(epoch, start_batch=skip * accum)
            self.control = self.callback_handler.on_epoch_begin(args, self.state, self.control)
            steps_in_epoch = steps_per_epoch if batches_per_epoch is None else plan.steps(epoch)
            batches = iter(train_dataloader)
            if skip and sampler is None and batches_per_epoch is not None and not args.ignore_data_skip:
                _take(batches, skip * accum)  # a subclass's own loader, resumed: pass the batches already trained on (HF)
            for step_in_epoch in range(skip, steps_in_epoch):
                micro_batches = _take(batches, accum)
                if not micro_batches:
                    if batches_per_epoch is None:  # iterable dataset exhausted: start it again
                        batches = iter(train_dataloader)
                        micro_batches = _take(batches, accum)
                    if not micro_batches:
                        break
                self._optimizer_step(model, micro_batches, epoch, step_in_epoch, steps_in_epoch)
                self._maybe_log_save_evaluate(model, ignore_keys_for_eval)
                if self.control.should_epoch_stop or self.control.should_training_stop:
                    break
            self.control = self.callback_handler.on_epoch_end(args, self.state, self.control)
            self._maybe_log_save_evaluate(model, ignore_keys_for_eval, epoch_end=True)
            if self.control.should_training_stop or self.state.global_step >= max_steps:
                break

        self._restore_signal_handlers()
        self._throughput.flush()  # every rank: the rows and tokens since the last log, summed over ranks
        if args.load_best_model_at_end and self.state.best_model_checkpoint is not None:
            self._load_best_model()
        runtime = time.time() - start_time
        total, finite = torch.stack([self._total_loss, self._total_finite]).tolist()  # one read
        train_loss = total / finite if finite else float("nan")
        steps_done = max(self.state.global_step - speed_steps0, 1)
        samples = self.state.samples_seen - speed_samples0
        metrics = {
            "train_runtime": round(runtime, 4),
            "train_samples_per_second": round(samples / runtime, 3) if runtime > 0 else 0.0,
            "train_steps_per_second": round(steps_done / runtime, 3) if runtime > 0 else 0.0,
            "total_flos": float(self.state.total_flos),
            "train_loss": train_loss,
        }
        if self.state.skipped_nonfinite_steps:
            metrics["train_skipped_nonfinite_steps"] = self.state.skipped_nonfinite_steps
        self._memory_tracker.stop("train", metrics)  # skip_memory_metrics=False: train_mem_* (and init_mem_*)
        self.log(metrics)
        self.control = self.callback_handler.on_train_end(args, self.state, self.control)
        self._finish_current_push()  # as transformers: wait for the checkpoint pushes in flight
        if args.write_report and self.dist.is_main_process:
            self._write_report()
        return TrainOutput(self.state.global_step, train_loss, metrics)

    def _optimizer_step(self, model, micro_batches: list[dict], epoch: int, step_in_epoch: int, steps_in_epoch: int):
        """One optimizer step over the accumulated micro-batches; the loss is normalised by the number
        of label items in the whole accumulated (and, under DDP, global) batch, so accumulation and
        data parallelism give the same gradients as one big batch."""
        args = self.args
        counts, num_items = self._count_items(micro_batches)
        self.control = self.callback_handler.on_step_begin(args, self.state, self.control)
        for i, batch in enumerate(micro_batches):
            last = i == len(micro_batches) - 1
            self._throughput.count_batch(batch)
            self._micro_batch_items = counts[i]
            with self.dist.no_sync(model, skip=not last):
                loss = self.training_step(model, batch, num_items)
            self._micro_batch_items = None
            step_loss = loss if i == 0 else step_loss + loss
            if not last:
                self.control = self.callback_handler.on_substep_end(args, self.state, self.control)
        step_loss = self.dist.mean_over_ranks(step_loss)  # every rank logs the global batch's loss
        finite = torch.isfinite(step_loss)
        step_loss = torch.where(finite, step_loss, torch.zeros_like(step_loss))
        self._log_loss += step_loss
        self._total_loss += step_loss
        self._log_finite += finite
        self._total_finite += finite

        self.control = self.callback_handler.on_pre_optimizer_step(args, self.state, self.control)
        self.precision.unscale_(self.optimizer)
        self._grad_norm = self._clip_gradients(model)
        self._guarded_optimizer_step()
        self.control = self.callback_handler.on_optimizer_step(args, self.state, self.control)
        if not steps_on_metric(self.lr_scheduler):  # those are stepped with the metric after evaluations
            self.lr_scheduler.step()
        model.zero_grad(set_to_none=True)

        self.state.global_step += 1
        self.state.epoch = epoch + (step_in_epoch + 1) / steps_in_epoch
        self._log_steps += 1
        self.control = self.callback_handler.on_step_end(args, self.state, self.control)

    def _clip_gradients(self, model) -> torch.Tensor:
        params = [p for p in model.parameters() if p.grad is not None]
        if not params:
            return torch.zeros((), device=self.device)
        max_norm = self.args.max_grad_norm if self.args.max_grad_norm else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)
        return norm.full_tensor() if hasattr(norm, "full_tensor") else norm  # FSDP2: a replicated DTensor

    def _guarded_optimizer_step(self):
        """Skips the update when the gradients are NaN/inf. With fused AdamW the skip happens on the
        device (the optimizer's found_inf), so nothing waits; other optimizers read one flag."""
        if self.precision.scaler is not None:  # the GradScaler skips non-finite steps itself
            self.precision.step(self.optimizer)
            return
        bad = (~torch.isfinite(self._grad_norm)).to(torch.long)
        self._nonfinite_total += bad
        self._nonfinite_run = (self._nonfinite_run + bad) * bad
        self._nonfinite_worst = torch.maximum(self._nonfinite_worst, self._nonfinite_run)  # a run between checks
        if _supports_found_inf(self.optimizer):
            self.optimizer.found_inf = bad.to(torch.float32)
            self.optimizer.step()
            del self.optimizer.found_inf
        elif not bool(bad):
            self.optimizer.step()

    def _count_items(self, micro_batches: list[dict]):
        """Loss items per micro-batch and in the whole step (see ``loss_scaling``), counted on the host from the
        collated (still CPU) batches. Single process: plain ints, no device work. DDP: one all-reduce."""
        shift = shifts_labels(unwrap_model(self.model))
        counts = [count_items(b, self.label_names, shift) for b in micro_batches]
        total = sum(counts)
        if self.dist.enabled and self.args.average_tokens_across_devices:
            t = torch.tensor(float(total), dtype=torch.float32)
            t = t.pin_memory() if self.device.type == "cuda" else t
            total = self.dist.all_reduce_sum(t.to(self.device, non_blocking=True))
        return counts, total

    def training_step(self, model, inputs: dict, num_items_in_batch=None) -> torch.Tensor:
        model.train()
        inputs = self._prepare_inputs(inputs)
        user_fn = type(self).compute_loss
        self._normalised_by_base = False  # set by Trainer.compute_loss when it divides by num_items_in_batch
        with self.precision.autocast():
            if user_fn is Trainer.compute_loss or takes_num_items(user_fn):
                loss = self.compute_loss(model, inputs, num_items_in_batch=num_items_in_batch)
            else:  # an override written before num_items_in_batch existed
                loss = self.compute_loss(model, inputs)
        if num_items_in_batch is not None and \
                not user_loss_is_normalised(self, Trainer.compute_loss, self._normalised_by_base):
            items = getattr(self, "_micro_batch_items", None)  # a per-micro-batch mean: its share of the step
            items = count_items(inputs, self.label_names) if items is None else items
            loss = loss * (items / num_items_in_batch) if items else zero_loss(unwrap_model(model))
        if self.dist.enabled and self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.dist.world_size  # normalised by the global count; DDP / FSDP2 average over ranks
        self.precision.backward(loss)
        return loss.detach()  # as transformers: its mean over the ranks is the global batch's loss

    def compute_loss(self, model, inputs: dict, return_outputs: bool = False, num_items_in_batch=None):
        """The model's loss over this micro-batch; given ``num_items_in_batch`` (the step's loss items), its share
        of the step's mean: ``sum / num_items_in_batch`` (see ``loss_scaling``)."""
        if uses_chunked_loss(self, model, inputs):  # causal LM, training step: no logits tensor (chunked_loss.py)
            self._normalised_by_base = num_items_in_batch is not None
            return compute_chunked_loss(self, model, inputs, return_outputs, num_items_in_batch)
        labels = None
        if (self._label_smoothing_factor > 0 or self.compute_loss_func is not None) and "labels" in inputs:
            labels = inputs["labels"]
            inputs = {k: v for k, v in inputs.items() if k != "labels"}
        passed = num_items_in_batch is not None and model_takes_num_items(unwrap_model(model))
        self._normalised_by_base = num_items_in_batch is not None
        outputs = model(**inputs, num_items_in_batch=num_items_in_batch) if passed else model(**inputs)
        if self.compute_loss_func is not None:
            loss = self.compute_loss_func(outputs, labels, num_items_in_batch=num_items_in_batch)
            return (loss, outputs) if return_outputs else loss
        shift = shifts_labels(unwrap_model(model))
        if labels is not None:
            loss = _label_smoothed_loss(outputs, labels, self._label_smoothing_factor, shift)
        else:
            if isinstance(outputs, Mapping) and outputs.get("loss") is None or \
                    not isinstance(outputs, Mapping) and not isinstance(outputs, (tuple, list)):
                present = list(outputs.keys()) if isinstance(outputs, Mapping) else type(outputs).__name__
                raise ModelError(
                    f"The model did not return a loss (its outputs: {present}). Give the batches a 'labels' "
                    f"column (or {self.label_names}), or subclass Trainer and override compute_loss.")
            loss = outputs["loss"] if isinstance(outputs, Mapping) else outputs[0]
        if num_items_in_batch is not None and (labels is not None or not passed):  # a mean: weight it
            items = getattr(self, "_micro_batch_items", None)
            if items is None:  # called outside the training loop
                items = count_items({**inputs, "labels": labels} if labels is not None else inputs, self.label_names, shift)
            loss = weighted(loss, outputs, items, num_items_in_batch)
        return (loss, outputs) if return_outputs else loss

    def _prepare_inputs(self, inputs: dict) -> dict:
        non_blocking = self.device.type == "cuda"
        if isinstance(inputs, (list, tuple)):  # a collator's own structure, for an overridden compute_loss (as HF)
            return type(inputs)(self._prepare_inputs(v) if isinstance(v, (Mapping, list, tuple)) else
                                v.to(self.device, non_blocking=non_blocking) if isinstance(v, torch.Tensor) else v
                                for v in inputs)
        return {k: v.to(self.device, non_blocking=non_blocking) if isinstance(v, torch.Tensor) else v
                for k, v in inputs.items()}

    def _set_up_model_for_training(self):
        args = self.args
        model = unwrap_model(self.model)
        config = getattr(model, "config", None)
        if config is not None and hasattr(config, "use_cache"):
            config.use_cache = args.use_cache  # a KV cache in training wastes memory and breaks packing masks
        prepare_model_for_training(self, model)  # activation checkpointing; chunked-loss checks (memory.py)
        wrapped = self.dist.wrap_model(model)
        self.precision.scaler = self.dist.adapt_grad_scaler(self.precision.scaler)  # fp16 + FSDP2: agreed inf checks
        if args.torch_compile:
            wrapped = torch.compile(wrapped, backend=args.torch_compile_backend or "inductor",
                                    mode=args.torch_compile_mode)
        self.model_wrapped = wrapped

    # ================================================================== log / save / evaluate
    def _maybe_log_save_evaluate(self, model, ignore_keys_for_eval, epoch_end: bool = False):
        args = self.args
        if self.control.should_log and self._log_steps > 0:
            total, finite = torch.stack([self._log_loss, self._log_finite]).tolist()  # one read
            logs = {"loss": round(total / finite, 4) if finite else float("nan")}
            if self._grad_norm is not None:
                logs["grad_norm"] = float(self._grad_norm.item())
            logs["learning_rate"] = self._get_learning_rate()
            logs.update(self._throughput.read())
            self._log_loss.zero_()
            self._log_finite.zero_()
            self._log_steps = 0
            self._check_nonfinite()
            self.log(logs)
        elif epoch_end:
            self._check_nonfinite()
        metrics = None
        if self.control.should_evaluate:
            metrics = self._evaluate(ignore_keys_for_eval)
        if args.save_strategy == "best":
            self.control.should_save = metrics is not None and self._last_eval_was_best
        if self.control.should_save:
            self._save_checkpoint(metrics)
            self.control = self.callback_handler.on_save(args, self.state, self.control)
        # under torchrun every rank must stop at the same step (the checkpoint is collective)
        self._signal_received = self.dist.agreed_signal(self._signal_received)
        if self._signal_received is not None:
            self._stop_on_signal()

    def _get_learning_rate(self) -> float:
        if steps_on_metric(self.lr_scheduler):
            return float(self.optimizer.param_groups[0]["lr"])
        return float(self.lr_scheduler.get_last_lr()[0])

    def _check_nonfinite(self):
        if self.precision.scaler is not None:
            return
        self.state.skipped_nonfinite_steps = int(self._nonfinite_total.item())
        run, worst = torch.stack([self._nonfinite_run, self._nonfinite_worst]).tolist()
        limit = self.args.max_consecutive_nonfinite_steps
        if max(run, worst) >= limit:
            last = self.state.best_model_checkpoint or self._last_checkpoint_path() or "none yet"
            where = f"up to step {self.state.global_step}" if run >= limit else \
                f"ending before step {self.state.global_step - run}"
            raise NonFiniteLossError(
                f"The loss or gradients were NaN/inf for {max(run, worst)} consecutive steps ({where}); those "
                f"updates were skipped and training stopped. Last good checkpoint: "
                f"{last}. Lower learning_rate, keep max_grad_norm on, check the data for bad values, or use bf16 "
                f"instead of fp16. (max_consecutive_nonfinite_steps={self.args.max_consecutive_nonfinite_steps})")

    def _last_checkpoint_path(self):
        from .checkpoint import latest_checkpoint
        try:
            return latest_checkpoint(self.args.output_dir)
        except Exception:
            return None

    def _evaluate(self, ignore_keys=None, skip_scheduler: bool = False):
        metrics = self.evaluate(ignore_keys=ignore_keys)
        self._last_eval_was_best = self._update_best(metrics)
        if not skip_scheduler and self.lr_scheduler is not None and steps_on_metric(self.lr_scheduler):
            key = self.args.metric_for_best_model or "loss"  # as transformers: the best-model metric
            key = key if key.startswith("eval_") else f"eval_{key}"
            if key not in metrics:
                raise ConfigError(f"The learning-rate scheduler ({type(self.lr_scheduler).__name__}) is stepped with "
                                  f"{key!r} (metric_for_best_model), which the evaluation did not produce; it produced "
                                  f"{', '.join(sorted(metrics))}. Set metric_for_best_model to one of those.")
            self.lr_scheduler.step(metrics[key])
        return metrics

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self.state.epoch is not None:
            logs["epoch"] = self.state.epoch
        output = {**logs, "step": self.state.global_step}
        self.state.log_history.append(output)
        self.control = self.callback_handler.on_log(self.args, self.state, self.control, logs)

    # ================================================================== evaluate / predict
    def evaluate(self, eval_dataset=None, ignore_keys: list[str] | None = None,
                 metric_key_prefix: str = "eval") -> dict[str, float]:
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

    def predict(self, test_dataset, ignore_keys: list[str] | None = None,
                metric_key_prefix: str = "test") -> PredictionOutput:
        self._memory_tracker.start("test")
        dataloader = self.get_test_dataloader(test_dataset)
        output = self._run_evaluation(dataloader, "Prediction", ignore_keys, metric_key_prefix)
        self.control = self.callback_handler.on_predict(self.args, self.state, self.control, output.metrics)
        self._memory_tracker.stop("test", output.metrics)
        return PredictionOutput(predictions=output.predictions, label_ids=output.label_ids, metrics=output.metrics)

    def _run_evaluation(self, dataloader, description: str = "Evaluation", ignore_keys=None,
                        metric_key_prefix: str = "eval", prediction_loss_only=None, quiet: bool = False):
        """evaluation_loop plus the speed metrics, with no logging and no on_evaluate/on_predict: what evaluate()
        and predict() compute. ``quiet`` (the pre-flight dry run) also skips the per-batch callbacks and reports a
        failing compute_metrics as eval_preflight.MetricsFailed (chained to the user's exception)."""
        previous = getattr(self, "_eval_quiet", False)
        self._eval_quiet = quiet
        start = time.time()
        try:
            output = self.evaluation_loop(dataloader, description, prediction_loss_only=prediction_loss_only,
                                          ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
        finally:
            self._eval_quiet = previous
        output.metrics.update(_speed_metrics(metric_key_prefix, start, output.num_samples,
                                             self._num_eval_steps(dataloader, output.num_samples)))
        return output

    def _compute_metrics(self, eval_prediction: EvalPrediction) -> dict:
        if not getattr(self, "_eval_quiet", False):
            return _check_metrics(self.compute_metrics(eval_prediction))
        try:
            result = self.compute_metrics(eval_prediction)
        except Exception as e:  # the pre-flight decides whether this can wait for the first evaluation
            from .eval_preflight import MetricsFailed
            raise MetricsFailed(e) from e
        return _check_metrics(result)

    def _num_eval_steps(self, dataloader, num_samples: int) -> int:
        """Batches run: the dataloader's length or, for an iterable dataset without one (each process runs all
        of it), its rows over the batch size."""
        if has_length(dataloader):
            return len(dataloader)
        return math.ceil(num_samples / self.args.per_device_eval_batch_size)

    def evaluation_loop(self, dataloader, description: str, prediction_loss_only: bool | None = None,
                        ignore_keys: list[str] | None = None, metric_key_prefix: str = "eval"):
        """Runs prediction_step over the data; every batch's outputs leave the device as produced."""
        args = self.args
        prediction_loss_only = args.prediction_loss_only if prediction_loss_only is None else prediction_loss_only
        model = self.model_wrapped if self.model_wrapped is not None else self.model
        if self.precision.eval_dtype is not None and not getattr(self, "_cast_for_eval", False):
            self.model.to(self.precision.eval_dtype)
        model.eval()
        quiet = getattr(self, "_eval_quiet", False)  # the pre-flight dry run: no callbacks
        if not quiet:
            self.callback_handler.eval_dataloader = dataloader
        self._has_labels_seen = False  # set by prediction_step: whether this evaluation's batches had labels
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        num_samples = 0
        preds_host, labels_host, inputs_host = [], [], []
        real_batches = getattr(getattr(dataloader, "batch_sampler", None), "num_real_batches", None)
        for step, inputs in enumerate(dataloader):
            batch_size = _batch_size(inputs)
            loss, logits, labels = self.prediction_step(model, inputs, prediction_loss_only, ignore_keys)
            if real_batches is not None and step >= real_batches:
                continue  # a padding batch: run so that every rank runs as many forwards (FSDP2), then dropped
            if loss is not None:
                loss_sum += loss.detach().to(torch.float64) * batch_size
            if logits is not None:
                if self.preprocess_logits_for_metrics is not None:
                    logits = self.preprocess_logits_for_metrics(logits, labels)
                preds_host.append(_to_host(logits))
            if labels is not None:
                labels_host.append(_to_host(labels))
            if "inputs" in args.include_for_metrics:
                inputs_host.append(_to_host(inputs.get("input_ids")))
            num_samples += batch_size
            if not quiet:
                self.control = self.callback_handler.on_prediction_step(args, self.state, self.control)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        predictions = _concat_to_numpy(preds_host) if preds_host else None
        label_ids = _concat_to_numpy(labels_host) if labels_host else None
        eval_inputs = _concat_to_numpy(inputs_host) if inputs_host else None
        # every rank gets all outputs, in rank order (= the single-process order); an iterable eval set is not
        # sharded (every rank evaluates all of it), so there is nothing to gather
        if self.dist.enabled and not is_iterable_dataset(getattr(dataloader, "dataset", None)):
            predictions, label_ids, loss_sum, num_samples, eval_inputs = self._gather_predictions(
                predictions, label_ids, loss_sum, num_samples, eval_inputs)
        # batches ran sorted by length: back to dataset order (the order spans all ranks' gathered outputs)
        inverse_order = getattr(getattr(dataloader, "batch_sampler", None), "inverse_order", None)
        predictions, label_ids = restore_order(predictions, inverse_order), restore_order(label_ids, inverse_order)
        eval_inputs = restore_order(eval_inputs, inverse_order)
        metrics: dict[str, Any] = {}
        if self.compute_metrics is not None and predictions is not None and label_ids is not None:
            metrics = self._compute_metrics(EvalPrediction(predictions=predictions, label_ids=label_ids,
                                                           inputs=eval_inputs))
        if num_samples and loss_sum is not None and (self._has_labels_seen or float(loss_sum.item()) != 0.0):
            metrics["loss"] = float(loss_sum.item()) / num_samples
        metrics = {(k if k.startswith(f"{metric_key_prefix}_") else f"{metric_key_prefix}_{k}"): v
                   for k, v in metrics.items()}
        if self.precision.eval_dtype is not None:
            self.model.to(torch.float32)
        return _EvalLoopOutput(predictions, label_ids, metrics, num_samples)

    def _gather_predictions(self, predictions, label_ids, loss_sum, num_samples, inputs=None):
        """All ranks' outputs concatenated in rank order (ranks hold contiguous runs of the batches, so
        this is the single-process order); a rank without rows contributes nothing."""
        parts = self.dist.all_gather_objects((predictions, label_ids, float(loss_sum.item()), num_samples, inputs))
        def cat(i):
            found = [p[i] for p in parts if p[i] is not None]
            return _concat_to_numpy(found) if found else None
        total_loss = torch.tensor(sum(p[2] for p in parts), dtype=torch.float64)
        return cat(0), cat(1), total_loss, sum(p[3] for p in parts), cat(4)

    def prediction_step(self, model, inputs: dict, prediction_loss_only: bool,
                        ignore_keys: list[str] | None = None):
        has_labels = bool(self.label_names) and all(inputs.get(k) is not None for k in self.label_names)
        self._has_labels_seen = getattr(self, "_has_labels_seen", False) or has_labels
        loss_kwargs = {}
        if has_labels and self.compute_loss_func is not None and \
                (type(self).compute_loss is Trainer.compute_loss or takes_num_items(type(self).compute_loss)):
            # as transformers 5.x: a compute_loss_func gets this batch's label count in evaluation too (counted
            # on the host before the batch moves: no device sync)
            loss_kwargs["num_items_in_batch"] = count_items(inputs, self.label_names,
                                                            shifts_labels(unwrap_model(model)))
        inputs = self._prepare_inputs(inputs)
        if ignore_keys is None:
            config = getattr(unwrap_model(self.model), "config", None)
            ignore_keys = list(getattr(config, "keys_to_ignore_at_inference", []) or [])
        labels = None
        if has_labels:
            labels = tuple(inputs.get(name) for name in self.label_names)
            labels = labels[0] if len(labels) == 1 else labels
        with torch.no_grad(), self.precision.autocast(evaluating=True):
            if has_labels:
                loss, outputs = self.compute_loss(model, inputs, return_outputs=True, **loss_kwargs)
                loss = loss.detach().mean()
                if isinstance(outputs, Mapping):
                    logits = tuple(v for k, v in outputs.items() if k not in ignore_keys + ["loss"])
                else:
                    logits = outputs[1:]
            else:
                loss = None
                outputs = model(**inputs)
                if isinstance(outputs, Mapping):
                    logits = tuple(v for k, v in outputs.items() if k not in ignore_keys and k != "loss")
                else:
                    logits = outputs
        if prediction_loss_only:
            return loss, None, None
        logits = _nested_detach(logits)
        if isinstance(logits, tuple) and len(logits) == 1:
            logits = logits[0]
        return loss, logits, labels

    # ================================================================== best model
    def _metric_key(self) -> str:
        name = self.args.metric_for_best_model or "loss"
        return name if name.startswith("eval_") else f"eval_{name}"

    def _update_best(self, metrics: dict) -> bool:
        """Records a new best metric. When a checkpoint is saved at this step, the new best is only pending:
        ``_save_checkpoint`` makes it ``best_metric`` / ``best_global_step`` / ``best_model_checkpoint`` once the
        checkpoint is complete, and drops it if the save fails (so the best metric always names a saved model).
        Without a save at this step it is recorded at once, as HF does. Returns whether it is a new best."""
        if self.args.metric_for_best_model is None:
            return False
        key = self._metric_key()
        if key not in metrics:
            produced = sorted(k[len("eval_"):] for k in metrics
                              if k.startswith("eval_") and not k.endswith(("_runtime", "_per_second")))
            rank = self.args.process_index if self.args.world_size > 1 else None
            raise ConfigError(
                f"metric_for_best_model={self.args.metric_for_best_model!r}: evaluation produced no {key!r}"
                + (f" on process {rank} of {self.args.world_size}" if rank is not None else "")
                + (f". It produces: {', '.join(produced)}. Set metric_for_best_model to one of these, or return it "
                   f"from compute_metrics." if produced else ", only its runtime. Return it from compute_metrics.")
                + (" Every process needs it to choose the best checkpoint: an evaluate() that computes metrics on "
                   "the main process only (e.g. under `if self.args.should_save:`) must compute them on every "
                   "process (transformers fails there too)." if rank is not None else ""))
        value = metrics[key]
        stale = getattr(self, "_pending_best", None)
        if stale is not None and stale[1] != self.state.global_step:  # no save came for it: recorded as HF does
            self.state.best_metric, self.state.best_global_step = stale
            self._pending_best = None
        best = self.state.best_metric
        if best is None or (value > best if self.args.greater_is_better else value < best):
            if self.control.should_save or self.args.save_strategy == "best":
                self._pending_best = (value, self.state.global_step)
            else:
                self.state.best_metric, self.state.best_global_step = value, self.state.global_step
            return True
        return False

    # ================================================================== checkpoints
    def _save_checkpoint(self, metrics=None):
        from . import checkpoint as ckpt
        from .resume import train_fingerprint
        args = self.args
        path = os.path.join(args.output_dir, f"{ckpt.PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        previous_best = (self.state.best_metric, self.state.best_global_step, self.state.best_model_checkpoint)
        if self._throughput is not None:
            self._throughput.flush()  # collective like the save itself: the saved counts are global
        pending, self._pending_best = getattr(self, "_pending_best", None), None
        if pending is not None and pending[1] == self.state.global_step:  # written into this checkpoint's state
            self.state.best_metric, self.state.best_global_step = pending
        if self.state.best_global_step == self.state.global_step:
            self.state.best_model_checkpoint = path
        self.state.stateful_callbacks = self._callback_states()
        # FSDP2: collective, the full state gathered on rank 0; otherwise the model and optimizer themselves
        model_view, optimizer_view = self.dist.state_for_saving(self.model, None if args.save_only_model else self.optimizer)
        saved = True
        if self.dist.is_main_process or args.save_on_each_node:
            try:
                ckpt.save_checkpoint(
                    path, model=model_view, optimizer=optimizer_view, lr_scheduler=self.lr_scheduler,
                    scaler=self.precision.scaler, trainer_state=self.state.to_dict(), training_args=args.to_dict(),
                    processing_class=self.processing_class, save_only_model=args.save_only_model,
                    extra={"world_size": self.dist.world_size, "total_loss": float(self._total_loss.item()),
                           "log_loss": float(self._log_loss.item()), "log_steps": self._log_steps,
                           "total_finite": float(self._total_finite.item()),
                           "log_finite": float(self._log_finite.item()),
                           "nonfinite_total": int(self._nonfinite_total.item()),
                           "data": train_fingerprint(self)})
            except CheckpointError as e:
                if args.on_save_error == "stop":
                    raise
                logger.error("Saving checkpoint %s failed: %s. Training goes "
                             "on and the save is retried at the next save point (on_save_error='stop' stops instead).",
                             path, str(e).rstrip("."))
                saved = False
            if saved and args.save_total_limit is not None:
                ckpt.rotate_checkpoints(args.output_dir, args.save_total_limit, self.state.best_model_checkpoint)
        del model_view, optimizer_view
        if not self.dist.all_true(saved):  # collective (the barrier): every rank learns whether the write worked
            # the best-model bookkeeping changes only with a complete checkpoint
            self.state.best_metric, self.state.best_global_step, self.state.best_model_checkpoint = previous_best
        elif args.push_to_hub:
            self._push_from_checkpoint(path)  # hub.py: a background push, per hub_strategy

    def _callback_states(self) -> dict:
        return export_callback_states(self.callback_handler.callbacks + [self.control])

    def _load_from_checkpoint(self, path: str, max_steps: int, fall_back: bool = False) -> str:
        """Restore everything from ``path`` (trainwright's or transformers.Trainer's format, see resume.py);
        returns the path used: with ``fall_back`` a corrupt checkpoint gives way to an earlier one."""
        from . import resume
        model_view, optimizer_view = self.dist.state_for_loading(self.model, self.optimizer)  # FSDP2: every rank loads
        loaded = resume.load_for_resume(path, output_dir=self.args.output_dir, fall_back=fall_back, model=model_view,
                                        optimizer=optimizer_view, lr_scheduler=self.lr_scheduler,
                                        scaler=self.precision.scaler, rank=self.dist.rank,
                                        world_size=self.dist.world_size, param_model=unwrap_model(self.model))
        path, extra = loaded["path"], loaded.get("extra") or {}
        problems = resume.resume_problems(loaded, self)  # order-defining arguments, seeds, the dataset
        if problems and not self.args.ignore_data_skip:
            raise resume.refuse(path, problems)
        resume.check_steps(loaded, max_steps)
        state = TrainerState.from_dict(loaded["trainer_state"])
        state.max_steps = max_steps
        state.is_world_process_zero = self.dist.is_main_process
        state.is_local_process_zero = self.dist.local_rank == 0
        self.state = state
        self._resumed_extra = extra
        self._restore_callback_states(state.stateful_callbacks)
        return path

    def _restore_callback_states(self, states: dict):
        if self.args.restore_callback_states_from_checkpoint:  # as transformers: only when asked
            self.control = restore_callback_states(self.callback_handler, self.control, states)

    def _load_best_model(self):
        from .checkpoint import load_model_weights
        path = self.state.best_model_checkpoint
        if path and os.path.isdir(path):
            if self.dist.is_main_process:
                logger.info("Loading the best model from %s (%s=%s).", path, self._metric_key(), self.state.best_metric)
            load_model_weights(path, self.dist.state_for_loading(self.model)[0])

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False):
        from .checkpoint import save_model_dir
        output_dir = output_dir or self.args.output_dir
        # as HF, no barrier: rank 0 alone may call it (`if trainer.is_world_process_zero(): trainer.save_model()`).
        # FSDP2 gathers the full state from every rank: a rank-0-only call is refused instead of hanging
        self.dist.check_every_rank_calls("save_model")
        model_view, _ = self.dist.state_for_saving(self.model)  # FSDP2: collective, gathered on rank 0
        if self.dist.is_main_process:
            save_model_dir(output_dir, model_view, self.processing_class)
        if self.args.push_to_hub and not _internal_call:
            self._push_after_save_model()  # hub.py: as transformers, save_model pushes

    def save_state(self):
        if self.dist.is_main_process:
            import json
            from .safe_fs import write_atomic
            os.makedirs(self.args.output_dir, exist_ok=True)
            # atomic; a full disk is one warning and the previous file stays
            write_atomic(os.path.join(self.args.output_dir, "trainer_state.json"),
                         json.dumps(self.state.to_dict(), indent=2, sort_keys=True) + "\n")

    def _check_output_dir(self):
        out = self.args.output_dir
        if os.path.isfile(out):
            raise ConfigError(f"output_dir={out!r} is a file, not a directory: choose another output_dir.")
        try:
            os.makedirs(out, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"output_dir={out!r} cannot be created ({e.strerror}): choose a writable directory.") from e
        if not os.access(out, os.W_OK):
            raise ConfigError(f"output_dir={out!r} is not writable: choose a directory you can write to.")

    # ================================================================== signals
    def _install_signal_handlers(self):  # restored by train()'s signal_scope, whatever happens
        self.__dict__.setdefault("_signal_handlers", SignalHandlers()).install(self._on_signal)

    def _restore_signal_handlers(self):
        if "_signal_handlers" in self.__dict__:
            self._signal_handlers.restore()

    def _on_signal(self, signum, frame):
        if self._signal_received is not None:  # second signal: leave at once
            self._restore_signal_handlers()
            raise KeyboardInterrupt
        self._signal_received = signum
        print(f"\n{signal.Signals(signum).name} received: finishing the current step and writing a checkpoint "
              "(send it again to exit at once).", file=sys.stderr, flush=True)

    def _stop_on_signal(self):
        signum = self._signal_received
        self._save_checkpoint()
        self._restore_signal_handlers()
        self.callback_handler.on_save(self.args, self.state, self.control)
        if self.dist.is_main_process:
            print(f"Checkpoint written to {os.path.join(self.args.output_dir, f'checkpoint-{self.state.global_step}')}. "
                  f"Resume with: trainer.train(resume_from_checkpoint=True)  (CLI: trainwright train CONFIG --resume)",
                  file=sys.stderr, flush=True)
        raise SystemExit(128 + signum)

    # ================================================================== console
    def _print_training_header(self, num_examples, num_epochs, max_steps, resumed, sampler=None):
        if not self.dist.is_main_process:
            return
        args = self.args
        model = unwrap_model(self.model)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total_batch = args.per_device_train_batch_size * args.gradient_accumulation_steps * self.dist.world_size
        lines = ["***** Running training *****",
                 f"  Num examples = {num_examples:,}",
                 f"  Num Epochs = {num_epochs if num_epochs != sys.maxsize else 'unknown (iterable)'}",
                 f"  Instantaneous batch size per device = {args.per_device_train_batch_size:,}"
                 if not args.max_tokens_per_batch else
                 f"  Instantaneous batch per device = up to {args.max_tokens_per_batch:,} padded tokens (max_tokens_per_batch)",
                 f"  Total train batch size (w. parallel, distributed & accumulation) = {total_batch:,}",
                 f"  Batch order = {self._sampling_description(sampler)}",
                 f"  Gradient Accumulation steps = {args.gradient_accumulation_steps}",
                 f"  Total optimization steps = {max_steps:,}",
                 f"  Number of trainable parameters = {trainable:,}",
                 f"  Device = {self.device}" + (f" x {self.dist.world_size} processes" if self.dist.enabled else "")
                 + (f", {'bf16' if args.bf16 else 'fp16'} autocast" if args.bf16 or args.fp16 else "")]
        if resumed:
            lines.append(f"  Resuming from {resumed} at step {self.state.global_step}")
        for line in lines:  # as transformers: INFO records, shown with log_level="info"
            logger.info(line)

    def _sampling_description(self, sampler) -> str:
        """The train sampler's order in words (an iterable dataset has no sampler: its own order)."""
        if sampler is None:
            return "the order of get_train_dataloader()'s batches" if type(self).get_train_dataloader is not \
                Trainer.get_train_dataloader else "the iterable dataset's own order"
        budget = isinstance(sampler, TokenBudgetBatchSampler)
        if budget:
            what = "token budget, " + ("rows of similar length" if sampler.shuffle else "in data order")
        elif not sampler.shuffle:
            what = "in data order"
        else:
            what = "shuffled, rows of similar length batched together" if sampler.group_by_length else "shuffled"
        if self.args.train_sampling_strategy == "auto" and not budget:
            what += " (train_sampling_strategy='auto'" + ("; 'random' gives HF's order)" if sampler.group_by_length
                                                          else ")")
        return what

    def _write_report(self):
        try:
            from .report import write_report
            write_report(self.args.output_dir)
        except Exception as e:  # a report must never break a finished training run
            logger.warning("Could not write the run report: %s", e)

    # ================================================================== misc HF API
    def num_examples(self, dataloader) -> int:
        dataset = getattr(dataloader, "dataset", None)
        if dataset is not None and has_length(dataset):
            return len(dataset)
        return len(dataloader) * self.args.per_device_train_batch_size  # as HF: batches x the batch size

    def is_world_process_zero(self) -> bool:
        return self.dist.is_main_process

    def is_local_process_zero(self) -> bool:
        return self.dist.local_rank == 0

    def create_model_card(self, language: str | None = None, license: str | None = None,
                          tags: str | list[str] | None = None, model_name: str | None = None,
                          finetuned_from: str | None = None, tasks: str | list[str] | None = None,
                          dataset_tags: str | list[str] | None = None, dataset: str | list[str] | None = None,
                          dataset_args: str | list[str] | None = None) -> None:
        """Writes a README.md model card in output_dir (main process only); see trainwright.model_card."""
        from .model_card import create_model_card
        create_model_card(self, language=language, license=license, tags=tags, model_name=model_name,
                          finetuned_from=finetuned_from, tasks=tasks, dataset_tags=dataset_tags, dataset=dataset,
                          dataset_args=dataset_args)

    def get_num_trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def get_learning_rates(self) -> list[float]:
        return [group["lr"] for group in self._optimizer_or_error().param_groups]

    def get_optimizer_group(self, param: str | torch.nn.Parameter | None = None):
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

    def log_metrics(self, split: str, metrics: dict):
        if not self.is_world_process_zero():
            return
        print(f"***** {split} metrics *****")
        formatted = metrics_format(metrics)  # as transformers: 0:00:02.42, 12GF, 0.6931
        width = max((len(str(k)) for k in formatted), default=0)
        value_width = max((len(str(v)) for v in formatted.values()), default=0)
        for key in sorted(formatted):
            print(f"  {key:<{width}} = {formatted[key]:>{value_width}}")

    def save_metrics(self, split: str, metrics: dict, combined: bool = True):
        import json
        if not self.is_world_process_zero():
            return
        from .safe_fs import write_atomic
        os.makedirs(self.args.output_dir, exist_ok=True)
        # atomic; a full disk is one warning (per file) and the previous file stays
        write_atomic(os.path.join(self.args.output_dir, f"{split}_results.json"),
                     json.dumps(metrics, indent=4, sort_keys=True), what=f"{split}_results.json")
        if combined:
            path = os.path.join(self.args.output_dir, "all_results.json")
            allm = {}
            if os.path.isfile(path):
                with open(path, encoding="utf-8") as f:
                    allm = json.load(f)
            allm.update(metrics)
            write_atomic(path, json.dumps(allm, indent=4, sort_keys=True), what="all_results.json")


# ====================================================================== helpers
class _EvalLoopOutput:
    def __init__(self, predictions, label_ids, metrics, num_samples):
        self.predictions, self.label_ids, self.metrics, self.num_samples = predictions, label_ids, metrics, num_samples


class _Throughput:
    """samples/s, non-padding tokens/s, tokens seen and MFU, counted on the host from the collated
    batches (attention masks are still on the CPU then), so nothing waits for the device.

    Under torchrun each rank counts its own rows; ``flush`` (called by every rank together: at logging
    steps, before a checkpoint and at the end of ``train()``) sums the counts over the ranks into the
    state, so ``samples_seen``, ``num_input_tokens_seen``, ``total_flos`` and the logged rates are global
    figures, as in transformers."""

    def __init__(self, state: TrainerState, model, device, dist=None):
        self.state = state
        self.dist = dist
        self.last_time = time.time()
        self.samples = 0  # global, since the last read (after a flush)
        self.tokens = 0
        self.pending = [0, 0, 0]  # this rank's rows, tokens and padded input positions not yet flushed
        self.n_params = sum(p.numel() for p in model.parameters())
        # total_flos as transformers counts it (PreTrainedModel.floating_point_ops): 6 x the main input's
        # positions, padding included, x the parameters without the embeddings
        self.main_input = getattr(model, "main_input_name", "input_ids")
        try:
            self.flos_params = int(model.num_parameters(exclude_embeddings=True))
        except Exception:
            self.flos_params = self.n_params
        self.peak = None
        if device.type == "cuda":
            name = torch.cuda.get_device_name(device)
            self.peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)

    def count_batch(self, batch: dict):
        n = _batch_size(batch)
        batch = batch if isinstance(batch, Mapping) else {}  # a list/tuple batch (overridden compute_loss): rows only
        mask = batch.get("attention_mask")
        if isinstance(mask, torch.Tensor) and not mask.is_cuda:
            tokens = int(mask.sum())
        elif isinstance(batch.get("input_ids"), torch.Tensor):
            tokens = batch["input_ids"].numel()
        else:
            tokens = 0
        main = batch.get(self.main_input)
        self.pending[0] += n
        self.pending[1] += tokens
        self.pending[2] += main.numel() if isinstance(main, torch.Tensor) else 0  # shape only: no sync

    def flush(self):
        n, tokens, positions = self.pending
        if self.dist is not None and self.dist.enabled:  # one small all-reduce (CPU ints on gloo/NCCL device)
            t = torch.tensor([n, tokens, positions], dtype=torch.float64, device=self.dist.device)
            n, tokens, positions = (int(v) for v in self.dist.all_reduce_sum(t).tolist())
        self.pending = [0, 0, 0]
        self.samples += n
        self.tokens += tokens
        self.state.samples_seen += n
        self.state.num_input_tokens_seen += tokens
        self.state.total_flos += 6.0 * self.flos_params * positions

    def read(self) -> dict:
        self.flush()
        now = time.time()
        elapsed = max(now - self.last_time, 1e-9)
        out = {"samples_per_second": round(self.samples / elapsed, 3),
               "tokens_per_second": round(self.tokens / elapsed, 1),
               "num_input_tokens_seen": self.state.num_input_tokens_seen}
        if self.peak:
            out["mfu"] = round(6.0 * self.n_params * self.tokens / elapsed / self.peak, 4)
        self.last_time, self.samples, self.tokens = now, 0, 0
        return out


def _ratio_to_steps(value, max_steps: int) -> int:
    if value is None:
        return 0
    if isinstance(value, float) and value < 1:
        return max(1, math.ceil(max_steps * value))
    return int(value)


def _take(iterator, n: int) -> list:
    out = []
    for _ in range(n):
        try:
            out.append(next(iterator))
        except StopIteration:
            break
    return out


def _label_smoothed_loss(outputs, labels, epsilon: float, shift: bool):
    logits = outputs["logits"] if isinstance(outputs, Mapping) else outputs[0]
    if shift:
        logits = logits[..., :-1, :].contiguous()
        labels = labels[..., 1:].contiguous()
    if labels.is_floating_point():
        raise ConfigError("label_smoothing_factor applies to classification labels; these labels are floats "
                          "(regression). Set label_smoothing_factor=0.")
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1),
                                             ignore_index=-100, label_smoothing=epsilon)


def _supports_found_inf(optimizer) -> bool:
    return isinstance(optimizer, (torch.optim.AdamW, torch.optim.Adam)) and \
        any(g.get("fused") for g in optimizer.param_groups)


def _nested_detach(x):
    if isinstance(x, (list, tuple)):
        return type(x)(_nested_detach(t) for t in x)
    if isinstance(x, Mapping):
        return {k: _nested_detach(v) for k, v in x.items()}
    return x.detach() if isinstance(x, torch.Tensor) else x


def _to_host(x):
    if isinstance(x, (list, tuple)):
        return type(x)(_to_host(t) for t in x)
    if isinstance(x, Mapping):
        return {k: _to_host(v) for k, v in x.items()}
    if isinstance(x, torch.Tensor):
        if x.dtype in (torch.bfloat16, torch.float16):
            x = x.float()
        return x.to("cpu", non_blocking=x.is_cuda)
    return x


def _concat_to_numpy(parts: list):
    """Concatenate per-batch outputs; token-level outputs of different lengths are padded with -100."""
    first = parts[0]
    if isinstance(first, (list, tuple)):
        return type(first)(_concat_to_numpy([p[i] for p in parts]) for i in range(len(first)))
    if isinstance(first, Mapping):
        return {k: _concat_to_numpy([p[k] for p in parts]) for k in first}
    arrays = [p.numpy() if isinstance(p, torch.Tensor) else np.asarray(p) for p in parts]
    if arrays[0].ndim == 0:
        return np.stack(arrays)
    if arrays[0].ndim == 1 or all(a.shape[1:] == arrays[0].shape[1:] for a in arrays):
        return np.concatenate(arrays, axis=0)
    max_len = max(a.shape[1] for a in arrays)
    padded = []
    for a in arrays:
        width = [(0, 0)] * a.ndim
        width[1] = (0, max_len - a.shape[1])
        padded.append(np.pad(a, width, constant_values=-100))
    return np.concatenate(padded, axis=0)


def _check_metrics(result) -> dict:
    if not isinstance(result, Mapping):
        raise ConfigError(f"compute_metrics must return a dict of metric name -> number, got {type(result).__name__}. "
                          "Return e.g. {'accuracy': 0.91}.")
    out = {}
    for k, v in result.items():
        if isinstance(v, (np.generic,)):
            v = v.item()
        if isinstance(v, torch.Tensor) and v.numel() == 1:
            v = v.item()
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(f"compute_metrics returned {k!r}: {v!r} ({type(v).__name__}), which is not a number. "
                              f"Return plain numbers, e.g. float(value); put per-class values under separate keys.")
        out[k] = v
    return out


def _speed_metrics(prefix: str, start: float, num_samples: int, num_steps: int) -> dict:
    runtime = time.time() - start
    return {f"{prefix}_runtime": round(runtime, 4),
            f"{prefix}_samples_per_second": round(num_samples / runtime, 3) if runtime > 0 else 0.0,
            f"{prefix}_steps_per_second": round(num_steps / runtime, 3) if runtime > 0 else 0.0}


def _is_tokenizer(obj) -> bool:
    return obj is not None and hasattr(obj, "pad") and callable(getattr(obj, "pad"))
