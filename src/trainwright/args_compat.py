"""transformers compatibility of TrainingArguments: the field types HfArgumentParser reads, dict fields given
as JSON strings, and the conversion of a ``transformers.TrainingArguments`` object into trainwright's.

The fields that transformers' TrainingArguments also has are annotated with transformers' own types
(``SchedulerType | str``, ``list[DebugOption]``, ...), so ``HfArgumentParser`` builds the same command-line
options from both classes. Those types live in transformers (which imports torch), so the annotations
name them through :data:`hf_types`, which imports them the first time an annotation is resolved (by
``typing.get_type_hints``, as ``HfArgumentParser`` does): ``import trainwright.args`` stays light.
"""
from __future__ import annotations

import dataclasses
import enum
import importlib
import json
import logging
import sys
from typing import Any

from .errors import ConfigError

logger = logging.getLogger("trainwright")

# name -> (module, attribute): transformers' own classes used in its TrainingArguments annotations
_TYPES = {
    "SchedulerType": ("transformers.trainer_utils", "SchedulerType"),
    "IntervalStrategy": ("transformers.trainer_utils", "IntervalStrategy"),
    "SaveStrategy": ("transformers.trainer_utils", "SaveStrategy"),
    "HubStrategy": ("transformers.trainer_utils", "HubStrategy"),
    "OptimizerNames": ("transformers.training_args", "OptimizerNames"),
    "DebugOption": ("transformers.debug_utils", "DebugOption"),
    # transformers' own choice: accelerate's ParallelismConfig when accelerate is recent enough, else Any
    "ParallelismConfig": ("transformers.training_args", "ParallelismConfig"),
    "GenerationConfig": ("transformers", "GenerationConfig"),
}


class _TransformersTypes:
    """``hf_types.SchedulerType`` etc.: transformers' classes, imported on first attribute access."""

    def __getattr__(self, name: str):
        if name not in _TYPES:
            raise AttributeError(name)
        module, attr = _TYPES[name]
        value = getattr(importlib.import_module(module), attr)
        setattr(self, name, value)
        return value


hf_types = _TransformersTypes()


# ---------------------------------------------------------------------------------------------- dict fields
def parse_dict_field(name: str, value: Any) -> Any:
    """A dict field given as a JSON string ('{"num_cycles": 0.5}') becomes a dict, with string values that
    spell a bool or a number converted, as transformers does. Other strings are left alone (paths)."""
    if not isinstance(value, str) or not value.lstrip().startswith("{"):
        return value
    try:
        loaded = json.loads(value)
    except ValueError as e:
        raise ConfigError(f"{name}={value!r} is not valid JSON ({e}). Give a JSON object, e.g. "
                          f"--{name} '{{\"key\": 1}}' (double quotes inside, single quotes around it).") from e
    if not isinstance(loaded, dict):
        raise ConfigError(f"{name}={value!r} must be a JSON object (a dict).")
    return _typed_strings(loaded)


def _typed_strings(d: dict) -> dict:
    for key, value in d.items():
        if isinstance(value, dict):
            d[key] = _typed_strings(value)
        elif isinstance(value, str):
            low = value.lower()
            if low in ("true", "false"):
                d[key] = low == "true"
            elif value.isdigit():
                d[key] = int(value)
            elif value.replace(".", "", 1).isdigit():
                d[key] = float(value)
    return d


# ---------------------------------------------------------------------------------------------- conversion
def is_transformers_args(obj: Any) -> bool:
    """True for a ``transformers.TrainingArguments`` (or a subclass, e.g. ``Seq2SeqTrainingArguments``)."""
    module = sys.modules.get("transformers.training_args")  # loaded whenever such an object exists
    return module is not None and isinstance(obj, module.TrainingArguments)


def as_trainwright_args(args: Any) -> Any:
    """The ``args=`` of ``Trainer(...)`` as trainwright's TrainingArguments: None gives the defaults (output_dir
    "trainer_output"), a transformers one is converted field by field (an unsupported value raises), anything
    else raises."""
    from .args import TrainingArguments
    if args is None:
        return TrainingArguments(output_dir="trainer_output")
    if not isinstance(args, TrainingArguments) and is_transformers_args(args):
        return TrainingArguments.from_transformers(args)
    if not isinstance(args, TrainingArguments):
        from .errors import ConfigError
        raise ConfigError(f"args must be a trainwright.TrainingArguments, got {type(args).__name__}. "
                          "Build it with `from trainwright import TrainingArguments`.")
    return args


def _plain(value):
    """Enums as their values (lists of enums too), for comparing and carrying values over."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, enum.Enum) for v in value):
        return [v.value for v in value]
    return value


def _same(a, b) -> bool:
    try:
        return bool(_plain(a) == _plain(b))
    except Exception:  # values whose == does not return a bool (arrays, ...)
        return a is b


def _transformers_defaults(hf_args):
    """A default-built instance of the same transformers class: its values after transformers' own
    post-processing (report_to [], debug [], an AcceleratorConfig, ...) are what "not set" looks like."""
    cls = type(hf_args)
    try:
        return cls(output_dir=hf_args.output_dir)
    except Exception:  # a subclass with required fields: fall back to the declared defaults
        return None


def convert_transformers_args(cls: type, hf_args: Any) -> Any:
    """A trainwright ``cls`` built from a ``transformers.TrainingArguments`` object.

    Fields the user set (values that differ from transformers' defaults) are carried over and validated
    as if given to ``cls(...)``, so an unsupported value raises naming the field. Fields left at
    transformers' defaults keep trainwright's defaults. Fields of a transformers subclass that trainwright
    does not know are copied onto the new object as plain attributes (code reading ``args.<name>`` keeps
    working); they have no effect on training.
    """
    from .args import TrainingArguments
    if cls is TrainingArguments and hasattr(hf_args, "predict_with_generate"):
        from .seq2seq import Seq2SeqTrainingArguments  # from a transformers Seq2SeqTrainingArguments
        cls = Seq2SeqTrainingArguments
    ours = {f.name for f in dataclasses.fields(cls) if f.init}
    reference = _transformers_defaults(hf_args)
    given, extra = {}, {}
    for f in dataclasses.fields(hf_args):
        if not f.init:
            continue
        value = getattr(hf_args, f.name)
        if reference is not None:
            default = getattr(reference, f.name)
        elif f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        if default is not dataclasses.MISSING and _same(value, default) and f.name != "output_dir":
            continue
        (given if f.name in ours else extra)[f.name] = _plain(value)
    # transformers turns fsdp="full_shard ..." into fsdp=True plus fsdp_config entries, and fills
    # fsdp_config with its own defaults even then: carry the two together.
    if "fsdp" in given and "fsdp_config" not in given and isinstance(getattr(hf_args, "fsdp_config", None), dict):
        given["fsdp_config"] = dict(hf_args.fsdp_config)
    logger.info("Converted the transformers %s given to the Trainer into trainwright's %s (carried over: %s).",
                type(hf_args).__name__, cls.__name__, ", ".join(sorted(given)) or "nothing")
    converted = cls(**given)
    for name, value in extra.items():
        setattr(converted, name, value)
    return converted
