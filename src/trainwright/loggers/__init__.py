"""Experiment trackers (``report_to``) and the always-on ``metrics.jsonl`` log.

``get_reporting_callbacks(args.report_to)`` turns HF's ``report_to`` value into callbacks:

* ``None``, ``"none"``, ``[]``          -> no tracker
* ``"all"``                             -> every tracker whose package is installed
* ``"tensorboard"``, ``"mlflow"``, ``"wandb"`` or a list of them (a comma separated string works too)
* ``"jsonl"``                           -> accepted and ignored: ``MetricsJsonlCallback`` is always on

Nothing here imports tensorboard, mlflow or wandb at import time: a tracker's package is looked up
with ``importlib.util.find_spec`` when the callbacks are built (so a missing package fails before
training starts) and imported by the callback's ``__init__``.
"""
from __future__ import annotations

import difflib
import importlib
import importlib.util

from ..errors import ConfigError
from .jsonl import MetricsJsonlCallback

__all__ = [
    "MetricsJsonlCallback",
    "TRACKERS",
    "available_trackers",
    "get_reporting_callbacks",
    "resolve_report_to",
    "rewrite_logs",
]

# name -> (package whose presence is checked, module, class, pip extra)
TRACKERS: dict[str, tuple[str, str, str, str]] = {
    "tensorboard": ("tensorboard", "trainwright.loggers.tensorboard", "TensorBoardCallback", "tensorboard"),
    "mlflow": ("mlflow", "trainwright.loggers.mlflow", "MLflowCallback", "mlflow"),
    "wandb": ("wandb", "trainwright.loggers.wandb", "WandbCallback", "wandb"),
}
_NO_OP = ("jsonl",)
# transformers integrations trainwright has no tracker for
_HF_ONLY = ("azure_ml", "comet_ml", "neptune", "trackio", "codecarbon", "clearml", "dagshub", "flyte",
            "dvclive", "swanlab", "kubeflow")
_VALID = ("none", "all", *TRACKERS, *_NO_OP)


def rewrite_logs(logs: dict) -> dict:
    """HF's key layout for trackers: ``eval_loss`` -> ``eval/loss``, ``test_x`` -> ``test/x``,
    anything else ``k`` -> ``train/k``."""
    out = {}
    for k, v in logs.items():
        if k.startswith("eval_"):
            out["eval/" + k[len("eval_"):]] = v
        elif k.startswith("test_"):
            out["test/" + k[len("test_"):]] = v
        else:
            out["train/" + k] = v
    return out


def _is_installed(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def available_trackers() -> list[str]:
    """Names of the trackers whose package is installed."""
    return [name for name, (pkg, *_rest) in TRACKERS.items() if _is_installed(pkg)]


def _unknown(value, original) -> ConfigError:
    valid = ", ".join(repr(v) for v in _VALID)
    close = difflib.get_close_matches(str(value).lower(), _VALID, n=1, cutoff=0.5)
    hint = f' Did you mean report_to="{close[0]}"?' if close else ""
    return ConfigError(
        f"report_to={original!r}: unknown tracker {value!r}. Valid names: {valid} "
        f"(or a list of them).{hint}"
    )


def resolve_report_to(report_to) -> list[str]:
    """Normalise ``report_to`` to a list of tracker names (no duplicates, no 'jsonl'/'none').

    Raises ConfigError for an unknown name or for a named tracker whose package is missing.
    """
    original = report_to
    if report_to is None:
        return []
    if isinstance(report_to, str):
        names = [p.strip() for p in report_to.split(",") if p.strip()]
    elif isinstance(report_to, (list, tuple, set, frozenset)):
        names = list(report_to)
    else:
        raise ConfigError(
            f"report_to={original!r}: expected None, a tracker name or a list of names "
            f"({', '.join(repr(v) for v in _VALID)}), got {type(report_to).__name__}."
        )
    resolved: list[str] = []
    for name in names:
        if not isinstance(name, str):
            raise _unknown(name, original)
        key = name.strip().lower()
        if key == "none" or key in _NO_OP or key == "":
            continue
        if key == "all":
            for tracker in available_trackers():
                if tracker not in resolved:
                    resolved.append(tracker)
            continue
        if key in _HF_ONLY:
            raise ConfigError(
                f"report_to={original!r}: {key!r} is a transformers integration that trainwright does not "
                f"provide; supported trackers: {', '.join(repr(t) for t in TRACKERS)}. Its transformers "
                f"callback class can be passed in callbacks=[...] instead."
            )
        if key not in TRACKERS:
            raise _unknown(name, original)
        package, _module, _cls, extra = TRACKERS[key]
        if not _is_installed(package):
            raise ConfigError(
                f'report_to="{key}" needs the {package} package: pip install "trainwright[{extra}]" '
                f"(or remove {key!r} from report_to)."
            )
        if key not in resolved:
            resolved.append(key)
    return resolved


def get_reporting_callbacks(report_to) -> list:
    """Build one callback per tracker named by ``report_to`` (see the module docstring).

    Does not include ``MetricsJsonlCallback``: the Trainer adds that one unconditionally.
    """
    callbacks = []
    for name in resolve_report_to(report_to):
        _package, module, cls, _extra = TRACKERS[name]
        callbacks.append(getattr(importlib.import_module(module), cls)())
    return callbacks
