"""Pre-flight checks, run by ``Trainer.train()`` before the first optimizer step (this package imports no
Trainer: it works on the trainer object it is given, through the methods the run itself calls).

Mistakes that transformers reports deep inside a forward pass (``IndexError: Target 5 is out of bounds``,
``index out of range in self``, a CUDA device-side assert, ``Target size must be the same as input size``), or
only after hours of training (at the first evaluation), are caught here and raised as trainwright errors whose
message names the column or argument, what was wrong, and the fix.

What is looked at, and what it costs:

* the collator: a tokenizer without a pad token behind a padding collator (``ConfigError``);
* the first batch of every dataset, collated exactly as the loop will collate it (the first
  ``per_device_*_batch_size`` rows in dataset order): labels, token ids and sequence lengths;
* for ``datasets.Dataset`` (Arrow), a vectorised scan of the whole label column and of every row's length, and
  of the token ids of the first ``TOKEN_SCAN_ROWS`` rows (milliseconds for ~1M rows; nothing is decoded to Python);
* when evaluation runs during training and ``compute_metrics`` or ``metric_for_best_model`` is set, a dry
  evaluation on ONE batch of each eval set: ``compute_metrics`` must return numbers and produce
  ``metric_for_best_model`` (``compute_metrics`` is therefore called once more than in transformers; see
  :mod:`.evaluation`, which also says where it steps aside for a subclass), through the callback-free
  ``Trainer._run_evaluation(..., quiet=True)``;
* a train dataloader that a subclass's ``get_train_dataloader`` made is checked only when it is a DataLoader
  whose rows can be read by index (an iterable of batches, or an iterable dataset of the user's, is left alone).

Nothing here changes the model, the optimizer, the RNG states or the data order: the RNGs are saved and restored
around every collation and forward pass, so a run is bit-identical with or without the checks.
Modules: :mod:`.checks` (collator, first batch, labels, Arrow scans), :mod:`.evaluation` (the eval sets and the
dry evaluation), and the train data's row checks in :mod:`trainwright.data.input_checks`.
Set ``TRAINWRIGHT_SKIP_PREFLIGHT=1`` to turn the checks off (e.g. to work around a false alarm; please report it).
"""
from __future__ import annotations

import os
from typing import Any

import torch

from ..data import input_checks
from ..data.batch_seeds import unwrap_dataset
from ..data.columns import is_iterable_dataset
from ..distributed import unwrap_model
from ..errors import ConfigError
from ..optimizer_check import check_optimizer_parameters
from .checks import SKIP_ENV, check_arrow_dataset, check_batch, check_collator, first_batch, overridden, own_loop
from .evaluation import MetricsFailed, check_eval

__all__ = ["MetricsFailed", "SKIP_ENV", "check_eval", "preflight"]


def preflight(trainer: Any, train_dataloader: Any) -> None:
    """All checks for ``trainer.train()``; raises a TrainwrightError before any optimizer step."""
    if os.environ.get(SKIP_ENV, "").strip() in ("1", "true", "True", "yes"):
        return
    args = trainer.args
    if args.save_strategy == "best" and args.eval_strategy == "no":
        raise ConfigError("save_strategy='best' saves a checkpoint when an evaluation finds a new best "
                          f"{args.metric_for_best_model!r}, but eval_strategy='no', so nothing would ever be saved: "
                          "set eval_strategy='steps' (with eval_steps) or 'epoch', and pass an eval_dataset.")
    model = unwrap_model(trainer.model)
    input_checks.reset_warnings()
    if _inspectable(trainer, train_dataloader):
        check_collator(train_dataloader.collate_fn, trainer.processing_class, "train_dataset")
        dataset = unwrap_dataset(train_dataloader.dataset)
        check_arrow_dataset(model, dataset, "train_dataset", trainer.label_names)
        input_checks.scan_row_list(dataset, "train_dataset", trainer.label_names)
        batch = first_batch(train_dataloader, "train_dataset", trainer.label_names, model,
                            takes_mapping=own_loop(trainer))
        check_batch(trainer, model, batch, "train_dataset", require_labels=True)
    check_optimizer_parameters(trainer.optimizer, model, custom_loss=not own_loop(trainer) or
                               trainer.compute_loss_func is not None)
    if trainer.eval_dataset is not None and (args.eval_strategy != "no" or args.eval_on_start
                                             or args.load_best_model_at_end or args.save_strategy == "best"):
        check_eval(trainer, dry_run=trainer.compute_metrics is not None or args.metric_for_best_model is not None)


def _inspectable(trainer, train_dataloader) -> bool:
    """Whether the train data can be checked without changing what the run sees: a DataLoader, and, when a
    subclass's own get_train_dataloader made it, one whose rows can be read by index (reading an iterable
    dataset of the user's could consume rows the run would then miss)."""
    if not isinstance(train_dataloader, torch.utils.data.DataLoader):
        return False  # any iterable of batches from a subclass's get_train_dataloader: nothing to look into
    if overridden(trainer, "get_train_dataloader") and is_iterable_dataset(train_dataloader.dataset):
        return False
    return True
