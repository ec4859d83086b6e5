"""The Trainer's checkpoints: when and where it saves, what a checkpoint holds, the best model, rotation, resuming.

A checkpoint holds the model, optimizer, scheduler, scaler and RNG states, ``trainer_state.json`` (transformers'
``TrainerState``, with the stateful callbacks where transformers keeps them) and the run's stateful components, each
with ``state_dict()`` / ``load_state_dict()`` (torchtitan's habit): ``loss`` (the running loss and the non-finite
counters), ``throughput`` (the logging window), ``data_order`` (world size and dataset fingerprint) and ``sampler``
(the data position: epoch and batches done, for the Trainer's resumable sampler). A checkpoint
of an earlier trainwright kept those in the manifest's untyped ``extra`` dict: it is read into the same components.

The best-model bookkeeping: a new best metric found at a step that saves is only recorded once that checkpoint is
complete (and dropped if the save fails), so ``best_model_checkpoint`` always names a saved model.

Writes in the background (``save_in_background``, :mod:`.background`): a save takes a snapshot of the state and
leaves the write to a thread; at most one is in flight (:class:`~.background.PendingSave`). It is *settled* (the
best-model values, the Hub push and ``on_save`` once complete; a failure handled per ``on_save_error``) when it
has ended (checked after each step, one process only) and at the wait points: the next save, an evaluation that
tracks the best model, the end of ``train()``, the signal stop, ``save_model`` and an exception leaving ``train()``.
Under torchrun settling is collective, so it happens only at the wait points, which every rank reaches together.
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from typing import Any

import torch

from ..distributed import unwrap_model
from ..errors import CheckpointError, ConfigError
from ..state import TrainerState
from . import resume
from .api import latest_checkpoint, load_model_weights, rotate_checkpoints, take_snapshot, write_snapshot
from .background import CopyGate, PendingSave
from .format import PREFIX_CHECKPOINT_DIR, _unwrap_optimizer
from .host_copy import HostCopies
from .snapshot import make_copies

logger = logging.getLogger("trainwright")


def best_metric_key(args: Any) -> str:
    """``metric_for_best_model`` as the key evaluation produces (``eval_`` prefixed; default ``eval_loss``)."""
    name = args.metric_for_best_model or "loss"
    return name if name.startswith("eval_") else f"eval_{name}"


class CheckpointManager:
    """Saves and restores one Trainer's run (see the module docstring)."""

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer
        self.data_order = resume.DataOrder(trainer)
        self.pending_best: tuple | None = None  # (value, step): a new best waiting for its checkpoint
        self.last_eval_was_best = False
        self.pending: PendingSave | None = None  # the checkpoint being written (at most one)
        self._orphan: PendingSave | None = None  # one left writing by a train() interrupted with KeyboardInterrupt
        self.copies = HostCopies()  # host buffers for the snapshots, reused from one save to the next
        self.saves = 0

    def components(self) -> dict:
        """The run's stateful components, by the name their state is saved under."""
        t = self.trainer
        components = {"loss": t.loss_tracker, "throughput": t.throughput, "data_order": self.data_order}
        from ..data.samplers import ResumableBatchSampler
        sampler = getattr(getattr(t.callback_handler, "train_dataloader", None), "batch_sampler", None)
        if isinstance(sampler, ResumableBatchSampler):
            components["sampler"] = sampler  # the data position (data/samplers.py)
        return components

    # ------------------------------------------------------------------ saving
    def save_if_due(self, metrics: dict | None) -> None:
        """After a step's logging and evaluation: settle a write that has completed (one process), then save when
        the control says so (with ``save_strategy="best"``: when this evaluation found a new best)."""
        t = self.trainer
        self.poll()
        if t.args.save_strategy == "best":
            t.control.should_save = metrics is not None and self.last_eval_was_best
        if t.control.should_save and self.pending is not None and self.pending.step == t.state.global_step:
            # this step's checkpoint is already being written (e.g. a step save, then the epoch end): once is enough
            t.control.should_save = not self.settle()
        if t.control.should_save:
            saves = self.saves
            t._save_checkpoint(metrics)
            if self.saves == saves:  # a subclass's _save_checkpoint that saved by itself: on_save as transformers
                t.control = t.callback_handler.on_save(t.args, t.state, t.control)
            t.control.should_save = False  # (on_save, which clears it, comes once the write is complete)

    def save(self) -> None:
        """``output_dir/checkpoint-<global_step>``, on every rank together: the state is captured here (the write
        in flight, if any, completes first) and written in the background on the writing rank
        (``save_in_background``); see :meth:`settle` for what happens once it is complete. A save at the last step,
        or when training is about to stop, is settled at once."""
        t, args = self.trainer, self.trainer.args
        start = time.perf_counter()
        self.settle()  # at most one write in flight
        self.saves += 1
        path = os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{t.state.global_step}")
        if t.throughput is not None:
            t.throughput.flush(t.state)  # collective like the save itself: the saved counts are global
        best = self._best_for(path)
        t.state.stateful_callbacks = t.callback_states.state_dict()
        state = t.state.to_dict()  # a deep copy: the state as this checkpoint holds it
        if best is not None:
            state.update(best_metric=best[0], best_global_step=best[1], best_model_checkpoint=best[2])
        pending = PendingSave(path, t.state.global_step, state, best)
        pending.started = start
        # FSDP2: collective, the full state gathered on rank 0; otherwise the model and optimizer themselves
        model_view, optimizer_view = t.dist.state_for_saving(t.model, None if args.save_only_model else t.optimizer)
        if t.dist.is_main_process or args.save_on_each_node:
            self._start_write(pending, model_view, optimizer_view)
        del model_view, optimizer_view
        pending.blocked = time.perf_counter() - start
        self.pending = pending
        if not self.background or t.state.global_step >= t.state.max_steps or t.control.should_training_stop:
            self.settle()

    @property
    def background(self) -> bool:
        """Whether checkpoints are written in a background thread: ``save_in_background``, except under FSDP2,
        whose model write calls the sharded model's own ``save_pretrained`` (kept on the training thread)."""
        return bool(self.trainer.args.save_in_background) and not self.trainer.dist.sharded

    def _start_write(self, pending: PendingSave, model_view, optimizer_view) -> None:
        t, args = self.trainer, self.trainer.args
        # the trained parameters and the optimizer state may be copied by the writer, before the next step()
        gated = _unwrap_optimizer(t.optimizer) if self.background else None
        gated = gated if isinstance(gated, torch.optim.Optimizer) else None
        try:
            snap = take_snapshot(pending.path, model=model_view, optimizer=optimizer_view, lr_scheduler=t.lr_scheduler,
                                 scaler=t.precision.scaler, trainer_state=pending.state, training_args=args.to_dict(),
                                 processing_class=t.processing_class, save_only_model=args.save_only_model,
                                 states=self.components(), copies=self.copies if self.background else None,
                                 defer=gated is not None)
        except CheckpointError as e:
            pending.error = e
            return
        best = pending.best[2] if pending.best is not None else t.state.best_model_checkpoint
        output_dir, limit = args.output_dir, args.save_total_limit
        try:
            gate = pending.gate = CopyGate(gated) if snap.copy_jobs else None
        except Exception:  # an Optimizer subclass without step hooks: the copies are made here instead
            gate = None
            make_copies(snap)

        def write() -> None:  # no reference to the live state: training goes on meanwhile
            write_snapshot(snap, copied=gate.open if gate is not None else None)  # the copies first, then the gate
            if limit is not None:
                rotate_checkpoints(output_dir, limit, best)
        pending.run(write, background=self.background)

    def poll(self) -> None:
        """In a single process: settle the write in flight if it has completed (no waiting)."""
        if self.pending is not None and not self.trainer.dist.enabled and self.pending.done():
            self.settle()

    def settle(self) -> bool:
        """The write in flight completes and every rank learns whether it worked (collective); then, only for a
        complete checkpoint: the best-model values it holds become current, the Hub push starts and ``on_save``
        is called (with the state as saved; the step's own ``should_save`` is left as it was). A failed write is
        logged (training goes on and the next save point saves again) or, with ``on_save_error="stop"``, raised.
        Returns whether a checkpoint was settled and complete."""
        pending, self.pending = self.pending, None
        if pending is None:
            return False
        t = self.trainer
        error = pending.wait()
        if not t.dist.all_true(error is None):
            self._failed(pending, error)
            return False
        if pending.best is not None:
            t.state.best_metric, t.state.best_global_step, t.state.best_model_checkpoint = pending.best
        state = t.state if pending.step == t.state.global_step else TrainerState.from_dict(pending.state)
        if t.args.push_to_hub:
            t._push_from_checkpoint(pending.path, state)  # hub.py: a background push, per hub_strategy
        should_save = t.control.should_save
        t.control = t.callback_handler.on_save(t.args, state, t.control)
        t.control.should_save = should_save
        return True

    def _failed(self, pending: PendingSave, error: BaseException | None) -> None:
        if error is not None and not isinstance(error, CheckpointError):
            raise error  # not a failed write (e.g. a bug in a callback-free path): as if it had run here
        if self.trainer.args.on_save_error == "stop":
            raise error or CheckpointError(f"Saving checkpoint {pending.path} failed on another process (see its "
                                           "log); on_save_error='stop' stops training.")
        if error is not None:
            logger.error("Saving checkpoint %s failed: %s. Training goes on and the save is retried at the next save "
                         "point (on_save_error='stop' stops instead).", pending.path, str(error).rstrip("."))

    def wait_for_write(self) -> None:
        """Before ``save_model``: the write in flight completes (settled too in a single process)."""
        if self.pending is not None:
            self.settle() if not self.trainer.dist.enabled else self.pending.wait()

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        """Around ``train()``: a write left by an earlier call completes first; when ``train()`` raises, the write
        in flight is waited for (not for KeyboardInterrupt: the non-daemon thread still finishes it before the
        interpreter exits) and a failure is logged; the host buffers are freed at the end."""
        if self._orphan is not None:
            self._orphan.wait()
            self._orphan = None
        try:
            yield
        except BaseException as e:
            pending, self.pending = self.pending, None
            if pending is not None and isinstance(e, KeyboardInterrupt):
                self._orphan = pending
            elif pending is not None and pending.wait() is not None:
                logger.error("The checkpoint %s being written when training stopped could not be written: %s",
                             pending.path, pending.error)
            raise
        finally:
            self.copies.release()

    def finish(self) -> None:
        """At the end of training: the write in flight completes, then the best model is loaded
        (``load_best_model_at_end``)."""
        self.settle()
        if self.trainer.args.load_best_model_at_end and self.trainer.state.best_model_checkpoint is not None:
            self.load_best_model()

    # ------------------------------------------------------------------ the best model
    def _best_for(self, path: str) -> tuple | None:
        """The best-model values this checkpoint makes current once complete: a best found at this step names it
        (None when nothing changes)."""
        state = self.trainer.state
        pending, self.pending_best = self.pending_best, None
        metric, step = state.best_metric, state.best_global_step
        if pending is not None and pending[1] == state.global_step:
            metric, step = pending
        if step != state.global_step:
            return None
        return metric, step, path

    def before_evaluation(self) -> None:
        """Before an evaluation during training that tracks the best model: a checkpoint still being written is
        settled first, so that the best so far (which callbacks such as EarlyStoppingCallback read in
        ``on_evaluate``) includes it if, and only if, it is complete."""
        if self.pending is not None and self.trainer.args.metric_for_best_model is not None:
            self.settle()

    def update_best(self, metrics: dict) -> bool:
        """Records a new best metric. When a checkpoint is saved at this step, the new best is only pending: the
        save makes it ``best_metric`` / ``best_global_step`` / ``best_model_checkpoint`` once the checkpoint is
        complete, and drops it if the save fails. Without a save at this step it is recorded at once, as HF does.
        Returns (and remembers, for ``save_strategy="best"``) whether it is a new best."""
        self.before_evaluation()
        self.last_eval_was_best = self._new_best(metrics)
        return self.last_eval_was_best

    def _new_best(self, metrics: dict) -> bool:
        t, args = self.trainer, self.trainer.args
        if args.metric_for_best_model is None:
            return False
        key = best_metric_key(args)
        if key not in metrics:
            produced = sorted(k[len("eval_"):] for k in metrics
                              if k.startswith("eval_") and not k.endswith(("_runtime", "_per_second")))
            raise ConfigError(_missing_metric_message(args, key, produced))
        value = metrics[key]
        stale = self.pending_best
        if stale is not None and stale[1] != t.state.global_step:  # no save came for it: recorded as HF does
            t.state.best_metric, t.state.best_global_step = stale
            self.pending_best = None
        best = t.state.best_metric
        if best is None or (value > best if args.greater_is_better else value < best):
            if t.control.should_save or args.save_strategy == "best":
                self.pending_best = (value, t.state.global_step)
            else:
                t.state.best_metric, t.state.best_global_step = value, t.state.global_step
            return True
        return False

    def load_best_model(self) -> None:
        """At the end of training with ``load_best_model_at_end``: the best checkpoint's weights (every rank)."""
        t = self.trainer
        path = t.state.best_model_checkpoint
        if path and os.path.isdir(path):
            if t.dist.is_main_process:
                logger.info("Loading the best model from %s (%s=%s).", path, best_metric_key(t.args),
                            t.state.best_metric)
            load_model_weights(path, t.dist.state_for_loading(t.model)[0])

    def last_checkpoint_path(self) -> str | None:
        if self.pending is not None:
            self.pending.wait()  # (an error path: the newest checkpoint may still be being written)
        try:
            return latest_checkpoint(self.trainer.args.output_dir)
        except Exception:
            return None

    # ------------------------------------------------------------------ resuming
    def resume_target(self, resume_from_checkpoint: str | bool | None) -> tuple[str | None, bool]:
        """(the checkpoint ``train(resume_from_checkpoint=...)`` resumes from or None, whether a corrupt one may
        give way to an earlier one: with ``True``, the newest complete checkpoint of ``output_dir``)."""
        args = self.trainer.args
        if resume_from_checkpoint is None:
            resume_from_checkpoint = args.resume_from_checkpoint
        if resume_from_checkpoint is False:
            return None, False
        if resume_from_checkpoint is not True:
            return resume_from_checkpoint, False
        path = latest_checkpoint(args.output_dir)
        if path is None:
            raise CheckpointError(f"resume_from_checkpoint=True but {args.output_dir!r} holds no complete "
                                  "checkpoint-<step> directory. Train from scratch (drop the argument) or point "
                                  "resume_from_checkpoint at a checkpoint directory.")
        return path, True

    def resume(self, path: str, max_steps: int, fall_back: bool = False) -> str:
        """Restore everything from ``path`` (trainwright's format, an earlier trainwright's, or transformers.Trainer's,
        see :mod:`.resume`) into the model, optimizer, scheduler, scaler, RNGs, state, callbacks and components;
        returns the path used: with ``fall_back`` a corrupt checkpoint gives way to an earlier one."""
        t = self.trainer
        model_view, optimizer_view = t.dist.state_for_loading(t.model, t.optimizer)  # FSDP2: every rank loads
        components = self.components()
        loaded = resume.load_for_resume(path, output_dir=t.args.output_dir, fall_back=fall_back, model=model_view,
                                        optimizer=optimizer_view, lr_scheduler=t.lr_scheduler,
                                        scaler=t.precision.scaler, rank=t.dist.rank, world_size=t.dist.world_size,
                                        param_model=unwrap_model(t.model), states=components)
        path = loaded["path"]
        if not loaded.get("states"):  # written before the components existed: the old extra dict
            step = (loaded.get("trainer_state") or {}).get("global_step", 0)
            for name, state in resume.legacy_states(loaded.get("extra") or {}, step).items():
                components[name].load_state_dict(state)
        problems = resume.resume_problems(loaded, t, self.data_order.saved)  # arguments, seeds, the dataset
        if problems and not t.args.ignore_data_skip:
            raise resume.refuse(path, problems)
        resume.check_steps(loaded, max_steps)
        state = TrainerState.from_dict(loaded["trainer_state"])
        state.max_steps = max_steps
        state.is_world_process_zero = t.dist.is_main_process
        state.is_local_process_zero = t.dist.local_rank == 0
        t.state = state
        t.callback_states.load_state_dict(state.stateful_callbacks)
        return path


def _missing_metric_message(args: Any, key: str, produced: list[str]) -> str:
    """Which metric is missing, what the evaluation produced, and (under torchrun) that every process needs it."""
    rank = args.process_index if args.world_size > 1 else None
    return (f"metric_for_best_model={args.metric_for_best_model!r}: evaluation produced no {key!r}"
            + (f" on process {rank} of {args.world_size}" if rank is not None else "")
            + (f". It produces: {', '.join(produced)}. Set metric_for_best_model to one of these, or return it "
               f"from compute_metrics." if produced else ", only its runtime. Return it from compute_metrics.")
            + (" Every process needs it to choose the best checkpoint: an evaluate() that computes metrics on "
               "the main process only (e.g. under `if self.args.should_save:`) must compute them on every "
               "process (transformers fails there too)." if rank is not None else ""))
