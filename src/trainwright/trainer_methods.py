"""transformers.Trainer's helper methods that scripts and Trainer subclasses call (a custom ``training_step`` or
``create_optimizer`` copied from transformers, ``log_metrics`` output): the same names, arguments and results,
built on trainwright's own precision and optimizer code. ``Trainer`` inherits them."""
from __future__ import annotations

import datetime

from .errors import ConfigError


def metrics_format(metrics: dict) -> dict:
    """The metrics as ``log_metrics`` prints them (transformers' format): memory in MB, runtimes as h:mm:ss.cc,
    ``total_flos`` in GF, other floats rounded to 4 decimals."""
    out = dict(metrics)
    for key, value in out.items():
        if "_mem_" in key and isinstance(value, (int, float)):
            out[key] = f"{int(value) >> 20}MB"
        elif "_runtime" in key and isinstance(value, (int, float)):
            out[key] = f"{datetime.timedelta(seconds=int(value))}.{int(abs(value - int(value)) * 100):02d}"
        elif key == "total_flos" and isinstance(value, (int, float)):
            out[key] = f"{int(value) >> 30}GF"
        elif isinstance(value, float):
            out[key] = round(value, 4)
    return out


class TrainerMethodsMixin:
    """Methods of transformers.Trainer that trainwright provides for scripts and subclasses."""

    def compute_loss_context_manager(self):
        """The context ``compute_loss`` runs in: autocast for fp16/bf16 (transformers' subclasses use
        ``with self.compute_loss_context_manager(): loss = self.compute_loss(...)``)."""
        return self.precision.autocast()

    def autocast_smart_context_manager(self, cache_enabled: bool | None = True):
        """Autocast for fp16/bf16 training, a null context otherwise (as transformers)."""
        return self.precision.autocast()

    def get_decay_parameter_names(self, model) -> list[str]:
        """The names of the parameters that get weight decay: all but biases and normalisation weights (the groups
        ``create_optimizer`` builds), in the model's order."""
        from .optim import decay_parameter_names
        decay = decay_parameter_names(model)
        return [name for name, _ in model.named_parameters() if name in decay]

    @staticmethod
    def get_optimizer_cls_and_kwargs(args, model=None) -> tuple[type, dict]:
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

    def metrics_format(self, metrics: dict) -> dict:
        return metrics_format(metrics)

    def hyperparameter_search(self, *args, **kwargs):
        raise ConfigError("Trainer.hyperparameter_search() is not implemented in trainwright (it needs optuna / "
                          "ray / wandb sweeps driving model_init). Run the search with the tool itself, one "
                          "Trainer per trial (model_init and the trial's TrainingArguments), and read "
                          "trainer.evaluate() for the objective.")
