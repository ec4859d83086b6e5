"""What ``train(resume_from_checkpoint=...)`` reads and checks, before the first step.

* ``load_for_resume``: a checkpoint in trainwright's format or one written by transformers.Trainer
  (:mod:`.hf`); with ``resume_from_checkpoint=True`` a newest checkpoint found corrupt while it is verified
  (a file that does not match its sha256, unparsable JSON/safetensors; nothing has been loaded then) gives way to
  the next earlier complete one, with a warning naming it and why.
* :class:`DataOrder`: the run component that records what the order of the training rows depends on beyond the
  arguments (the world size and the train dataset's fingerprint); ``resume_problems`` compares it, with the
  order-defining arguments (:func:`resume_mismatches`: batch size, accumulation, sampling strategy, seed /
  data_seed), to this run: a grown, shrunk or changed dataset or another global batch keeps the run from
  continuing exactly. The caller refuses them unless ``ignore_data_skip=True``.
* ``legacy_states``: the run state an earlier trainwright (and the transformers reader) kept in the manifest's
  untyped ``extra`` dict, as the states of the components that hold it now.
* ``check_steps``: a ``global_step`` beyond this run's ``max_steps`` would make ``train()`` return without training.
"""
from __future__ import annotations

import os
import warnings
from typing import Any

from ..errors import CheckpointError, CorruptCheckpointError


def load_for_resume(path: str, *, output_dir: str, fall_back: bool, model: Any, optimizer: Any, lr_scheduler: Any,
                    scaler: Any,
                    rank: int = 0, world_size: int = 1, param_model: Any = None, states: Any = None) -> dict:
    """Load ``path`` into the objects and stateful components given; the dict of ``checkpoint.load_checkpoint``
    (its ``path`` is the checkpoint actually used). For a transformers checkpoint ``extra`` says there is nothing to
    continue exactly (transformers orders the data its own way)."""
    from . import api as ckpt
    from .hf import is_hf_checkpoint, load_hf_checkpoint

    while True:
        try:
            if is_hf_checkpoint(path):  # written by transformers.Trainer: nothing pickled is read
                loaded = load_hf_checkpoint(path, model=model, optimizer=optimizer, lr_scheduler=lr_scheduler,
                                            scaler=scaler, rank=rank, world_size=world_size, param_model=param_model)
                loaded["extra"] = {"world_size": world_size, "total_finite": 0}
                loaded["states"] = []
                return loaded
            return ckpt.load_checkpoint(path, model=model, optimizer=optimizer, lr_scheduler=lr_scheduler,
                                        scaler=scaler, states=states)
        except CorruptCheckpointError as e:  # found while verifying: nothing was loaded from it
            earlier = ckpt.latest_checkpoint(output_dir, before=path) if fall_back else None
            if earlier is None:
                raise
            warnings.warn(f"{e} (skipped; falling back to the earlier checkpoint {earlier})", stacklevel=4)
            path = earlier


def train_fingerprint(trainer: Any, fresh: bool = False) -> dict | None:
    """The train dataset's fingerprint, computed once per dataset object (``fresh`` recomputes it: at resume)."""
    from ..data.columns import has_length
    from ..data.fingerprint import data_fingerprint

    dataset = trainer.train_dataset
    key = (id(dataset), len(dataset) if has_length(dataset) else None)
    cached = getattr(trainer, "_data_fingerprint", None)
    if fresh or cached is None or cached[0] != key:
        fp = data_fingerprint(dataset, trainer.args.length_column_name) if key[1] is not None else None
        trainer._data_fingerprint = cached = (key, fp)
    return cached[1]


class DataOrder:
    """What the order of the training rows depends on beyond the arguments: the number of processes and the train
    dataset (its fingerprint). Saved with every checkpoint; at resume the saved values are kept in ``saved`` for
    :func:`resume_problems`."""

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer
        self.saved: dict = {}

    def state_dict(self) -> dict:
        return {"world_size": self.trainer.dist.world_size, "data": train_fingerprint(self.trainer)}

    def load_state_dict(self, state: dict) -> None:
        self.saved = dict(state)


def legacy_states(extra: dict, global_step: int) -> dict[str, dict]:
    """The component states held by the untyped ``extra`` dict of a checkpoint written before trainwright saved its
    run components (``"loss"``, ``"data_order"``), with the defaults the reader of that layout used."""
    log_steps = extra.get("log_steps", 0)
    loss = {"total_loss": extra.get("total_loss", 0.0), "log_loss": extra.get("log_loss", 0.0), "log_steps": log_steps,
            "total_finite": extra.get("total_finite", global_step), "log_finite": extra.get("log_finite", log_steps),
            "nonfinite_total": extra.get("nonfinite_total", 0)}
    return {"loss": loss, "data_order": {"world_size": extra.get("world_size", 1), "data": extra.get("data")}}


def resume_problems(loaded: dict, trainer: Any, saved: dict) -> list[str]:
    """What keeps the run from continuing exactly from the checkpoint ``loaded``, whose :class:`DataOrder` state
    is ``saved``."""
    from ..data.columns import has_length
    from ..data.fingerprint import fingerprint_mismatches

    dataset = trainer.train_dataset
    saved_args = dict(loaded.get("training_args") or {})
    used = (loaded.get("trainer_state") or {}).get("train_batch_size")
    if getattr(trainer.args, "auto_find_batch_size", False) and used:  # the batch size the search found (as HF)
        saved_args["per_device_train_batch_size"] = used
    # the checkpoint holds the full state: the world size may change if the global batch does not
    problems = resume_mismatches(saved_args, saved.get("world_size", 1), trainer.args,
                                 trainer.dist.world_size, len(dataset) if has_length(dataset) else None)
    return problems + fingerprint_mismatches(saved.get("data"), train_fingerprint(trainer, fresh=True))


def refuse(path: str, problems: list[str]) -> CheckpointError:
    return CheckpointError(
        f"Cannot resume exactly from {path}: " + "; ".join(problems) + ". Use the same values and data to resume, "
        "start a new run from the weights, or pass ignore_data_skip=True to resume anyway (the rest of the run then "
        "does not see the rows the interrupted run would have seen).")


def check_steps(loaded: dict, max_steps: int) -> None:
    from .format import TRAINER_STATE_NAME

    step = (loaded.get("trainer_state") or {}).get("global_step", 0)
    if step > max_steps:
        raise CheckpointError(
            f"{os.path.join(loaded['path'], TRAINER_STATE_NAME)}: global_step={step} is beyond this run's {max_steps} "
            f"steps (max_steps / num_train_epochs), so train() would return without training. Resume a checkpoint of "
            f"this run, or raise max_steps / num_train_epochs above {step}.")


def resume_mismatches(saved_args: dict, saved_world_size: int, args: Any, world_size: int,
                      num_samples: int | None = None) -> list[str]:
    """What stops a run from continuing exactly from a checkpoint saved with ``saved_args`` on
    ``saved_world_size`` processes. The data order is a function of the global batch
    (per_device_train_batch_size x world size) only, and the checkpoint holds the full, unsharded model
    and optimizer, so the number of processes may change as long as the global batch does not."""
    out = []
    for name in ("gradient_accumulation_steps", "train_sampling_strategy", "max_tokens_per_batch"):  # the order
        now = getattr(args, name, None)
        saved = saved_args.get(name, now)
        if saved != now:
            out.append(f"{name}: checkpoint {saved!r}, now {now!r}")
    if "seed" in saved_args:  # the order's seed: data_seed, else seed
        saved_seed = saved_args.get("data_seed") if saved_args.get("data_seed") is not None else saved_args["seed"]
        seed = args.data_seed if args.data_seed is not None else args.seed
        if saved_seed != seed:
            changed = [f"{n}: checkpoint {saved_args.get(n)!r}, now {getattr(args, n)!r}" for n in ("data_seed", "seed")
                       if saved_args.get(n) != getattr(args, n)]
            out.append(" and ".join(changed) + " (it seeds the data order)")
    saved_ws = int(saved_world_size or 1)
    saved_bs = saved_args.get("per_device_train_batch_size", args.per_device_train_batch_size)
    bs = args.per_device_train_batch_size
    if saved_ws == world_size:
        if saved_bs != bs:
            out.append(f"per_device_train_batch_size: checkpoint {saved_bs}, now {bs}")
        return out
    if getattr(args, "max_tokens_per_batch", None):
        out.append(f"world size: checkpoint {saved_ws} processes, now {world_size} (token-budget batches are cut "
                   "per rank, so resume on the same number of processes)")
        return out
    if saved_bs * saved_ws != bs * world_size:
        hint = f"per_device_train_batch_size={saved_bs * saved_ws // world_size}" \
            if (saved_bs * saved_ws) % world_size == 0 else f"{saved_ws} processes"
        out.append(f"global batch (per_device_train_batch_size x processes): checkpoint {saved_bs} x {saved_ws} = "
                   f"{saved_bs * saved_ws}, now {bs} x {world_size} = {bs * world_size}; the data order continues "
                   f"exactly only with the same global batch (use {hint})")
    elif num_samples is not None:
        rest = num_samples % (bs * world_size)
        if rest and not getattr(args, "dataloader_drop_last", False) and (rest < saved_ws) != (rest < world_size):
            out.append(f"world size: checkpoint {saved_ws}, now {world_size}; the epoch's last global batch of {rest} "
                       f"rows is kept on one and dropped on the other, so the epochs have different lengths")
    return out
