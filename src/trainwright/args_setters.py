"""The ``set_*`` helpers of TrainingArguments: transformers' signatures, defaults and effects.

Each helper sets a group of fields and returns the arguments, as in transformers. The arguments are then
validated again; a value that fails raises ``ConfigError`` and leaves the object as it was.
"""
from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .args import TrainingArguments


class Setters:
    """Mixed into TrainingArguments (a dataclass); holds no fields of its own."""

    def _set_fields(self, **values):
        before = {name: getattr(self, name) for name in values}
        for name, value in values.items():
            setattr(self, name, value)
        try:
            self._validate()
        except Exception:
            for name, value in before.items():
                setattr(self, name, value)
            raise
        return self

    def set_training(self, learning_rate: float = 5e-5, batch_size: int = 8, weight_decay: float = 0,
                     num_epochs: float = 3, max_steps: int = -1, gradient_accumulation_steps: int = 1,
                     seed: int = 42, activation_checkpointing: bool = False,
                     gradient_checkpointing: bool | None = None) -> TrainingArguments:
        """Training basics; also sets ``do_train=True``. Returns the arguments.

        Args:
            learning_rate, weight_decay, seed, gradient_accumulation_steps: the fields of those names.
            batch_size: ``per_device_train_batch_size``.
            num_epochs: ``num_train_epochs``; max_steps: ``max_steps`` (-1: train for ``num_epochs``).
            activation_checkpointing: ``activation_checkpointing`` (``gradient_checkpointing`` is its old name).
        """
        if gradient_checkpointing is not None:
            warnings.warn("`gradient_checkpointing` is deprecated: use `activation_checkpointing`.", FutureWarning,
                          stacklevel=2)
            activation_checkpointing = gradient_checkpointing
        return self._set_fields(do_train=True, learning_rate=learning_rate, per_device_train_batch_size=batch_size,
                                weight_decay=weight_decay, num_train_epochs=num_epochs, max_steps=max_steps,
                                gradient_accumulation_steps=gradient_accumulation_steps, seed=seed,
                                activation_checkpointing=activation_checkpointing,
                                gradient_checkpointing=activation_checkpointing)

    def set_evaluate(self, strategy: Any = "no", steps: int = 500, batch_size: int = 8,
                     accumulation_steps: int | None = None, delay: float | None = None,
                     loss_only: bool = False) -> TrainingArguments:
        """Evaluation settings; ``do_eval`` becomes ``strategy != "no"``. Returns the arguments.

        Args:
            strategy: ``eval_strategy`` ("no", "steps", "epoch"); steps: ``eval_steps``.
            batch_size: ``per_device_eval_batch_size``; accumulation_steps: ``eval_accumulation_steps``.
            delay: ``eval_delay``; loss_only: ``prediction_loss_only``.
        """
        strategy = getattr(strategy, "value", strategy)
        if strategy == "steps" and steps == 0:
            raise _config_error("set_evaluate(strategy='steps') needs a positive steps= (e.g. steps=500).")
        return self._set_fields(eval_strategy=strategy, do_eval=strategy != "no", eval_steps=steps,
                                per_device_eval_batch_size=batch_size, eval_accumulation_steps=accumulation_steps,
                                eval_delay=0 if delay is None else delay, prediction_loss_only=loss_only)

    def set_testing(self, batch_size: int = 8, loss_only: bool = False) -> TrainingArguments:
        """Prediction settings; also sets ``do_predict=True``. Returns the arguments.

        Args:
            batch_size: ``per_device_eval_batch_size``; loss_only: ``prediction_loss_only``.
        """
        return self._set_fields(do_predict=True, per_device_eval_batch_size=batch_size, prediction_loss_only=loss_only)

    def set_save(self, strategy: Any = "steps", steps: int = 500, total_limit: int | None = None,
                 on_each_node: bool = False) -> TrainingArguments:
        """Checkpoint settings. Returns the arguments.

        Args:
            strategy: ``save_strategy`` ("no", "steps", "epoch", "best"); steps: ``save_steps``.
            total_limit: ``save_total_limit``; on_each_node: ``save_on_each_node``.
        """
        strategy = getattr(strategy, "value", strategy)
        if strategy == "steps" and steps == 0:
            raise _config_error("set_save(strategy='steps') needs a positive steps= (e.g. steps=500).")
        return self._set_fields(save_strategy=strategy, save_steps=steps, save_total_limit=total_limit,
                                save_on_each_node=on_each_node)

    def set_logging(self, strategy: Any = "steps", steps: int = 500, report_to: Any = "none", level: str = "passive",
                    first_step: bool = False, nan_inf_filter: bool = False, on_each_node: bool = False,
                    replica_level: str = "passive") -> TrainingArguments:
        """Logging settings. Returns the arguments.

        Args:
            strategy: ``logging_strategy``; steps: ``logging_steps``; report_to: ``report_to``.
            level / replica_level: ``log_level`` / ``log_level_replica``; first_step: ``logging_first_step``.
            nan_inf_filter: ``logging_nan_inf_filter``; on_each_node: ``log_on_each_node``.
        """
        strategy = getattr(strategy, "value", strategy)
        if strategy == "steps" and steps == 0:
            raise _config_error("set_logging(strategy='steps') needs a positive steps= (e.g. steps=500).")
        return self._set_fields(logging_strategy=strategy, logging_steps=steps, report_to=report_to, log_level=level,
                                logging_first_step=first_step, logging_nan_inf_filter=nan_inf_filter,
                                log_on_each_node=on_each_node, log_level_replica=replica_level)

    def set_push_to_hub(self, model_id: str, strategy: Any = "every_save", token: str | None = None,
                        private_repo: bool | None = None, always_push: bool = False,
                        revision: str | None = None) -> TrainingArguments:
        """Push to the Hub as transformers' ``set_push_to_hub`` (sets ``push_to_hub=True``; see docs/sharing.md).
        Returns the arguments.

        Args:
            model_id: ``hub_model_id``; strategy: ``hub_strategy``; token: ``hub_token``.
            private_repo: ``hub_private_repo``; always_push: ``hub_always_push``; revision: ``hub_revision``.
        """
        return self._set_fields(push_to_hub=True, hub_model_id=model_id, hub_strategy=getattr(strategy, "value",
                                                                                              strategy),
                                hub_token=token, hub_private_repo=private_repo, hub_always_push=always_push,
                                hub_revision=revision)

    def set_optimizer(self, name: Any = "adamw_torch", learning_rate: float = 5e-5, weight_decay: float = 0,
                      beta1: float = 0.9, beta2: float = 0.999, epsilon: float = 1e-8,
                      args: str | None = None) -> TrainingArguments:
        """Optimizer and its hyperparameters. Returns the arguments.

        Args:
            name: ``optim``; learning_rate, weight_decay: the fields of those names.
            beta1 / beta2 / epsilon: ``adam_beta1`` / ``adam_beta2`` / ``adam_epsilon``; args: ``optim_args``.
        """
        return self._set_fields(optim=getattr(name, "value", name), learning_rate=learning_rate,
                                weight_decay=weight_decay, adam_beta1=beta1, adam_beta2=beta2, adam_epsilon=epsilon,
                                optim_args=args)

    def set_lr_scheduler(self, name: Any = "linear", num_epochs: float = 3.0, max_steps: int = -1,
                         warmup_steps: float = 0) -> TrainingArguments:
        """Learning-rate schedule and training length. Returns the arguments.

        Args:
            name: ``lr_scheduler_type``; num_epochs: ``num_train_epochs``; max_steps, warmup_steps: those fields.
        """
        return self._set_fields(lr_scheduler_type=getattr(name, "value", name), num_train_epochs=num_epochs,
                                max_steps=max_steps, warmup_steps=warmup_steps)

    def set_dataloader(self, train_batch_size: int = 8, eval_batch_size: int = 8, drop_last: bool = False,
                       num_workers: int = 0, pin_memory: bool = True, persistent_workers: bool = False,
                       prefetch_factor: int | None = None, multiprocessing_context: str | None = None,
                       in_order: bool = True, auto_find_batch_size: bool = False, ignore_data_skip: bool = False,
                       sampler_seed: int | None = None) -> TrainingArguments:
        """Data loader settings. Returns the arguments.

        Args:
            train_batch_size / eval_batch_size: ``per_device_train_batch_size`` / ``per_device_eval_batch_size``.
            drop_last, num_workers, pin_memory, persistent_workers, prefetch_factor, multiprocessing_context,
                in_order: the ``dataloader_*`` fields of those names.
            auto_find_batch_size, ignore_data_skip: those fields; sampler_seed: ``data_seed``.
        """
        return self._set_fields(per_device_train_batch_size=train_batch_size,
                                per_device_eval_batch_size=eval_batch_size,
                                dataloader_drop_last=drop_last, dataloader_num_workers=num_workers,
                                dataloader_pin_memory=pin_memory, dataloader_persistent_workers=persistent_workers,
                                dataloader_prefetch_factor=prefetch_factor,
                                dataloader_multiprocessing_context=multiprocessing_context,
                                dataloader_in_order=in_order, auto_find_batch_size=auto_find_batch_size,
                                ignore_data_skip=ignore_data_skip, data_seed=sampler_seed)


def _config_error(message: str):
    from .errors import ConfigError
    return ConfigError(message)
