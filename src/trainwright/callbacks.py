"""Callbacks with transformers' event names, arguments and TrainerControl flags.

A callback written for ``transformers.Trainer`` runs here unchanged: every event is called as
``callback.on_<event>(args, state, control, **kwargs)`` where kwargs holds ``model``,
``processing_class`` (and its old name ``tokenizer``), ``optimizer``, ``lr_scheduler``,
``train_dataloader``, ``eval_dataloader`` and, for some events, ``metrics`` or ``logs``.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .args import TrainingArguments
    from .state import TrainerState

logger = logging.getLogger("trainwright")


@dataclass
class TrainerControl:
    should_training_stop: bool = False
    should_epoch_stop: bool = False
    should_save: bool = False
    should_evaluate: bool = False
    should_log: bool = False

    def _new_training(self):
        self.should_training_stop = False

    def _new_epoch(self):
        self.should_epoch_stop = False

    def _new_step(self):
        self.should_save = False
        self.should_evaluate = False
        self.should_log = False

    def state(self) -> dict:
        return {"args": dataclasses.asdict(self), "attributes": {}}


class ExportableState:
    """Callbacks that keep state across a resume implement ``state()`` returning
    ``{"args": ..., "attributes": ...}`` (JSON-serialisable), as in transformers."""

    def state(self) -> dict:
        raise NotImplementedError

    @classmethod
    def from_state(cls, state: dict) -> ExportableState:
        instance = cls(**state["args"])
        for k, v in state["attributes"].items():
            setattr(instance, k, v)
        return instance


def is_exportable(obj: Any) -> bool:
    """Whether ``obj`` keeps state across a resume: trainwright's ``ExportableState`` or ``TrainerControl``, or
    transformers' ``ExportableState`` (e.g. ``transformers.EarlyStoppingCallback``)."""
    if isinstance(obj, (ExportableState, TrainerControl)):
        return True
    hf = sys.modules.get("transformers.trainer_callback")
    return hf is not None and isinstance(obj, hf.ExportableState)


def export_callback_states(callbacks: list) -> dict:
    """``stateful_callbacks`` as transformers writes it in ``trainer_state.json``: per class name, the
    ``state()`` (constructor args and attributes) of each exportable callback and of the control; a list when
    there are several of one class."""
    states: dict[str, list] = {}
    for cb in callbacks:
        if is_exportable(cb):
            states.setdefault(type(cb).__name__, []).append(cb.state())
    return {k: v[0] if len(v) == 1 else v for k, v in states.items()}


def restore_callback_states(handler: CallbackHandler, control: TrainerControl, states: dict) -> TrainerControl:
    """As transformers: each saved state replaces the callback of its class (several in order) with a new
    instance built from the saved constructor args, with the saved attributes set; the control flags too
    (returned). Saved callbacks the handler does not have are named in transformers' warning."""
    not_found = []
    for name, saved in (states or {}).items():
        saved = saved if isinstance(saved, list) else [saved]
        current = [cb for cb in handler.callbacks + [control] if type(cb).__name__ == name]
        if not current:
            not_found.append(name)
            continue
        for cb, data in zip(current, saved):
            restored = type(cb)(**data.get("args", {}))
            for attribute, value in data.get("attributes", {}).items():
                setattr(restored, attribute, value)
            if cb is control:
                control = restored
            else:  # in the same place in the list (transformers moves it to the end)
                handler.callbacks[next(i for i, c in enumerate(handler.callbacks) if c is cb)] = restored
        logger.info("Continuing training from checkpoint, restoring any callbacks that were passed in")
    if not_found:
        logger.warning("Checkpoint included callbacks not included in current configuration. Ignoring. "
                       f"({', '.join(not_found)})")
    return control


class CallbackStates:
    """A Trainer's stateful callbacks and its ``TrainerControl`` as one run component (``state_dict()`` /
    ``load_state_dict()``). Its state is saved in ``trainer_state.json``'s ``stateful_callbacks``, where transformers
    keeps it, and restored only with ``restore_callback_states_from_checkpoint=True``, as in transformers."""

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer

    def state_dict(self) -> dict:
        return export_callback_states(self.trainer.callback_handler.callbacks + [self.trainer.control])

    def load_state_dict(self, states: dict) -> None:
        t = self.trainer
        if t.args.restore_callback_states_from_checkpoint:
            t.control = restore_callback_states(t.callback_handler, t.control, states)


class TrainerCallback:
    """A callback with transformers' event names; override the events you need. Each gets ``(args, state, control,
    **kwargs)`` -- kwargs: ``model``, ``processing_class`` (and ``tokenizer``), ``optimizer``, ``lr_scheduler``,
    ``train_dataloader``, ``eval_dataloader``, and ``metrics`` / ``logs`` for some events -- and may set flags on
    ``control`` or return a ``TrainerControl``."""

    def on_init_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        pass

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       **kwargs: Any) -> None:
        pass

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     **kwargs: Any) -> None:
        pass

    def on_epoch_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       **kwargs: Any) -> None:
        pass

    def on_epoch_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     **kwargs: Any) -> None:
        pass

    def on_step_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                      **kwargs: Any) -> None:
        pass

    def on_pre_optimizer_step(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                              **kwargs: Any) -> None:
        pass

    def on_optimizer_step(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                          **kwargs: Any) -> None:
        pass

    def on_substep_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       **kwargs: Any) -> None:
        pass

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        pass

    def on_evaluate(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        pass

    def on_predict(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, metrics: dict,
                   **kwargs: Any) -> None:
        pass

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        pass

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, logs: dict | None = None,
               **kwargs: Any) -> None:
        pass

    def on_prediction_step(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                           **kwargs: Any) -> None:
        pass

    def on_push_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                      **kwargs: Any) -> None:
        pass


class CallbackHandler(TrainerCallback):
    """Calls every callback in order; a callback may return a TrainerControl to replace the flags."""

    def __init__(self, callbacks: list, model: Any, processing_class: Any, optimizer: Any, lr_scheduler: Any) -> None:
        self.callbacks: list[TrainerCallback] = []
        for cb in callbacks:
            self.add_callback(cb)
        self.model = model
        self.processing_class = processing_class
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.train_dataloader = None
        self.eval_dataloader = None

    def add_callback(self, callback: Any) -> None:
        cb = callback() if isinstance(callback, type) else callback
        cb_class = callback if isinstance(callback, type) else callback.__class__
        if cb_class in [c.__class__ for c in self.callbacks]:
            # transformers' warning; a second flow or progress callback would only repeat the first, so it is
            # not added (transformers adds it: two progress bars)
            default = cb_class in (DefaultFlowCallback, ProgressCallback, PrinterCallback)
            logger.warning(f"You are adding a {cb_class} to the callbacks of this Trainer, but there is already "
                           f"one.{' It is not added again.' if default else ''} The current list of callbacks is\n:"
                           + self.callback_list)
            if default:
                return
        self.callbacks.append(cb)

    def pop_callback(self, callback: Any) -> Any:
        if isinstance(callback, type):
            for cb in self.callbacks:
                if isinstance(cb, callback):
                    self.callbacks.remove(cb)
                    return cb
        else:
            for cb in self.callbacks:
                if cb == callback:
                    self.callbacks.remove(cb)
                    return cb
        return None

    def remove_callback(self, callback: Any) -> None:
        self.pop_callback(callback)

    @property
    def callback_list(self) -> str:
        return "\n".join(cb.__class__.__name__ for cb in self.callbacks)

    def call_event(self, event: str, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                   **kwargs: Any) -> TrainerControl:
        for callback in self.callbacks:
            result = getattr(callback, event)(
                args, state, control,
                model=self.model,
                processing_class=self.processing_class,
                tokenizer=self.processing_class,
                optimizer=self.optimizer,
                lr_scheduler=self.lr_scheduler,
                train_dataloader=self.train_dataloader,
                eval_dataloader=self.eval_dataloader,
                **kwargs,
            )
            if result is not None:
                control = result
        return control

    def on_init_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl) -> TrainerControl:
        return self.call_event("on_init_end", args, state, control)

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl) -> TrainerControl:
        control._new_training()
        return self.call_event("on_train_begin", args, state, control)

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl) -> TrainerControl:
        return self.call_event("on_train_end", args, state, control)

    def on_epoch_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl) -> TrainerControl:
        control._new_epoch()
        return self.call_event("on_epoch_begin", args, state, control)

    def on_epoch_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl) -> TrainerControl:
        return self.call_event("on_epoch_end", args, state, control)

    def on_step_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl) -> TrainerControl:
        control._new_step()
        return self.call_event("on_step_begin", args, state, control)

    def on_pre_optimizer_step(self, args: TrainingArguments, state: TrainerState,
                              control: TrainerControl) -> TrainerControl:
        return self.call_event("on_pre_optimizer_step", args, state, control)

    def on_optimizer_step(self, args: TrainingArguments, state: TrainerState,
                          control: TrainerControl) -> TrainerControl:
        return self.call_event("on_optimizer_step", args, state, control)

    def on_substep_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl) -> TrainerControl:
        return self.call_event("on_substep_end", args, state, control)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl) -> TrainerControl:
        return self.call_event("on_step_end", args, state, control)

    def on_evaluate(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    metrics: dict) -> TrainerControl:
        control.should_evaluate = False
        return self.call_event("on_evaluate", args, state, control, metrics=metrics)

    def on_predict(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                   metrics: dict) -> TrainerControl:
        return self.call_event("on_predict", args, state, control, metrics=metrics)

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl) -> TrainerControl:
        control.should_save = False
        return self.call_event("on_save", args, state, control)

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
               logs: dict | None) -> TrainerControl:
        control.should_log = False
        return self.call_event("on_log", args, state, control, logs=logs)

    def on_prediction_step(self, args: TrainingArguments, state: TrainerState,
                           control: TrainerControl) -> TrainerControl:
        return self.call_event("on_prediction_step", args, state, control)

    def on_push_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl) -> TrainerControl:
        return self.call_event("on_push_begin", args, state, control)


def _interval_hit(step: int, interval: int) -> bool:
    return interval > 0 and step % interval == 0


class DefaultFlowCallback(TrainerCallback):
    """Sets should_log / should_evaluate / should_save from the *_strategy arguments, as transformers 5 does:
    at the last step (``max_steps``), ``eval_strategy="steps"`` evaluates and ``save_strategy="steps"`` saves
    even when the step is not a multiple of ``eval_steps`` / ``save_steps``; ``"epoch"`` strategies act at the
    end of the (possibly cut short) epoch. One difference: when a checkpoint was just written at this step (a
    callback's ``should_save`` before ``should_training_stop``), the epoch end does not write it again."""

    def __init__(self) -> None:
        self._saved_step = None

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       **kwargs: Any) -> None:
        self._saved_step = None

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        self._saved_step = state.global_step

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    **kwargs: Any) -> TrainerControl:
        if state.global_step == 1 and args.logging_first_step:
            control.should_log = True
        if args.logging_strategy == "steps" and _interval_hit(state.global_step, int(state.logging_steps)):
            control.should_log = True
        if args.eval_strategy == "steps" and _interval_hit(state.global_step, int(state.eval_steps)) \
                and args.eval_delay <= state.global_step:
            control.should_evaluate = True
        if args.save_strategy == "steps" and _interval_hit(state.global_step, int(state.save_steps)):
            control.should_save = True
        if state.global_step >= state.max_steps:
            control.should_training_stop = True
            if args.eval_strategy == "steps" and args.eval_delay <= state.global_step:
                control.should_evaluate = True  # the last step is evaluated (once) even off the eval_steps grid
            if args.save_strategy == "steps":
                control.should_save = True
        return control

    def on_epoch_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     **kwargs: Any) -> TrainerControl:
        if args.logging_strategy == "epoch":
            control.should_log = True
        if args.eval_strategy == "epoch" and args.eval_delay <= (state.epoch or 0):
            control.should_evaluate = True
        if args.save_strategy == "epoch" and self._saved_step != state.global_step:
            control.should_save = True
        return control


class ProgressCallback(TrainerCallback):
    """A tqdm progress bar showing the current loss; prints the eval table rows via the trainer."""

    def __init__(self) -> None:
        self.training_bar = None
        self.prediction_bar = None

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       **kwargs: Any) -> None:
        if state.is_world_process_zero:
            from tqdm.auto import tqdm
            self.training_bar = tqdm(total=state.max_steps, initial=state.global_step,
                                     dynamic_ncols=True, file=sys.stderr, desc="train")
        self.current_step = state.global_step

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if self.training_bar is not None:
            self.training_bar.update(state.global_step - self.current_step)
            self.current_step = state.global_step

    def on_prediction_step(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                           eval_dataloader: Any = None, **kwargs: Any) -> None:
        if state.is_world_process_zero and eval_dataloader is not None and _has_len(eval_dataloader):
            if self.prediction_bar is None:
                from tqdm.auto import tqdm
                self.prediction_bar = tqdm(total=len(eval_dataloader), leave=self.training_bar is None,
                                           dynamic_ncols=True, file=sys.stderr, desc="eval")
            self.prediction_bar.update(1)

    def on_evaluate(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        self._close_prediction_bar()

    def on_predict(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        self._close_prediction_bar()

    def _close_prediction_bar(self):
        if self.prediction_bar is not None:
            self.prediction_bar.close()
        self.prediction_bar = None

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, logs: dict | None = None,
               **kwargs: Any) -> None:
        if logs and "loss" in logs:
            self.last_training_loss = logs["loss"]
        if logs and state.is_world_process_zero and any(k.endswith("_runtime") and k != "train_runtime" for k in logs):
            self._print_eval_row(state, logs)
        if self.training_bar is not None and logs and "loss" in logs:
            postfix = {"loss": f"{logs['loss']:.4f}"}
            if "learning_rate" in logs:
                postfix["lr"] = f"{logs['learning_rate']:.2e}"
            self.training_bar.set_postfix(postfix, refresh=False)

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     **kwargs: Any) -> None:
        if self.training_bar is not None:
            self.training_bar.close()
            self.training_bar = None

    def _print_eval_row(self, state, logs):
        """One row of an aligned table per evaluation: epoch, step, training loss, validation loss, metrics."""
        from tqdm.auto import tqdm
        prefix = next(k[:-len("_runtime")] for k in logs if k.endswith("_runtime"))
        metrics = {k[len(prefix) + 1:]: v for k, v in logs.items() if k.startswith(prefix + "_")
                   and not k.endswith(("_runtime", "_per_second")) and k != f"{prefix}_loss"}
        row = {"Epoch": f"{state.epoch:.2f}" if state.epoch is not None else "-",
               "Step": str(state.global_step),
               "Training Loss": f"{self.last_training_loss:.4f}" if getattr(self, "last_training_loss",
                                                                            None) is not None else "-",
               "Validation Loss": f"{logs[prefix + '_loss']:.4f}" if prefix + "_loss" in logs else "-"}
        for k, v in metrics.items():
            row[k.replace("_", " ").title()] = f"{v:.4f}" if isinstance(v, float) else str(v)
        columns = list(row)
        if getattr(self, "_table_columns", None) != columns:
            self._table_columns = columns
            self._widths = [max(len(c), 10) for c in columns]
            tqdm.write("  ".join(c.rjust(w) for c, w in zip(columns, self._widths)), file=sys.stdout)
        tqdm.write("  ".join(row[c].rjust(w) for c, w in zip(columns, self._widths)), file=sys.stdout)


def _has_len(obj) -> bool:
    try:
        len(obj)
        return True
    except TypeError:
        return False


class PrinterCallback(TrainerCallback):
    """Used instead of the progress bar when disable_tqdm=True: prints each log dict."""

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, logs: dict | None = None,
               **kwargs: Any) -> None:
        _ = logs.pop("total_flos", None) if logs else None
        if state.is_local_process_zero and logs:
            print(logs)


class EarlyStoppingCallback(TrainerCallback, ExportableState):
    """Stops training when metric_for_best_model has not improved for ``early_stopping_patience``
    evaluations (an improvement must exceed ``early_stopping_threshold``). Its arguments and counter are
    saved in checkpoints (``trainer_state.json``, ``stateful_callbacks``); a resumed run keeps counting with
    ``restore_callback_states_from_checkpoint=True``, as in transformers."""

    def __init__(self, early_stopping_patience: int = 1, early_stopping_threshold: float = 0.0) -> None:
        self.early_stopping_patience = early_stopping_patience
        self.early_stopping_threshold = early_stopping_threshold
        self.early_stopping_patience_counter = 0

    def check_metric_value(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                           metric_value: float) -> None:
        operator = (lambda a, b: a > b) if args.greater_is_better else (lambda a, b: a < b)
        if state.best_metric is None or (
            operator(metric_value, state.best_metric)
            and abs(metric_value - state.best_metric) > self.early_stopping_threshold
        ):
            self.early_stopping_patience_counter = 0
        else:
            self.early_stopping_patience_counter += 1

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       **kwargs: Any) -> None:
        if not args.load_best_model_at_end and args.metric_for_best_model is None:
            from .errors import ConfigError
            raise ConfigError(
                "EarlyStoppingCallback needs a metric to watch: set metric_for_best_model "
                "(e.g. metric_for_best_model='eval_loss') or load_best_model_at_end=True."
            )
        if args.eval_strategy == "no":
            from .errors import ConfigError
            raise ConfigError("EarlyStoppingCallback needs evaluations: set eval_strategy='steps' or 'epoch'.")

    def on_evaluate(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    metrics: dict | None = None, **kwargs: Any) -> None:
        metric_to_check = args.metric_for_best_model or "loss"
        if not metric_to_check.startswith("eval_"):
            metric_to_check = f"eval_{metric_to_check}"
        metric_value = (metrics or {}).get(metric_to_check)
        if metric_value is None or (isinstance(metric_value, float) and math.isnan(metric_value)):
            return
        self.check_metric_value(args, state, control, metric_value)
        if self.early_stopping_patience_counter >= self.early_stopping_patience:
            control.should_training_stop = True

    def state(self) -> dict:
        return {
            "args": {
                "early_stopping_patience": self.early_stopping_patience,
                "early_stopping_threshold": self.early_stopping_threshold,
            },
            "attributes": {"early_stopping_patience_counter": self.early_stopping_patience_counter},
        }
