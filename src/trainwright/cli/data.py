"""Loading the data of a config: the splits named in ``data:`` (CSV / TSV / JSON(L) / Parquet files,
``save_to_disk`` directories, a Hub dataset, or a task's own format through ``Task.read_split``), the
validation rows (``validation_split`` / ``validation_column``), the limits, the column checks, and
tokenization with ``Dataset.map`` into a cache file keyed by everything that changes the tokenized rows."""
from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, DataError, did_you_mean
from .config import QUOTING
from .models import offline

ID_COLUMNS = ("idx", "id", "index")
FILE_BUILDERS = {".csv": "csv", ".tsv": "csv", ".tab": "csv", ".json": "json", ".jsonl": "json",
                 ".ndjson": "json", ".parquet": "parquet", ".pq": "parquet"}
CACHE_VERSION = 1

if TYPE_CHECKING:
    from .config import RunConfig
    from .tasks.base import LabelInfo


def _is_true(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "y", "valid", "validation", "t")
    return bool(value)


def main_process() -> bool:
    """False on the other ranks of a torchrun launch: they train but do not print or write files."""
    return int(os.environ.get("RANK", "0")) == 0


def _hash(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


class DataLoader:
    """Loads the splits named in ``data:`` (files, save_to_disk directories or a Hub dataset) as
    ``datasets.Dataset`` objects, applies validation_split / validation_column and the limits."""

    def __init__(self, cfg: RunConfig) -> None:
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
                             "online, or point data.train/validation/test at files.") if offline() else ""
                    raise DataError(f"data.dataset ({name}): could not load it: {e}.{extra}") from e
            if isinstance(ds, datasets.Dataset):
                ds = datasets.DatasetDict({"train": ds})
            self._dataset_dict = ds
        return self._dataset_dict

    def raw_split(self, split: str) -> tuple[Any, str | None]:
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
    def load(self, splits: Sequence[str] = ("train", "validation")) -> dict[str, Any]:
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
    def check_columns(ds: Any, where: str, columns: Iterable[str], key_hint: str = "") -> None:
        present = list(ds.column_names)
        for col in columns:
            if col not in present:
                hint = did_you_mean(col, present, cutoff=0.5)
                setting = f" Fix {key_hint} in the config." if key_hint else ""
                raise DataError(f"{where}: column {col!r} not found.{hint} Columns present: "
                                f"{', '.join(map(repr, present))}.{setting}")


def check_split_columns(cfg: RunConfig, ds: Any, where: str, with_labels: bool) -> None:
    for col, key in cfg.task.required_columns(cfg.data, with_labels):
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


def tokenize_split(cfg: RunConfig, ds: Any, split: str, tokenizer: Any, info: LabelInfo, with_labels: bool,
                   quiet: bool = False) -> Any:
    """``Dataset.map(batched=True)`` into ``<cache_dir>/tokenized/<split>-<fingerprint>.arrow``: the
    fingerprint covers the data, the tokenizer, the task, the columns, max_length and the labels, so
    an unchanged rerun loads the file instead of tokenizing again."""
    quiet = quiet or not main_process()
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


def row_ids(cfg: RunConfig, ds: Any, source_rows: Iterable[int] | None = None) -> list:
    """The id column (data.id_column, else idx / id / index when present), else the row number in the file."""
    col = cfg.data.get("id_column") or next((c for c in ID_COLUMNS if c in ds.column_names), None)
    if col:
        return list(ds[col])
    return list(source_rows) if source_rows is not None else list(range(len(ds)))


def check_has_labels(cfg: RunConfig, ds: Any, where: str, split: str) -> None:
    """``evaluate`` needs the gold answers: a split that has the input columns but not the label column (an
    unlabelled test file) is reported as such, with ``predict`` as the way to use it, instead of blaming
    ``data.label_column``."""
    inputs = cfg.task.required_columns(cfg.data, with_labels=False)
    labelled = cfg.task.required_columns(cfg.data, with_labels=True)
    present = list(ds.column_names)
    missing = [(col, key) for col, key in labelled if (col, key) not in inputs and col not in present]
    if missing and all(col in present for col, _ in inputs):
        col, key = missing[0]
        raise DataError(f"{where} has no labels (no {col!r} column; columns present: "
                        f"{', '.join(map(repr, present))}), so evaluate cannot score it. To get its predictions "
                        f"run `trainwright predict {cfg.path} --split {split}`; if the labels are in another "
                        f"column, set {key}.")
