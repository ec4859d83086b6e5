"""TensorBoard (``report_to="tensorboard"``): transformers' ``TensorBoardCallback`` with three additions.

transformers' callback does the logging: the arguments as the text ``args`` (JSON), the model config as
``model_config``, every numeric log value as the scalar ``train/<key>`` / ``eval/<key>`` / ``test/<key>`` at
``state.global_step``, strings as text. trainwright adds:

* where the event files go: ``$TENSORBOARD_LOGGING_DIR`` (as transformers), else ``args.logging_dir`` (the
  transformers 4.x argument trainwright keeps), else ``<output_dir>/runs/<run_name>`` instead of
  transformers 5's ``<output_dir>/runs/<date>_<host>``, so runs are found by name. The run name (and a trial
  name) is a path inside ``<output_dir>/runs``: ``group/run`` nests, ``..`` parts and a leading ``/`` are
  dropped, so no name leads out; an ``evaluate()`` without ``train()`` writes there too (transformers' callback
  would write to ``./runs`` in the current directory).
* the scalar-valued arguments as TensorBoard HParams (the HPARAMS tab compares runs), with ``train/loss``,
  ``eval/loss`` and the ``metric_for_best_model`` as its metrics.
* a full disk or an I/O error while writing events is one warning; training goes on.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import socket
from datetime import datetime
from typing import TYPE_CHECKING, Any

from transformers.integrations.integration_utils import TensorBoardCallback as HFTensorBoardCallback

from ..checkpoint.safe_fs import disk_errors_degrade, safe_relpath
from .jsonl import _args_dict

if TYPE_CHECKING:
    from ..args import TrainingArguments
    from ..callbacks import TrainerControl
    from ..state import TrainerState

logger = logging.getLogger(__name__)
_WHAT = "the TensorBoard event file"


def _default_logdir(args) -> str:
    run_name = getattr(args, "run_name", None)
    if not run_name or run_name == getattr(args, "output_dir", None):
        run_name = datetime.now().strftime("%b%d_%H-%M-%S") + "_" + socket.gethostname()
    return os.path.join(args.output_dir, "runs", safe_relpath(run_name))


def _hparam_value(v):
    if isinstance(v, (bool, str, int)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else str(v)
    return json.dumps(v) if isinstance(v, (list, dict)) else str(v)


class TensorBoardCallback(HFTensorBoardCallback):
    """transformers' ``TensorBoardCallback`` (``torch.utils.tensorboard.SummaryWriter``) with trainwright's
    event directory, HParams and disk-error handling (see the module docstring)."""

    def _base_logdir(self, args) -> str:
        if self._env_logging_dir:
            return self._env_logging_dir
        explicit = getattr(args, "logging_dir", None)
        return os.path.expanduser(str(explicit)) if explicit else _default_logdir(args)

    def __init__(self, tb_writer: Any = None) -> None:
        super().__init__(tb_writer)
        self._env_logging_dir = self.logging_dir  # $TENSORBOARD_LOGGING_DIR, read by transformers' __init__

    def _init_summary_writer(self, args):
        if self.logging_dir is None:  # e.g. on_log from evaluate() before any train()
            self.logging_dir = self._base_logdir(args)
        super()._init_summary_writer(args)

    def _write_hparams(self, args):
        from torch.utils.tensorboard.summary import hparams

        hp = {k: _hparam_value(v) for k, v in _args_dict(args).items() if v is not None}
        metrics = {"train/loss": 0.0, "eval/loss": 0.0}
        best = getattr(args, "metric_for_best_model", None)
        if best:
            metrics["eval/" + (best[len("eval_"):] if best.startswith("eval_") else best)] = 0.0
        writer = self.tb_writer._get_file_writer()
        for summary in hparams(hp, metrics):
            writer.add_summary(summary)

    @disk_errors_degrade(_WHAT)
    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        if state.is_hyper_param_search and state.trial_name is not None:
            # one directory per trial, inside the run's directory (transformers: output_dir/runs/<date>/<trial>)
            self.logging_dir = os.path.join(self._base_logdir(args), safe_relpath(state.trial_name, "trial"))
            if self.tb_writer is not None:
                self.tb_writer.close()
                self.tb_writer = None
            state = dataclasses.replace(state, is_hyper_param_search=False)  # transformers keeps this directory
        elif self.logging_dir is None:
            self.logging_dir = self._base_logdir(args)
        super().on_train_begin(args, state, control, **kwargs)
        if self.tb_writer is None:
            return
        try:
            self._write_hparams(args)
        except Exception as e:  # hparams are a nicety: never fail training for them
            logger.warning("TensorBoard: could not write hyperparameters: %r", e)
        self.tb_writer.flush()

    @disk_errors_degrade(_WHAT)
    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, logs: dict | None = None,
               **kwargs: Any) -> None:
        super().on_log(args, state, control, logs=logs, **kwargs)

    @disk_errors_degrade(_WHAT)
    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     **kwargs: Any) -> None:
        super().on_train_end(args, state, control, **kwargs)
