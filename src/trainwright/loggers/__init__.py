"""Experiment trackers (``report_to``) and the always-on ``metrics.jsonl`` log.

``get_reporting_callbacks(args.report_to)`` turns transformers' ``report_to`` value into callbacks. They are
transformers' own integration callbacks (``transformers.integrations.INTEGRATION_TO_CALLBACK``: TensorBoard,
MLflow, W&B, Comet, ClearML, trackio, Neptune, DVCLive, SwanLab, CodeCarbon, ...), which run unchanged here
since trainwright's callback events, ``TrainerState`` and ``TrainingArguments`` carry what they read. Each
is built as a thin subclass (``integrations.tracker_class``) that turns a full disk inside the tracker into
one warning; TensorBoard, MLflow and W&B get a few more things of trainwright's, listed in their modules.

* ``None``, ``"none"``, ``[]``          -> no tracker
* ``"all"``                             -> transformers' ``get_available_reporting_integrations()``
* a name or a list of names (a comma separated string works too)
* ``"jsonl"``                           -> accepted and ignored: ``MetricsJsonlCallback`` is always on

An unknown name, or a named tracker whose package is missing, is a ``ConfigError`` when the Trainer is built
(transformers raises a ValueError / RuntimeError there). Nothing here imports a tracker package or
transformers' integrations module at import time.
"""
from __future__ import annotations

import difflib
import importlib.util
import os

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

# transformers' report_to names -> (the packages that must be importable, what to pip install)
TRACKERS: dict[str, tuple[tuple[str, ...], str]] = {
    "azure_ml": (("azureml.core.run",), "azureml-core"),
    "comet_ml": (("comet_ml",), "comet_ml"),
    "mlflow": (("mlflow",), '"trainwright[mlflow]"'),
    "neptune": (("neptune",), "neptune"),
    "tensorboard": (("tensorboard",), '"trainwright[tensorboard]"'),
    "trackio": (("trackio",), "trackio"),
    "wandb": (("wandb",), '"trainwright[wandb]"'),
    "codecarbon": (("codecarbon",), "codecarbon"),
    "clearml": (("clearml",), "clearml"),
    "dagshub": (("dagshub", "mlflow"), "dagshub mlflow"),
    "flyte": (("flytekit",), "flytekit flytekitplugins-deck-standard"),
    "dvclive": (("dvclive",), "dvclive"),
    "swanlab": (("swanlab",), "swanlab"),
    "kubeflow": ((), ""),  # no package: transformers' callback talks to the Kubeflow trainer server
}
_NO_OP = ("jsonl",)
_VALID = ("none", "all", *TRACKERS, *_NO_OP)


def rewrite_logs(logs: dict) -> dict:
    """transformers' key layout for trackers: ``eval_loss`` -> ``eval/loss``, ``test_x`` -> ``test/x``,
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


def _has_packages(name: str) -> bool:
    if name == "tensorboard":  # torch's SummaryWriter needs tensorboard; transformers also takes tensorboardX
        return _is_installed("tensorboard") or _is_installed("tensorboardX")
    return all(_is_installed(p) for p in TRACKERS[name][0])


def available_trackers() -> list[str]:
    """What ``report_to="all"`` means: transformers' ``get_available_reporting_integrations()`` (the trackers
    whose package is installed and usable, in transformers' order)."""
    from transformers.integrations.integration_utils import get_available_reporting_integrations

    return [name for name in get_available_reporting_integrations() if name in TRACKERS]


def _installed_line() -> str:
    installed = [name for name in TRACKERS if name != "kubeflow" and _has_packages(name)]
    return f"Installed here: {', '.join(installed) if installed else 'none of them'}."


def _unknown(value, original) -> ConfigError:
    names = ", ".join(_VALID)
    close = difflib.get_close_matches(str(value).lower(), _VALID, n=1, cutoff=0.5)
    hint = f' Did you mean report_to="{close[0]}"?' if close else ""
    return ConfigError(
        f"report_to={original!r}: unknown tracker {value!r}.{hint} {_installed_line()} "
        f"Valid names (transformers' integrations): {names} (or a list of them)."
    )


def _check_usable(key: str, original) -> None:
    if key == "mlflow" and os.getenv("DISABLE_MLFLOW_INTEGRATION", "FALSE").upper() == "TRUE":
        raise ConfigError(f"report_to={original!r} names 'mlflow' but DISABLE_MLFLOW_INTEGRATION=TRUE is set: "
                          "unset that environment variable or remove 'mlflow' from report_to.")
    if not _has_packages(key):
        raise ConfigError(
            f'report_to="{key}" needs the {" and ".join(TRACKERS[key][0])} package: pip install '
            f"{TRACKERS[key][1]} (or remove {key!r} from report_to). {_installed_line()}"
        )


def resolve_report_to(report_to: str | list[str] | tuple[str, ...] | set[str] | frozenset[str] | None) -> list[str]:
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
            resolved += [t for t in available_trackers() if t not in resolved]
            continue
        if key not in TRACKERS:
            raise _unknown(name, original)
        _check_usable(key, original)
        if key not in resolved:
            resolved.append(key)
    return resolved


def get_reporting_callbacks(report_to: str | list[str] | tuple[str, ...] | set[str] | frozenset[str] | None) -> list:
    """One callback instance per tracker named by ``report_to`` (see the module docstring).

    Does not include ``MetricsJsonlCallback``: the Trainer adds that one unconditionally.
    """
    names = resolve_report_to(report_to)
    if not names:
        return []
    from .integrations import tracker_class

    return [tracker_class(name)() for name in names]
