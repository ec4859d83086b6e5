"""transformers' integration callbacks as trainwright builds them for ``report_to``.

``tracker_class(name)`` is the class for one ``report_to`` name: trainwright's subclass for
``tensorboard`` / ``mlflow`` / ``wandb`` (see those modules), and for every other name transformers' own class
(``INTEGRATION_TO_CALLBACK[name]``) subclassed only to make a full disk inside the tracker one warning
(``safe_fs.disk_errors_degrade``). A subclass keeps transformers' class name, its attributes and its
behaviour, and ``trainer.pop_callback(transformers.integrations.CometCallback)`` still finds it.
"""
from __future__ import annotations

import functools

from ..checkpoint.safe_fs import disk_errors_degrade

# the events a tracker implements (transformers' TrainerCallback)
EVENTS = ("on_init_end", "on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end", "on_step_begin",
          "on_pre_optimizer_step", "on_optimizer_step", "on_substep_end", "on_step_end", "on_evaluate",
          "on_predict", "on_save", "on_log", "on_prediction_step", "on_push_begin")
_OWN = {"tensorboard": ("tensorboard", "TensorBoardCallback"), "mlflow": ("mlflow", "MLflowCallback"),
        "wandb": ("wandb", "WandbCallback")}
_DISPLAY = {"azure_ml": "the AzureML run", "comet_ml": "the Comet experiment", "neptune": "the Neptune run",
            "trackio": "the trackio run", "codecarbon": "the CodeCarbon emissions file",
            "clearml": "the ClearML task", "dagshub": "the DagsHub (MLflow) run", "flyte": "the Flyte deck",
            "dvclive": "the DVCLive files", "swanlab": "the SwanLab run", "kubeflow": "the Kubeflow status"}


def degrading(cls: type, what: str) -> type:
    """A subclass of ``cls`` whose event methods turn a disk error into one warning naming ``what``."""
    from transformers import TrainerCallback as HFCallback

    namespace = {"__module__": __name__, "__qualname__": cls.__qualname__, "__doc__": cls.__doc__}
    for event in EVENTS:
        fn = getattr(cls, event, None)
        if fn is not None and fn is not getattr(HFCallback, event, None):
            namespace[event] = disk_errors_degrade(what)(fn)
    return type(cls.__name__, (cls,), namespace)


@functools.cache
def tracker_class(name: str) -> type:
    """The callback class for the ``report_to`` name ``name`` (one class per name per process)."""
    if name in _OWN:
        import importlib

        module, cls = _OWN[name]
        return getattr(importlib.import_module(f"{__package__}.{module}"), cls)
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    return degrading(INTEGRATION_TO_CALLBACK[name], _DISPLAY.get(name, f"the {name} run"))
