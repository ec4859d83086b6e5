"""MLflow (``report_to="mlflow"``): transformers' ``MLflowCallback`` with a local default that works.

transformers' callback does the logging, with its environment variables (``MLFLOW_TRACKING_URI``,
``MLFLOW_EXPERIMENT_NAME``, ``MLFLOW_RUN_ID``, ``MLFLOW_NESTED_RUN``, ``MLFLOW_TAGS``, ``MLFLOW_FLATTEN_PARAMS``,
``MLFLOW_MAX_LOG_PARAMS``, ``HF_MLFLOW_LOG_ARTIFACTS``): params are the model config merged with
``args.to_dict()`` (a value longer than MLflow's limit is left out, as transformers does), metrics every numeric
log value at ``state.global_step``, the run is named ``args.run_name`` and ended at train end. trainwright adds:

* no tracking URI set (neither ``MLFLOW_TRACKING_URI`` nor ``mlflow.set_tracking_uri``): the run goes to
  ``sqlite:///<output_dir>/mlflow.db`` (MLflow 3 would create ``mlflow.db`` in the current directory).
  Read it with ``mlflow ui --backend-store-uri sqlite:///<output_dir>/mlflow.db`` or
  ``MlflowClient("sqlite:///<output_dir>/mlflow.db")``. trainwright sets it with ``mlflow.set_tracking_uri``;
  a later run in the same process sets its own.
* a tracking URI naming MLflow's file store (``./mlruns``, ``file:...``), which MLflow 3 refuses unless
  ``MLFLOW_ALLOW_FILE_STORE=true``, is a ConfigError when the Trainer is built, with the fix, instead of
  MLflow's traceback at the first step.
* logs after the run ended (``evaluate()`` after ``train()``) go to that run (transformers' callback would
  start a new, unnamed run for them); a second ``train()`` starts a new run.
* a full disk or an I/O error inside MLflow is one warning; training goes on.
"""
from __future__ import annotations

import logging
import os
import re
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from transformers.integrations.integration_utils import MLflowCallback as HFMLflowCallback

from ..checkpoint.safe_fs import disk_errors_degrade
from ..errors import ConfigError

if TYPE_CHECKING:
    from types import ModuleType

    import torch

    from ..args import TrainingArguments
    from ..callbacks import TrainerControl
    from ..state import TrainerState

logger = logging.getLogger(__name__)
_WHAT = "the MLflow run"
_set_by_us: str | None = None  # the default URI trainwright last set (a later run replaces it with its own)


def default_tracking_uri(output_dir: str | os.PathLike[str]) -> str:
    return "sqlite:///" + os.path.abspath(os.path.join(os.fspath(output_dir), "mlflow.db"))


def _configured_uri(mlflow) -> str | None:
    """The tracking URI the user set (environment or ``mlflow.set_tracking_uri``), None when unset or when it
    is the default trainwright itself set for an earlier run."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or (mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None)
    return None if not uri or uri == _set_by_us else uri


def check_tracking_uri(mlflow: ModuleType) -> None:
    """ConfigError for a file-store URI that this MLflow refuses (MLflow 3 without MLFLOW_ALLOW_FILE_STORE)."""
    uri = _configured_uri(mlflow)
    if uri is None:
        return
    scheme = urlparse(uri).scheme
    if scheme not in ("", "file") and not (os.name == "nt" and len(scheme) == 1):
        return
    allow = getattr(getattr(mlflow, "environment_variables", None), "MLFLOW_ALLOW_FILE_STORE", None)
    if allow is None or allow.get():
        return  # an MLflow that still takes the file store, or the user opted in
    raise ConfigError(
        f"report_to='mlflow': the tracking URI {uri!r} (MLFLOW_TRACKING_URI) is MLflow's file store, which "
        f"mlflow {mlflow.__version__} refuses (\"in maintenance mode\"). Unset MLFLOW_TRACKING_URI to log to "
        "sqlite:///<output_dir>/mlflow.db (trainwright's default), set it to a database such as "
        "sqlite:///mlflow.db or a tracking server, or set MLFLOW_ALLOW_FILE_STORE=true to keep the file store."
    )


class MLflowCallback(HFMLflowCallback):
    """transformers' ``MLflowCallback`` with trainwright's local default URI (see the module docstring)."""

    def __init__(self):
        super().__init__()
        check_tracking_uri(self._ml_flow)
        self._ended_run_id: str | None = None

    def setup(self, args: TrainingArguments, state: TrainerState, model: torch.nn.Module | None) -> None:
        global _set_by_us
        if state.is_world_process_zero:
            check_tracking_uri(self._ml_flow)
            if _configured_uri(self._ml_flow) is None:
                uri = default_tracking_uri(args.output_dir)
                os.makedirs(os.path.dirname(uri[len("sqlite:///"):]), exist_ok=True)
                self._ml_flow.set_tracking_uri(uri)  # also sets MLFLOW_TRACKING_URI, as mlflow does
                _set_by_us = uri
        self._ended_run_id = None
        super().setup(args, state, model)

    @disk_errors_degrade(_WHAT)
    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       model: torch.nn.Module | None = None, **kwargs: Any) -> None:
        if self._ended_run_id is not None:  # a second train(): a new run, as the first
            self._initialized = False
        super().on_train_begin(args, state, control, model=model, **kwargs)

    @disk_errors_degrade(_WHAT)
    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, logs: dict | None,
               model: torch.nn.Module | None = None, **kwargs: Any) -> None:
        if self._ended_run_id is None or self._ml_flow.active_run() is not None or not state.is_world_process_zero:
            return super().on_log(args, state, control, logs, model=model, **kwargs)
        # the run this callback ended at train end: log there instead of starting a new one
        from mlflow import MlflowClient
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = []
        for k, v in (logs or {}).items():
            if hasattr(v, "item") and getattr(v, "numel", lambda: 1)() == 1:
                v = v.item()
            if isinstance(v, (int, float)):
                metrics.append(Metric(re.sub(r"[^0-9A-Za-z_\-\.\ :/]", "_", k), float(v), now, state.global_step))
        if metrics:
            MlflowClient().log_batch(self._ended_run_id, metrics=metrics)

    @disk_errors_degrade(_WHAT)
    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     **kwargs: Any) -> None:
        active = self._ml_flow.active_run() if self._initialized and state.is_world_process_zero else None
        ended = active.info.run_id if active is not None and self._auto_end_run else None
        super().on_train_end(args, state, control, **kwargs)
        if ended is not None and self._ml_flow.active_run() is None:
            self._ended_run_id = ended

    @disk_errors_degrade(_WHAT)
    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        super().on_save(args, state, control, **kwargs)
