"""MLflow tracker (``report_to="mlflow"``), environment variables as in HF's MLflowCallback.

* ``MLFLOW_TRACKING_URI``   where runs go (mlflow's own default when unset)
* ``MLFLOW_EXPERIMENT_NAME`` experiment, created if missing (mlflow's default experiment when unset)
* ``MLFLOW_RUN_ID``          re-attach to an existing run (e.g. when resuming)
* ``MLFLOW_NESTED_RUN``      start a nested run inside the active one
* ``MLFLOW_TAGS``            JSON dict of tags
* ``MLFLOW_MAX_LOG_PARAMS``  log at most this many params

Params: ``args.to_dict()`` (plus model class / parameter counts) flattened with ``.`` between nested
keys; values longer than mlflow's limit are truncated (ending in ``...``), not dropped. Metrics: every
numeric log value with ``step=state.global_step``; names keep HF's keys (``loss``, ``eval_loss``).
The run is ended at train end if this callback started it; logs that arrive later (``evaluate()``
after ``train()``) still go to the same run.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
import time

from ..callbacks import TrainerCallback
from ..checkpoint.safe_fs import disk_errors_degrade
from .jsonl import _args_dict, _model_info

logger = logging.getLogger(__name__)
_TRUE = {"1", "ON", "YES", "TRUE"}


def flatten_dict(d: dict, parent: str = "", sep: str = ".") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{parent}{sep}{k}" if parent else str(k)
        if isinstance(v, dict) and v:
            out.update(flatten_dict(v, key, sep))
        else:
            out[key] = v
    return out


class MLflowCallback(TrainerCallback):
    def __init__(self):
        import mlflow
        from mlflow.utils import validation

        self._ml_flow = mlflow
        self._MAX_PARAM_VAL_LENGTH = getattr(validation, "MAX_PARAM_VAL_LENGTH", 250)
        self._MAX_PARAMS_TAGS_PER_BATCH = getattr(validation, "MAX_PARAMS_TAGS_PER_BATCH", 100)
        self._MAX_METRICS_PER_BATCH = getattr(validation, "MAX_METRICS_PER_BATCH", 1000)
        self._MAX_KEY_LENGTH = getattr(validation, "MAX_ENTITY_KEY_LENGTH", 250)
        self._initialized = False
        self._auto_end_run = False
        self._run_id = None
        self._client = None

    # -- setup -----------------------------------------------------------------------------------
    def _params(self, args, model) -> dict:
        params = flatten_dict(_args_dict(args))
        info = _model_info(model)
        params.update({f"model.{k}" if k != "model" else "model.class": v for k, v in info.items() if v is not None})
        out = {}
        for k, v in params.items():
            key = re.sub(r"[^0-9A-Za-z_\-\.\ /]", "_", str(k))[: self._MAX_KEY_LENGTH]
            value = json.dumps(v) if isinstance(v, (list, dict)) else str(v)
            if len(value) > self._MAX_PARAM_VAL_LENGTH:
                value = value[: self._MAX_PARAM_VAL_LENGTH - 3] + "..."
            out[key] = value
        return out

    def setup(self, args, state, model):
        mlflow = self._ml_flow
        self._initialized = True
        if not state.is_world_process_zero:
            return
        # MLFLOW_TRACKING_URI is read by mlflow itself on every call (no global set_tracking_uri here,
        # so a later run in the same process with another MLFLOW_TRACKING_URI goes where it says)
        experiment = os.getenv("MLFLOW_EXPERIMENT_NAME")
        nested = os.getenv("MLFLOW_NESTED_RUN", "FALSE").upper() in _TRUE
        run_id = os.getenv("MLFLOW_RUN_ID")
        active = mlflow.active_run()
        if active is None or nested or run_id:
            if experiment:
                mlflow.set_experiment(experiment)
            if run_id:
                run = mlflow.start_run(run_id=run_id)
            else:
                run = mlflow.start_run(run_name=getattr(args, "run_name", None), nested=nested)
            self._auto_end_run = True
        else:
            run = active
        self._run_id = run.info.run_id
        self._client = mlflow.tracking.MlflowClient()  # same tracking URI as the fluent run

        params = self._params(args, model)
        if run_id:  # re-attached run: params are immutable in mlflow, only add new ones
            try:
                existing = self._client.get_run(self._run_id).data.params
                params = {k: v for k, v in params.items() if k not in existing}
            except Exception:
                pass
        items = list(params.items())
        max_params = os.getenv("MLFLOW_MAX_LOG_PARAMS")
        if max_params and max_params.isdigit():
            items = items[: int(max_params)]
        from mlflow.entities import Param, RunTag

        for i in range(0, len(items), self._MAX_PARAMS_TAGS_PER_BATCH):
            batch = items[i : i + self._MAX_PARAMS_TAGS_PER_BATCH]
            self._client.log_batch(self._run_id, params=[Param(k, v) for k, v in batch])
        tags = os.getenv("MLFLOW_TAGS")
        if tags:
            self._client.log_batch(
                self._run_id, tags=[RunTag(str(k), str(v)) for k, v in json.loads(tags).items()]
            )

    # -- events ----------------------------------------------------------------------------------
    @disk_errors_degrade("the MLflow run")
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if not self._initialized:
            self.setup(args, state, model)

    @disk_errors_degrade("the MLflow run")
    def on_log(self, args, state, control, logs=None, model=None, **kwargs):
        if not self._initialized:
            self.setup(args, state, model)
        if not state.is_world_process_zero or not logs or self._run_id is None:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = []
        for k, v in logs.items():
            if hasattr(v, "item") and callable(v.item):
                try:
                    v = v.item()
                except Exception:
                    continue
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            key = re.sub(r"[^0-9A-Za-z_\-\.\ :/]", "_", k)[: self._MAX_KEY_LENGTH]
            metrics.append(Metric(key, float(v), now, int(state.global_step)))
        for i in range(0, len(metrics), self._MAX_METRICS_PER_BATCH):
            try:
                self._client.log_batch(self._run_id, metrics=metrics[i : i + self._MAX_METRICS_PER_BATCH])
            except Exception as e:
                # e.g. a non-finite value some backends refuse: retry with finite values only
                finite = [m for m in metrics[i : i + self._MAX_METRICS_PER_BATCH] if math.isfinite(m.value)]
                logger.warning("MLflow: log_batch failed (%r); retrying with finite values only", e)
                self._client.log_batch(self._run_id, metrics=finite)

    @disk_errors_degrade("the MLflow run")
    def on_train_end(self, args, state, control, **kwargs):
        if self._initialized and state.is_world_process_zero and self._auto_end_run:
            active = self._ml_flow.active_run()
            if active is not None and active.info.run_id == self._run_id:
                self._ml_flow.end_run()
            self._auto_end_run = False

    def __del__(self):
        try:
            if self._auto_end_run and self._ml_flow.active_run() is not None:
                self._ml_flow.end_run()
        except Exception:
            pass

