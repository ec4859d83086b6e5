"""TensorBoard tracker (``report_to="tensorboard"``), same tags as HF's TensorBoardCallback.

Event files go to ``args.logging_dir`` when set, else ``$TENSORBOARD_LOGGING_DIR``, else
``<output_dir>/runs/<run_name>`` (``<timestamp>_<hostname>`` when there is no run name). The run name (and a
hyper-parameter trial's name) is a path inside ``<output_dir>/runs``: ``group/run`` nests as in transformers, but
``..`` parts and a leading ``/`` are dropped, so no name leads out; only an explicit ``logging_dir`` puts the files
elsewhere. A full disk or an I/O error while writing events is one warning; training goes on.
Scalars: ``loss`` -> ``train/loss``, ``eval_accuracy`` -> ``eval/accuracy``, ``test_x`` -> ``test/x``.
At train begin the arguments are written as the text ``args`` (JSON), the model config (if any) as
``model_config``, and the scalar-valued arguments as TensorBoard HParams (same event file).
"""
from __future__ import annotations

import json
import logging
import math
import os
import socket
from datetime import datetime

from ..callbacks import TrainerCallback
from ..checkpoint.safe_fs import disk_errors_degrade, safe_relpath
from . import rewrite_logs
from .jsonl import _args_dict

logger = logging.getLogger(__name__)


def _default_logdir(args) -> str:
    run_name = getattr(args, "run_name", None)
    if not run_name or run_name == getattr(args, "output_dir", None):
        run_name = datetime.now().strftime("%b%d_%H-%M-%S") + "_" + socket.gethostname()
    return os.path.join(args.output_dir, "runs", safe_relpath(run_name))


def _hparam_value(v):
    if isinstance(v, bool) or isinstance(v, str):
        return v
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else str(v)
    return json.dumps(v) if isinstance(v, (list, dict)) else str(v)


class TensorBoardCallback(TrainerCallback):
    """Sends the logs to TensorBoard through ``torch.utils.tensorboard.SummaryWriter``."""

    def __init__(self, tb_writer=None):
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

        self._SummaryWriter = SummaryWriter
        self.tb_writer = tb_writer
        self.logging_dir = None

    def _logging_dir(self, args) -> str:
        explicit = getattr(args, "logging_dir", None) or os.getenv("TENSORBOARD_LOGGING_DIR")
        if explicit:
            return os.path.expanduser(str(explicit))
        return _default_logdir(args)

    def _init_summary_writer(self, args):
        if self.logging_dir is None:
            self.logging_dir = self._logging_dir(args)
        self.tb_writer = self._SummaryWriter(log_dir=self.logging_dir)

    def _write_hparams(self, args, args_dict: dict):
        from torch.utils.tensorboard.summary import hparams

        hp = {k: _hparam_value(v) for k, v in args_dict.items() if v is not None}
        metric_names = {"train/loss": 0.0, "eval/loss": 0.0}
        best = getattr(args, "metric_for_best_model", None)
        if best:
            name = best[len("eval_"):] if best.startswith("eval_") else best
            metric_names[f"eval/{name}"] = 0.0
        exp, ssi, sei = hparams(hp, metric_names)
        fw = self.tb_writer._get_file_writer()
        fw.add_summary(exp)
        fw.add_summary(ssi)
        fw.add_summary(sei)

    @disk_errors_degrade("the TensorBoard event file")
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if not state.is_world_process_zero:
            return
        if state.is_hyper_param_search and state.trial_name:
            self.logging_dir = os.path.join(self._logging_dir(args), safe_relpath(state.trial_name, "trial"))
            if self.tb_writer is not None:
                self.tb_writer.close()
                self.tb_writer = None
        if self.tb_writer is None:
            self._init_summary_writer(args)
        args_dict = _args_dict(args)
        self.tb_writer.add_text("args", json.dumps(args_dict, indent=2, sort_keys=True))
        config = getattr(model, "config", None) if model is not None else None
        if config is not None and hasattr(config, "to_json_string"):
            try:
                self.tb_writer.add_text("model_config", config.to_json_string())
            except Exception:
                pass
        try:
            self._write_hparams(args, args_dict)
        except Exception as e:  # hparams are a nicety, never fail training for them
            logger.warning("TensorBoard: could not write hyperparameters: %r", e)
        self.tb_writer.flush()

    @disk_errors_degrade("the TensorBoard event file")
    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        if self.tb_writer is None:
            self._init_summary_writer(args)
        for k, v in rewrite_logs(logs).items():
            if hasattr(v, "item") and callable(v.item):
                try:
                    v = v.item()
                except Exception:
                    pass
            if isinstance(v, bool):
                v = int(v)
            if isinstance(v, (int, float)):
                self.tb_writer.add_scalar(k, v, state.global_step)
            elif isinstance(v, str):
                self.tb_writer.add_text(k, v, state.global_step)
            else:
                logger.warning("TensorBoard: dropped %r=%r (%s is not a scalar)", k, v, type(v).__name__)
        self.tb_writer.flush()

    @disk_errors_degrade("the TensorBoard event file")
    def on_train_end(self, args, state, control, **kwargs):
        if self.tb_writer is not None:
            writer, self.tb_writer = self.tb_writer, None
            writer.close()
