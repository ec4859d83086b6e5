"""Weights & Biases tracker (``report_to="wandb"``), keys as in HF's WandbCallback.

wandb's own environment variables apply (``WANDB_MODE=offline``, ``WANDB_DIR``, ``WANDB_PROJECT``,
``WANDB_RUN_ID``/``WANDB_RESUME``, ...). The project defaults to ``"huggingface"`` like HF's.
``wandb.init(name=args.run_name, config=args.to_dict() + model info)``; every ``on_log`` is sent as
``wandb.log({"train/loss": ..., "eval/accuracy": ..., "train/global_step": step}, step=step)``;
the final train summary values (``train_runtime``, ``train_loss``, ``total_flos``, ...) go to the run
summary. ``wandb.finish()`` at train end if this callback started the run.
"""
from __future__ import annotations

import logging
import os

from ..callbacks import TrainerCallback
from ..checkpoint.safe_fs import disk_errors_degrade
from . import rewrite_logs
from .jsonl import _args_dict, _model_info, to_jsonable

logger = logging.getLogger(__name__)

SUMMARY_ONLY = ("train_runtime", "train_samples_per_second", "train_steps_per_second", "train_loss", "total_flos")


def _scalar(v):
    """Python number for a tensor/numpy scalar (wandb would log a 1-element tensor as a histogram)."""
    if isinstance(v, (bool, int, float, str)) or v is None:
        return v
    try:
        if hasattr(v, "numel") and v.numel() == 1 or getattr(v, "size", None) == 1:
            return v.item()
    except Exception:
        pass
    return to_jsonable(v)


class WandbCallback(TrainerCallback):
    def __init__(self):
        import wandb

        self._wandb = wandb
        self._initialized = False
        self._started_run = False
        self._finished = False
        self._last_step = -1

    def setup(self, args, state, model, **kwargs):
        self._initialized = True
        if not state.is_world_process_zero:
            return
        wandb = self._wandb
        config = _args_dict(args)
        info = _model_info(model)
        config.update({f"model/{k}": v for k, v in info.items() if v is not None})
        cfg = getattr(model, "config", None) if model is not None else None
        if cfg is not None and hasattr(cfg, "to_dict"):
            try:
                config = {**to_jsonable(cfg.to_dict()), **config}
            except Exception:
                pass
        init_args = {}
        if state.trial_name:
            init_args["name"] = state.trial_name
            init_args["group"] = getattr(args, "run_name", None) or args.output_dir
        elif getattr(args, "run_name", None):
            init_args["name"] = args.run_name
        if wandb.run is None:
            wandb.init(project=os.getenv("WANDB_PROJECT", "huggingface"), **init_args)
            self._started_run = True
        wandb.config.update(config, allow_val_change=True)
        if getattr(wandb, "define_metric", None):
            wandb.define_metric("train/global_step")
            wandb.define_metric("*", step_metric="train/global_step", step_sync=True)

    @disk_errors_degrade("the W&B run")
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if state.is_hyper_param_search and self._initialized and self._started_run:
            self._wandb.finish()
            self._initialized = False
            self._started_run = False
            self._last_step = -1
        if not self._initialized or self._finished:
            self._finished = False
            self.setup(args, state, model)

    @disk_errors_degrade("the W&B run")
    def on_log(self, args, state, control, logs=None, model=None, **kwargs):
        if not logs:
            return
        if not self._initialized:
            self.setup(args, state, model)
        if not state.is_world_process_zero:
            return
        run = self._wandb.run
        if run is None:
            if self._finished:
                logger.warning("W&B: run already finished at train end; not logging %s", sorted(logs))
            return
        for k in SUMMARY_ONLY:
            if k in logs:
                run.summary[k] = _scalar(logs[k])
        values = {k: _scalar(v) for k, v in rewrite_logs(
            {k: v for k, v in logs.items() if k not in SUMMARY_ONLY}).items()}
        values["train/global_step"] = state.global_step
        if state.global_step >= self._last_step:
            self._wandb.log(values, step=state.global_step)
            self._last_step = state.global_step
        else:  # wandb drops steps that go backwards (resumed run): log without an explicit step
            self._wandb.log(values)

    @disk_errors_degrade("the W&B run")
    def on_train_end(self, args, state, control, **kwargs):
        if self._initialized and state.is_world_process_zero and self._started_run and self._wandb.run is not None:
            self._wandb.finish()
            self._finished = True
            self._started_run = False
