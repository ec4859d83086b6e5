"""Weights & Biases (``report_to="wandb"``): transformers' ``WandbCallback`` with three additions.

transformers' callback does the logging, with wandb's and its own environment variables (``WANDB_MODE=offline``,
``WANDB_PROJECT`` (default ``"huggingface"``), ``WANDB_DIR``, ``WANDB_RUN_ID``/``WANDB_RESUME``, ``WANDB_WATCH``,
``WANDB_LOG_MODEL``): the config is the model config merged with ``args.to_dict()`` plus
``model/num_parameters``, every log goes to ``wandb.log`` with the keys ``train/<key>`` / ``eval/<key>`` and
``train/global_step`` as the x axis, the final ``train_runtime``, ``train_loss``, ``total_flos``, ... go to the
run summary. As with transformers the run stays open after ``train()`` (``evaluate()`` logs to it) until
``wandb.finish()`` or the end of the process. trainwright adds:

* ``WANDB_DIR`` unset: the run's files go to ``<output_dir>/wandb/`` instead of ``./wandb`` in the current
  directory.
* ``WANDB_LOG_MODEL=end``: the final model is saved with trainwright (safetensors, no pickled
  ``training_args.bin``) into a temporary directory inside ``output_dir`` and logged as the ``final_model``
  artifact, as transformers does (its callback builds a ``transformers.Trainer`` for that, which cannot take
  trainwright's arguments). ``WANDB_LOG_MODEL=checkpoint`` logs each checkpoint directory, as transformers.
* a full disk or an I/O error inside wandb is one warning; training goes on.
"""
from __future__ import annotations

import contextlib
import numbers
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers.integrations.integration_utils import WandbCallback as HFWandbCallback

from ..checkpoint.safe_fs import disk_errors_degrade

if TYPE_CHECKING:
    import torch

    from ..args import TrainingArguments
    from ..callbacks import TrainerControl
    from ..state import TrainerState

_WHAT = "the W&B run"


@contextlib.contextmanager
def _run_dir(args):
    """WANDB_DIR=<output_dir> while wandb.init runs, when the user did not set it."""
    if os.environ.get("WANDB_DIR") or not getattr(args, "output_dir", None):
        yield
        return
    os.makedirs(args.output_dir, exist_ok=True)
    os.environ["WANDB_DIR"] = os.path.abspath(args.output_dir)
    try:
        yield
    finally:
        os.environ.pop("WANDB_DIR", None)


def _model_name(wandb, args) -> str:
    if args.run_name is None or args.run_name == args.output_dir:
        return f"model-{wandb.run.id}"
    return f"model-{wandb.run.name}"


class WandbCallback(HFWandbCallback):
    """transformers' ``WandbCallback`` with trainwright's run directory and final-model artifact (see the module
    docstring)."""

    def setup(self, args: TrainingArguments, state: TrainerState, model: torch.nn.Module | None,
              **kwargs: Any) -> None:
        with _run_dir(args):
            super().setup(args, state, model, **kwargs)

    @disk_errors_degrade(_WHAT)
    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       model: torch.nn.Module | None = None, **kwargs: Any) -> None:
        super().on_train_begin(args, state, control, model=model, **kwargs)

    @disk_errors_degrade(_WHAT)
    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
               model: torch.nn.Module | None = None, logs: dict | None = None, **kwargs: Any) -> None:
        super().on_log(args, state, control, model=model, logs=logs, **kwargs)

    @disk_errors_degrade(_WHAT)
    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        super().on_save(args, state, control, **kwargs)

    @disk_errors_degrade(_WHAT)
    def on_predict(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, metrics: dict,
                   **kwargs: Any) -> None:
        super().on_predict(args, state, control, metrics, **kwargs)

    @disk_errors_degrade(_WHAT)
    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     model: torch.nn.Module | None = None, processing_class: Any = None, **kwargs: Any) -> None:
        if not (self._log_model.is_enabled and self._initialized and state.is_world_process_zero):
            return
        self._log_final_model(args, state, model, processing_class)

    def _log_final_model(self, args, state, model, processing_class):
        from transformers.integrations.integration_utils import save_model_architecture_to_file

        from ..checkpoint import save_model_dir

        wandb = self._wandb
        if args.load_best_model_at_end:
            metadata = {f"eval/{args.metric_for_best_model}": state.best_metric,
                        "train/total_floss": state.total_flos,  # transformers' key, spelling included
                        "model/num_parameters": wandb.config.get("model/num_parameters")}
        else:
            metadata = {k: v for k, v in dict(wandb.summary).items()
                        if isinstance(v, numbers.Number) and not k.startswith("_")}
        metadata["final_model"] = True
        os.makedirs(args.output_dir, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".wandb-final-model-", dir=args.output_dir) as tmp:
            save_model_dir(tmp, model, processing_class)
            save_model_architecture_to_file(model, tmp)
            artifact = wandb.Artifact(name=_model_name(wandb, args), type="model", metadata=metadata)
            for f in sorted(Path(tmp).glob("*")):
                if f.is_file():
                    artifact.add_file(str(f), name=f.name)
            wandb.run.log_artifact(artifact, aliases=["final_model"])
