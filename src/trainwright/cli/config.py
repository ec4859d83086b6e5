"""Reading and checking CONFIG.yaml: YAML 1.2 scalars, ``--set`` overrides, and :class:`RunConfig`, which
checks every key (against the tables of :mod:`trainwright.cli.keys`), the task, the ``data:`` values, the
``training:`` section (through ``TrainingArguments`` itself) and the metrics before anything is loaded."""
from __future__ import annotations

import csv
import functools
import os
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from .keys import COMMON_DATA_KEYS, TOP_KEYS, check_keys, names
from .models import MINILM_ALIASES, check_model_config

if TYPE_CHECKING:
    from ..args import TrainingArguments

QUOTING = {"minimal": csv.QUOTE_MINIMAL, "all": csv.QUOTE_ALL, "nonnumeric": csv.QUOTE_NONNUMERIC,
           "none": csv.QUOTE_NONE}


# ====================================================================== YAML
@functools.cache
def _yaml_loader():
    """yaml.SafeLoader with YAML 1.2 scalars: ``5e-5`` is a float (YAML 1.1 wants ``5.0e-5``) and only
    true/false are booleans, so ``save_strategy: no`` stays the string "no"."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                 list("tTfF"))
    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X),
        list("-+0123456789."))
    return Loader


def parse_scalar(text: str) -> Any:
    """A ``--set`` value, read as YAML: ``1e-4`` → float, ``true`` → bool, ``[a, b]`` → list, else the string."""
    import yaml
    try:
        return yaml.load(text, Loader=_yaml_loader()) if text.strip() else ""
    except yaml.YAMLError:
        return text


def read_yaml(path: str) -> Any:
    """The YAML document in ``path`` (YAML 1.2 scalars); ConfigError when it is not valid YAML."""
    import yaml
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.load(f, Loader=_yaml_loader())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from e


# ====================================================================== config
class RunConfig:
    """A loaded, checked config. ``raw`` is the YAML mapping after ``--set`` overrides."""

    def __init__(self, raw: dict, path: str):
        self.raw = raw
        self.path = path
        self.config_dir = os.path.dirname(os.path.abspath(path)) if path else os.getcwd()
        check_keys(raw, names(TOP_KEYS), "", path)
        self._check_model(raw)
        self._check_task(raw)
        self._check_data_section(raw.get("data"))
        training = raw.get("training") or {}
        if not isinstance(training, dict):
            raise ConfigError(f"{path}: training: must be a mapping of TrainingArguments fields; got {training!r}.")
        if "output_dir" in training:
            raise ConfigError(f"{path}: set output_dir at the top level of the config, not under training:.")
        self.training = dict(training)
        out = raw.get("output_dir") or os.path.join("runs", os.path.splitext(os.path.basename(path))[0] or "run")
        if not isinstance(out, str):
            raise ConfigError(f"{path}: output_dir: must be a directory path; got {out!r}.")
        self.output_dir = os.path.abspath(os.path.expanduser(out))
        self.cache_dir = (self.resolve_path(self.data["cache_dir"], must_exist=False) if self.data.get("cache_dir")
                          else os.path.join(self.output_dir, "cache"))
        self.training_args()  # unknown or invalid TrainingArguments fail now, via TrainingArguments itself
        self._check_metrics(raw)
        self._check_peft(raw)

    # ---------------------------------------------------------------- checks
    def _check_model(self, raw: dict) -> None:
        path = self.path
        self.model_config = raw.get("model_config")
        if self.model_config is not None:  # a new model built from a config (tokenizer: names the vocabulary)
            if raw.get("model") not in (None, ""):
                raise ConfigError(f"{path}: set either model: (a pretrained model) or model_config: (a new model "
                                  "built from a config), not both; `--set model_config=null tokenizer=null` drops the "
                                  "latter.")
            if raw.get("tokenizer") in (None, ""):
                raise ConfigError(f"{path}: model_config: needs tokenizer: (a tokenizer directory, a Hub id or "
                                  f"{MINILM_ALIASES[0]}) for the vocabulary.")
        elif "model" not in raw or raw["model"] in (None, ""):
            raise ConfigError(f"{path}: 'model' is missing: set model: to a local model directory, a Hub id, "
                              f"or {MINILM_ALIASES[0]} (the bundled MiniLM).")
        if self.model_config is None and not isinstance(raw["model"], str):
            raise ConfigError(f"{path}: model: must be a directory or a Hub id (a string); got {raw['model']!r}.")
        self.model = raw.get("model")
        self.tokenizer = raw.get("tokenizer")

    def _check_task(self, raw: dict) -> None:
        from .tasks import get_task
        try:
            self.task = get_task(raw.get("task"))
            if self.model_config is not None:
                check_model_config(self.model_config, self.task)
        except ConfigError as e:
            raise ConfigError(f"{self.path}: {e}") from e

    def _check_data_section(self, data) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"{self.path}: the data: section is missing or not a mapping; it needs at least "
                              "train: <file> (and text_column / label_column).")
        check_keys(data, names(COMMON_DATA_KEYS + tuple(self.task.data_keys)), "data.", self.path)
        self.data = dict(data)
        self._check_data()
        self.task.check_data_config(self.data)

    def _check_data(self):
        d, path = self.data, self.path
        if not d.get("train") and not d.get("dataset"):
            raise ConfigError(f"{path}: data.train is missing: set it to a CSV, TSV, JSON(L) or Parquet file, a "
                              "save_to_disk directory, or set data.dataset to a Hub dataset name.")
        for key in ("max_length", "train_limit", "eval_limit"):
            v = d.get(key)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise ConfigError(f"{path}: data.{key} must be a positive integer; got {v!r}.")
        vs = d.get("validation_split")
        if vs is not None and (isinstance(vs, bool) or not isinstance(vs, (int, float)) or not 0 < vs < 1
                               and not (isinstance(vs, int) and vs >= 1)):
            raise ConfigError(f"{path}: data.validation_split must be a fraction in (0, 1) such as 0.1, or a number "
                              f"of rows; got {vs!r}.")
        given = [k for k in ("validation", "validation_split", "validation_column") if d.get(k) is not None]
        if len(given) > 1:
            raise ConfigError(f"{path}: data.{given[0]} and data.{given[1]} both choose the validation rows: keep one.")
        q = d.get("quoting")
        if q is not None and not (isinstance(q, int) and q in QUOTING.values()) and str(q).lower() not in QUOTING:
            raise ConfigError(f"{path}: data.quoting={q!r} is not valid; use one of {', '.join(QUOTING)} "
                              "(none for GLUE-style TSV files with bare quotes).")
        for key in ("text_column", "label_column", "id_column", "validation_column", "delimiter", "encoding"):
            if d.get(key) is not None and not isinstance(d[key], str):
                raise ConfigError(f"{path}: data.{key} must be a string; got {d[key]!r}.")

    def _check_metrics(self, raw: dict) -> None:
        from .tasks.metrics import load_metrics
        metrics = raw["metrics"] if "metrics" in raw else list(self.task.default_metrics)
        try:
            self.metrics = load_metrics(metrics)
            self.task.check_metrics(self.metrics)
        except (ConfigError, ImportError) as e:
            raise ConfigError(f"{self.path}: metrics: {e}") from e

    def _check_peft(self, raw: dict) -> None:
        """``peft:``: the peft config is built now, so a bad method or key fails before anything is loaded."""
        self.peft = None
        if raw.get("peft") is None:
            return
        if self.model_config is not None:
            raise ConfigError(f"{self.path}: peft: trains an adapter on a pretrained model, but model_config: builds "
                              "a new, untrained one (its weights would not be saved with the adapter). Set model: "
                              "to a pretrained model, or drop the peft: section to train the whole new model.")
        from .peft import peft_config
        self.peft = peft_config(raw["peft"], self.task, self.path)

    # ---------------------------------------------------------------- derived values
    def training_args(self, has_validation: bool | None = None, **overrides: Any) -> TrainingArguments:
        """TrainingArguments from training:, with the CLI's defaults: report_to none, and
        eval_strategy epoch when there is validation data and the config does not choose one."""
        arguments_class = self.task.arguments_class()  # Seq2SeqTrainingArguments for the generating tasks
        if has_validation is None:
            has_validation = self.has_validation()
        kwargs = {**self.task.training_defaults(self.data), **self.training, **overrides}
        kwargs.setdefault("report_to", "none")
        if has_validation and "eval_strategy" not in kwargs and "evaluation_strategy" not in kwargs:
            kwargs["eval_strategy"] = "epoch"
        try:
            return arguments_class(output_dir=self.output_dir, **kwargs)
        except ConfigError as e:
            raise ConfigError(f"{self.path}: training: {e}") from e
        except TypeError as e:
            raise ConfigError(f"{self.path}: training: {e}") from e

    def has_validation(self) -> bool:
        d = self.data
        return any(d.get(k) is not None for k in ("validation", "validation_split", "validation_column", "dataset"))

    def resolve_path(self, p: str, must_exist: bool = True) -> str:
        """A relative path is looked up from the current directory, then from the config file's directory."""
        p = os.path.expanduser(str(p))
        if os.path.isabs(p):
            return p
        here = os.path.abspath(p)
        if os.path.exists(here) or not must_exist:
            return here
        beside = os.path.join(self.config_dir, p)
        return beside if os.path.exists(beside) else here


def apply_overrides(raw: dict, overrides: Iterable[str] | None) -> dict:
    """``--set a.b=value``: dotted keys into the mapping, values parsed as YAML scalars."""
    for item in overrides or ():
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set training.learning_rate=1e-4.")
        key, value = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ConfigError(f"--set {item!r}: the key is empty.")
        node = raw
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {'.'.join(parts[:i + 1])} is {child!r}, not a section.")
            node = child
        node[parts[-1]] = parse_scalar(value)
    return raw


def load_config(path: str, overrides: Iterable[str] | None = ()) -> RunConfig:
    """Read and check CONFIG.yaml (after ``--set`` overrides); raises ConfigError on any mistake."""
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path!r} does not exist.")
    raw = read_yaml(path)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping (model:, task:, data:, training:, ...).")
    return RunConfig(apply_overrides(raw, overrides), path)
