"""transformers.Trainer's helper methods that scripts and Trainer subclasses call (a custom ``training_step`` or
``create_optimizer`` copied from transformers, ``log_metrics`` output): the same names, arguments and results,
built on trainwright's own precision and optimizer code. ``Trainer`` inherits them."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn

from .errors import ConfigError

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    import torch
    from transformers.trainer_pt_utils import LabelSmoother

    from .args import TrainingArguments


class TrainerMethodsMixin:
    """Methods of transformers.Trainer that trainwright provides for scripts and subclasses."""

    def log_metrics(self, split: str, metrics: dict) -> None:
        """Prints ``metrics`` as transformers does (main process only): an aligned ``***** <split> metrics *****``
        table, floats rounded, runtimes as h:mm:ss.cc, memory in MB, ``total_flos`` in GF (metrics_format.py)."""
        if self.is_world_process_zero():
            from .console import print_metrics
            print_metrics(split, metrics)

    def save_metrics(self, split: str, metrics: dict, combined: bool = True) -> None:
        """Writes ``<split>_results.json`` and, with ``combined``, merges ``metrics`` into ``all_results.json``
        (main process only; atomic, a full disk is one warning per file and the previous file stays)."""
        if self.is_world_process_zero():
            from .outputs import save_results
            save_results(self.args.output_dir, split, metrics, combined)

    def metrics_format(self, metrics: dict) -> dict:
        """``metrics`` formatted for printing, as transformers' ``Trainer.metrics_format``."""
        from .metrics_format import metrics_format
        return metrics_format(metrics)

    def compute_loss_context_manager(self) -> AbstractContextManager:
        """The context ``compute_loss`` runs in: autocast for fp16/bf16 (transformers' subclasses use
        ``with self.compute_loss_context_manager(): loss = self.compute_loss(...)``)."""
        return self.precision.autocast()

    def autocast_smart_context_manager(self, cache_enabled: bool | None = True) -> AbstractContextManager:
        """Autocast for fp16/bf16 training, a null context otherwise (as transformers)."""
        return self.precision.autocast()

    def get_decay_parameter_names(self, model: torch.nn.Module) -> list[str]:
        """The names of the parameters that get weight decay: all but biases and normalisation weights (the groups
        ``create_optimizer`` builds), in the model's order."""
        from .optim import decay_parameter_names
        decay = decay_parameter_names(model)
        return [name for name, _ in model.named_parameters() if name in decay]

    @staticmethod
    def get_optimizer_cls_and_kwargs(args: TrainingArguments,
                                     model: torch.nn.Module | None = None) -> tuple[type, dict]:
        """(optimizer class, keyword arguments without the parameters) for ``args.optim``, as ``create_optimizer``
        builds it (a custom create_optimizer calls ``optimizer_cls(param_groups, **optimizer_kwargs)``)."""
        from .optim import optimizer_cls_and_kwargs
        return optimizer_cls_and_kwargs(args, getattr(args, "device", None))

    def floating_point_ops(self, inputs: dict) -> int:
        """Forward + backward FLOPs of one batch as transformers counts them (the model's
        ``floating_point_ops``: 6 x input positions x the parameters without the embeddings), 0 if unknown."""
        from .distributed import unwrap_model
        model = unwrap_model(self.model)
        return model.floating_point_ops(inputs) if hasattr(model, "floating_point_ops") else 0

    def get_eval_dataloader(self, eval_dataset: Any = None) -> torch.utils.data.DataLoader:
        """The evaluation DataLoader (``eval_dataset``: a dataset, a name of a dict eval_dataset, or None). With
        ``dataloader_persistent_workers`` the Trainer's own eval set (or a named one) keeps its loader, and so its
        workers, from one evaluation to the next, as in transformers; another dataset gets a new loader."""
        key = eval_dataset if isinstance(eval_dataset, str) else \
            "eval" if eval_dataset is None or eval_dataset is self.eval_dataset else None
        if key is None or not self.args.dataloader_persistent_workers or self.args.dataloader_num_workers <= 0:
            return self._get_eval_dataloader(eval_dataset)
        named = isinstance(eval_dataset, str) and isinstance(self.eval_dataset, dict)
        target = self.eval_dataset.get(key) if named else self.eval_dataset
        cached = getattr(self, "_eval_dataloaders", {}).get(key)
        if cached is not None and cached[0] is target:
            return cached[1]
        loader = self._get_eval_dataloader(eval_dataset)
        self._eval_dataloaders = {**getattr(self, "_eval_dataloaders", {}), key: (target, loader)}
        return loader

    @property
    def label_smoother(self) -> LabelSmoother | None:
        """transformers' attribute: a ``LabelSmoother`` while label smoothing is on, else None (subclasses that copy
        transformers' compute_loss read it). Setting it to None turns smoothing off; to a smoother, uses its
        epsilon."""
        factor = self._label_smoothing_factor
        if not factor:
            return None
        if getattr(self, "_label_smoother", None) is None or self._label_smoother.epsilon != factor:
            from transformers.trainer_pt_utils import LabelSmoother
            self._label_smoother = LabelSmoother(epsilon=factor)
        return self._label_smoother

    @label_smoother.setter
    def label_smoother(self, smoother: LabelSmoother | None) -> None:
        self._label_smoothing_factor = float(getattr(smoother, "epsilon", 0.0) or 0.0) if smoother is not None else 0.0

    def hyperparameter_search(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise ConfigError("Trainer.hyperparameter_search() is not implemented in trainwright (it needs optuna / "
                          "ray / wandb sweeps driving model_init). Run the search with the tool itself, one "
                          "Trainer per trial (model_init and the trial's TrainingArguments), and read "
                          "trainer.evaluate() for the objective.")
