"""The Trainer's dataloaders: which columns reach the model, the train sampler (random, length-grouped or token-budget
batches, resumable at any batch), and the sorted-by-length evaluation batches whose outputs come back in dataset
order. ``Trainer.get_train_dataloader`` / ``get_eval_dataloader`` / ``get_test_dataloader`` call these; a subclass
may override those methods and return any iterable of batches.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from .data.batch_seeds import with_batch_seeds
from .data.collator import DataCollatorWithPadding, RemoveColumnsCollator, default_data_collator
from .data.columns import check_not_column_dict, dropped_columns, has_length, is_iterable_dataset, prepare_columns
from .data.samplers import (
    EvalBatchSampler,
    ResumableBatchSampler,
    TokenBudgetBatchSampler,
    collator_padding,
    is_row_preserving,
)
from .data.trim import eval_collator, row_lengths, train_collator
from .distributed import unwrap_model
from .errors import ConfigError, DataError

logger = logging.getLogger("trainwright")


def default_collator(processing_class: Any, device: torch.device, torch_compile: bool) -> Any:
    """The collator when none is given: ``DataCollatorWithPadding`` with a tokenizer (with torch_compile, lengths
    padded to buckets -- multiples of 64 on GPU, 16 on CPU -- so few shapes are compiled), else
    ``default_data_collator``."""
    if processing_class is None or not callable(getattr(processing_class, "pad", None)):
        return default_data_collator
    bucket = (64 if device.type == "cuda" else 16) if torch_compile else None
    return DataCollatorWithPadding(processing_class, pad_to_multiple_of=bucket)


def check_datasets(trainer: Any) -> None:
    """At ``Trainer(...)``: the datasets the arguments need are there, not empty, and the train set's columns fit."""
    args = trainer.args
    if args.eval_strategy != "no" and trainer.eval_dataset is None:
        raise ConfigError(f"eval_strategy={args.eval_strategy!r} needs an eval_dataset: pass "
                          "Trainer(eval_dataset=...) or set eval_strategy='no'.")
    if args.load_best_model_at_end and trainer.eval_dataset is None:
        raise ConfigError("load_best_model_at_end=True needs an eval_dataset to pick the best model.")
    if args.eval_on_start and trainer.eval_dataset is None:
        raise ConfigError("eval_on_start=True needs an eval_dataset.")
    if trainer.train_dataset is not None:
        if is_iterable_dataset(trainer.train_dataset) or not has_length(trainer.train_dataset):
            if args.max_steps <= 0:
                raise ConfigError("train_dataset has no length (an IterableDataset), so the number of steps "
                                  "is unknown: set max_steps=<number of optimizer steps> in TrainingArguments.")
        else:
            trainer.train_dataset, _ = prepare_columns(trainer.train_dataset, unwrap_model(trainer.model),
                                                       trainer.label_names, False, "train_dataset",
                                                       rename_label=not trainer._user_collator)
    check_not_column_dict(trainer.eval_dataset, "eval_dataset")
    eval_sets = trainer.eval_dataset if isinstance(trainer.eval_dataset, dict) else {"eval": trainer.eval_dataset}
    for name, ds in eval_sets.items():
        if ds is not None and has_length(ds) and len(ds) == 0:
            raise DataError(f"eval_dataset {name!r} is empty (0 rows). Pass a non-empty evaluation split.")


def remove_unused(trainer: Any, dataset: Any, description: str) -> tuple:
    """(dataset, collator): with ``remove_unused_columns``, the columns ``model.forward`` does not take are dropped
    (logged once per dataset) and the collator gets only the ones it keeps."""
    if dataset is None or is_iterable_dataset(dataset):
        return dataset, trainer.data_collator
    model = unwrap_model(trainer.model)
    if trainer.args.remove_unused_columns:
        dropped = dropped_columns(dataset, model, trainer.label_names)
        key = f"{description}:{','.join(dropped)}"
        if dropped and key not in trainer._dropped_logged and trainer.dist.is_main_process:
            trainer._dropped_logged.add(key)
            logger.info("The following columns in %s are not used by %s.forward and were removed: %s",
                        description, type(model).__name__, ", ".join(dropped))
    dataset, keep = prepare_columns(dataset, model, trainer.label_names, trainer.args.remove_unused_columns,
                                    description, rename_label=not trainer._user_collator)
    collator = RemoveColumnsCollator(trainer.data_collator, keep) if keep else trainer.data_collator
    return dataset, collator


def loader_kwargs(args: Any, device: torch.device) -> dict:
    """Workers, pinning and prefetching, as transformers passes them to every DataLoader."""
    kwargs = {"num_workers": args.dataloader_num_workers,
              "pin_memory": args.dataloader_pin_memory and device.type == "cuda"}
    if args.dataloader_num_workers > 0:
        kwargs["persistent_workers"] = args.dataloader_persistent_workers
        if args.dataloader_prefetch_factor is not None:
            kwargs["prefetch_factor"] = args.dataloader_prefetch_factor
        if args.dataloader_multiprocessing_context is not None:
            kwargs["multiprocessing_context"] = args.dataloader_multiprocessing_context
    return kwargs


def train_sampling(args: Any, dataset: Any, collator: Any) -> tuple:
    """(strategy, row lengths or None) for the train sampler. ``"auto"`` (the default) groups rows of similar length
    when that saves padding: the lengths are cheap to read (an Arrow ``input_ids`` or length column, or a list of
    rows), they differ, and the collator pads each batch to its longest row (not to a fixed ``max_length``).
    Otherwise it is HF's random order."""
    strategy = args.train_sampling_strategy
    if strategy == "auto" and not args.max_tokens_per_batch:
        lengths = row_lengths(dataset, args.length_column_name, collator, allow_slow=False)  # trimmed widths
        _, fixed = collator_padding(collator)
        varied = lengths is not None and len(lengths) > 1 and int(lengths.min()) != int(lengths.max())
        strategy = "group_by_length" if varied and fixed is None else "random"
        return strategy, (lengths if strategy == "group_by_length" else None)
    if strategy != "group_by_length" and not args.max_tokens_per_batch:
        return strategy, None
    lengths = row_lengths(dataset, args.length_column_name, collator)  # Arrow column, computed once
    if lengths is None:
        raise DataError("train_sampling_strategy='group_by_length' and max_tokens_per_batch need the row lengths: "
                        f"give the dataset an 'input_ids' or {args.length_column_name!r} column.")
    return strategy, lengths


def train_dataloader(trainer: Any) -> torch.utils.data.DataLoader:
    """The train DataLoader: this rank's share of each global batch, in a resumable order (see ``data.samplers``)."""
    if trainer.train_dataset is None:
        raise ConfigError("Trainer.train() needs a train_dataset: pass Trainer(train_dataset=...).")
    args, dist = trainer.args, trainer.dist
    dataset, collator = remove_unused(trainer, trainer.train_dataset, "train_dataset")
    collator = train_collator(trainer, collator)  # pre-padded rows: batches cut to their longest row (data/trim.py)
    seed = args.data_seed if args.data_seed is not None else args.seed
    generator = torch.Generator()  # our own: creating an iterator must not consume the global RNG (exact resume)
    generator.manual_seed(seed)
    if is_iterable_dataset(dataset):
        dataset = dist.shard_iterable(dataset, args.per_device_train_batch_size)  # torchrun: this rank's rows
        return torch.utils.data.DataLoader(dataset, batch_size=args.per_device_train_batch_size, collate_fn=collator,
                                           drop_last=args.dataloader_drop_last, generator=generator,
                                           **loader_kwargs(args, trainer.device))
    strategy, lengths = train_sampling(args, dataset, collator)
    if args.max_tokens_per_batch:  # variable rows per batch, padded tokens per rank <= the budget
        multiple, fixed = collator_padding(collator)
        sampler = TokenBudgetBatchSampler(
            lengths if fixed is None else np.full(len(lengths), fixed), args.max_tokens_per_batch,
            shuffle=strategy != "sequential", seed=seed, world_size=dist.world_size, rank=dist.rank,
            pad_to_multiple_of=multiple, drop_last=args.dataloader_drop_last)
    else:
        sampler = ResumableBatchSampler(
            len(dataset), args.per_device_train_batch_size, shuffle=strategy != "sequential", seed=seed,
            drop_last=args.dataloader_drop_last, world_size=dist.world_size, rank=dist.rank,
            lengths=lengths, group_by_length=strategy == "group_by_length",
            # groups of whole optimizer steps: batch 16 and 4 x 4 accumulation see the same rows
            group_batches=args.gradient_accumulation_steps)
    if len(dataset) == 0:
        raise DataError("train_dataset is empty (0 rows). Check the split and any .filter()/.select() applied to it.")
    if len(sampler) == 0:
        raise DataError(f"train_dataset has {len(dataset)} rows, fewer than one batch of "
                        f"{args.per_device_train_batch_size * dist.world_size} with dataloader_drop_last=True: "
                        "lower per_device_train_batch_size or set dataloader_drop_last=False.")
    dataset, collator = with_batch_seeds(dataset, collator)  # collator randomness from (seed, epoch, batch)
    return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collator, generator=generator,
                                       **loader_kwargs(args, trainer.device))


def named_eval_dataset(trainer: Any, eval_dataset: Any) -> Any:
    """``get_eval_dataloader``'s argument resolved: a name of a dict ``eval_dataset`` (as HF), None for the
    trainer's own."""
    if isinstance(eval_dataset, str):
        if not isinstance(trainer.eval_dataset, dict) or eval_dataset not in trainer.eval_dataset:
            names = sorted(trainer.eval_dataset) if isinstance(trainer.eval_dataset, dict) else []
            raise ConfigError(f"get_eval_dataloader({eval_dataset!r}): there is no eval_dataset of that name "
                              f"(names: {', '.join(names) or 'none, eval_dataset is not a dict'}).")
        eval_dataset = trainer.eval_dataset[eval_dataset]
    if eval_dataset is None:
        eval_dataset = trainer.eval_dataset
    if eval_dataset is None:
        raise ConfigError("evaluate() needs an eval_dataset: pass Trainer(eval_dataset=...) or evaluate(eval_dataset).")
    return eval_dataset


def prediction_dataloader(trainer: Any, dataset: Any, description: str) -> torch.utils.data.DataLoader:
    """Evaluation / prediction batches: sorted by length (less padding) and, when they can, filled with more rows of
    short sequences; ``evaluation_loop`` puts the outputs back in dataset order. With
    ``eval_do_concat_batches=False`` the batches are the dataset's rows in order, ``per_device_eval_batch_size``
    each."""
    args = trainer.args
    dataset, collator = remove_unused(trainer, dataset, description)
    collator = eval_collator(trainer, collator)  # the evaluation loop trims pre-padded batches (data/trim.py)
    kwargs = loader_kwargs(args, trainer.device)
    if is_iterable_dataset(dataset):
        return torch.utils.data.DataLoader(dataset, batch_size=args.per_device_eval_batch_size,
                                           collate_fn=collator, **kwargs)
    if len(dataset) == 0:
        raise DataError(f"{description} is empty (0 rows).")
    # eval_do_concat_batches=False hands the user the batches themselves: in dataset order, as transformers
    lengths = row_lengths(dataset, args.length_column_name, collator, allow_slow=False) \
        if trainer.eval_sort_by_length and args.eval_do_concat_batches and is_row_preserving(collator) else None
    multiple, fixed = collator_padding(collator)
    fill = (trainer.eval_fill_batches and lengths is not None and fixed is None and args.eval_do_concat_batches
            and not getattr(args, "predict_with_generate", False) and not getattr(args, "batch_eval_metrics", False))
    bs = args.per_device_eval_batch_size
    sampler = EvalBatchSampler(len(dataset), bs, trainer.dist.world_size, trainer.dist.rank, lengths=lengths,
                               fill_to_longest=fill, pad_to_multiple_of=multiple,
                               max_rows=max(1, int(trainer.eval_max_rows_factor)) * bs,
                               fill_max_tokens=trainer.eval_fill_cpu_max_tokens if trainer.device.type == "cpu"
                               else None)
    return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collator, **kwargs)
