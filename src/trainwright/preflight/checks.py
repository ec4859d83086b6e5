"""The pre-flight checks of the data: the collator (a pad token behind a padding collator), the first batch of every
dataset collated as the loop will collate it (labels, token ids, sequence lengths), and vectorised scans of an Arrow
dataset's label column, row lengths and token ids. What each check costs is in the package docstring. Nothing here
changes the model, the optimizer, the RNG states or the data order: the RNGs are saved and restored around every
collation and forward pass.
"""
from __future__ import annotations

import contextlib
import itertools
import logging
import random
import types
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch

from ..data import input_checks
from ..data.batch_seeds import unwrap_dataset
from ..data.columns import LABEL_ALIASES, dataset_columns, is_iterable_dataset
from ..errors import ConfigError, DataError, ModelError, TrainwrightError

logger = logging.getLogger("trainwright")

SKIP_ENV = "TRAINWRIGHT_SKIP_PREFLIGHT"
TOKEN_SCAN_ROWS = 200_000   # Arrow rows whose token ids are scanned (the first batch is always checked)
IGNORE_INDEX = -100
_PADDING_COLLATORS = ("DataCollatorWithPadding", "DataCollatorForTokenClassification", "DataCollatorForSeq2Seq")
_POSITION_MODULES = ("position_embeddings", "wpe", "embed_positions")


# ================================================================================================ collator
def check_collator(collator: Any, processing_class: Any, where: str) -> None:
    inner = collator
    while hasattr(inner, "data_collator"):  # RemoveColumnsCollator and similar wrappers
        inner = inner.data_collator
    name = type(inner).__name__
    tokenizer = getattr(inner, "tokenizer", None)
    if name not in _PADDING_COLLATORS or tokenizer is None:
        return
    if getattr(inner, "padding", True) in (False, "do_not_pad"):
        return
    if getattr(tokenizer, "pad_token", "") is None:
        owner = "processing_class" if tokenizer is processing_class else f"{name}.tokenizer"
        raise ConfigError(
            f"{owner} ({type(tokenizer).__name__}) has no pad token, and {name} needs one to pad the {where} "
            f"batches. Set it before building the Trainer: tokenizer.pad_token = tokenizer.eos_token "
            f"(and, for a sequence-classification model, model.config.pad_token_id = tokenizer.pad_token_id).")


# ================================================================================================ first batch
def first_batch(dataloader: Any, where: str, label_names: Any, model: Any = None,
                takes_mapping: bool | None = None) -> dict:
    """The first ``batch_size`` rows in dataset order, collated by the dataloader's collate_fn, without touching
    the sampler, the workers or any RNG. ``takes_mapping``: the loop calls ``model(**batch)``, so the batch must be
    a dict of tensors (None: not checked)."""
    dataset = unwrap_dataset(dataloader.dataset)
    batch_size = dataloader.batch_size or getattr(dataloader.batch_sampler, "batch_size", None) or 1
    with preserved_rng(), _preserved_collator(dataloader.collate_fn):
        if is_iterable_dataset(dataset):
            rows = list(itertools.islice(iter(dataset), batch_size))
            if not rows:
                raise DataError(f"{where} yielded no rows: it is an empty iterable dataset. Check the data "
                                f"source and any .filter() applied to it.")
        else:
            n = len(dataset)
            if n == 0:
                raise DataError(f"{where} is empty (0 rows). Check the split and any .filter()/.select() applied "
                                "to it.")
            rows = [dataset[i] for i in range(min(batch_size, n))]
        _check_row_labels(rows, where, label_names, model)
        input_checks.check_rows(rows, where, label_names, require_labels=where == "train_dataset")
        try:
            batch = dataloader.collate_fn(rows)
        except TrainwrightError:
            raise
        except Exception as e:
            raise input_checks.collate_failure(e, rows, range(len(rows)), where, dataloader.collate_fn,
                                               label_names) from e
    if takes_mapping is not None:
        input_checks.check_batch_structure(batch, where, dataloader.collate_fn, takes_mapping)
    if not isinstance(batch, Mapping):
        return {}
    return dict(batch)


def own_loop(trainer: Any) -> bool:
    """Whether the Trainer's own training_step and compute_loss run (they call model(**batch))."""
    return not overridden(trainer, "compute_loss", "training_step")


def overridden(trainer: Any, *names: str) -> list[str]:
    """The methods among ``names`` that the trainer's class takes from user code (a subclass outside trainwright),
    not from trainwright's own classes."""
    found = []
    for name in names:
        for cls in type(trainer).__mro__:
            if name in vars(cls):
                if not cls.__module__.startswith("trainwright."):
                    found.append(name)
                break
    return found


def _check_row_labels(rows, where, label_names, model=None) -> None:
    if not rows or not isinstance(rows[0], Mapping):
        return
    for key in list(label_names) + list(LABEL_ALIASES):
        values = [r.get(key) for r in rows if isinstance(r, Mapping)]
        bad = next((v for v in values if isinstance(v, str)), None)
        if bad is not None:
            examples = list(dict.fromkeys(v for v in values if isinstance(v, str)))[:3]
            raise DataError(_string_label_message(where, key, examples, model))


# ================================================================================================ model facts
def _task(model) -> str:
    name = type(model).__name__
    if name.endswith("ForSequenceClassification"):
        return "sequence"
    if name.endswith("ForTokenClassification"):
        return "token"
    if name.endswith("ForMultipleChoice"):
        return "choice"
    if name.endswith(("ForCausalLM", "LMHeadModel", "ForMaskedLM", "ForConditionalGeneration", "ForPreTraining")):
        return "lm"
    return "other"


def _num_labels(model):
    config = getattr(model, "config", None)
    return getattr(config, "num_labels", None) if config is not None else None


def vocab_size(model: Any) -> int | None:
    get = getattr(model, "get_input_embeddings", None)
    if callable(get):
        try:
            emb = get()
        except Exception:
            emb = None
        if isinstance(emb, torch.nn.Embedding):
            return emb.num_embeddings
    config = getattr(model, "config", None)
    value = getattr(config, "vocab_size", None)
    return value if isinstance(value, int) and value > 0 else None


def position_limit(model: Any) -> tuple[int, str] | None:
    """(number of positions, module name) for models with learned absolute position embeddings; None for models
    with relative or rotary positions, which have no hard limit."""
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Embedding) and name.rsplit(".", 1)[-1] in _POSITION_MODULES:
            offset = getattr(module, "offset", 0) or 0
            limit = module.num_embeddings - offset
            if module.padding_idx and not offset:  # RoBERTa-style: positions start after padding_idx (1)
                limit = module.num_embeddings - (module.padding_idx + 1)
            return limit, name
    return None


def _max_positions_name(model) -> str:
    config = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions", "max_length"):
        if isinstance(getattr(config, key, None), int):
            return f"{key}={getattr(config, key)}"
    return "its position embeddings"


# ================================================================================================ messages
def _string_label_message(where, column, examples, model=None) -> str:
    shown = f" ({', '.join(repr(e) for e in examples)}, ...)" if examples else ""
    config = getattr(model, "config", None)
    mapping = dict(getattr(config, "label2id", None) or {})
    if mapping and not all(str(k).startswith("LABEL_") for k in mapping):
        source = f"the model's own mapping, label2id = model.config.label2id ({mapping})"
    else:
        source = f"label2id = {{name: i for i, name in enumerate(sorted(set(ds[{column!r}])))}}"
    return (f"{where} column {column!r} holds strings{shown}, but the loss needs integer class ids and there is "
            f"no label mapping. Map them to ids first with {source}: "
            f"ds = ds.map(lambda r: {{{column!r}: label2id[r[{column!r}]]}}) "
            f"(or ds = ds.class_encode_column({column!r})), "
            f"and load the model with num_labels=len(label2id), label2id=label2id, "
            f"id2label={{i: n for n, i in label2id.items()}}.")


def _model_name(model) -> str:
    return type(model).__name__


# ================================================================================================ label checks
class _Labels:
    """What the checks need to know about a label column or tensor."""

    def __init__(self, dtype: str, per_row: str, lo=None, hi=None, widths=None, nulls=0, locate=None,
                 examples=()):
        self.dtype = dtype          # "int" | "float" | "bool" | "str" | "other"
        self.per_row = per_row      # "scalar" | "list"
        self.lo, self.hi = lo, hi   # min / max, IGNORE_INDEX (-100) excluded, ints only
        self.widths = widths        # (min, max) list length per row, for "list"
        self.nulls = nulls
        self.locate = locate or (lambda value: None)   # value -> row index (or None)
        self.examples = list(examples)  # a few values, for string labels


def _row(labels: _Labels, value) -> str:
    i = labels.locate(value)
    return f" (row {i})" if i is not None else ""


def check_labels(model: Any, labels: _Labels, where: str, column: str) -> None:
    task = _task(model)
    n = _num_labels(model)
    config = getattr(model, "config", None)
    problem = getattr(config, "problem_type", None)
    name = _model_name(model)
    if labels.nulls:
        raise DataError(f"{where} column {column!r} has {labels.nulls} missing (None) labels. Drop those rows "
                        f"(ds = ds.filter(lambda r: r[{column!r}] is not None)) or fill them in.")
    if labels.dtype == "str":
        raise DataError(_string_label_message(where, column, labels.examples, model))
    if task == "sequence" and isinstance(n, int):
        if labels.per_row == "list" and labels.widths == (1, 1) and problem != "multi_label_classification":
            labels.per_row = "scalar"  # one-element lists ([1], as CSV loaders make): the model's loss flattens them
        if labels.per_row == "scalar":
            if labels.dtype == "float" and n > 1:
                raise ModelError(
                    f"{where} column {column!r} holds one float per row (regression targets), but {name} has "
                    f"num_labels={n}, which means classification. For regression load the model with num_labels=1 "
                    f"(problem_type='regression'); for classification cast the labels to integers: "
                    f"ds = ds.cast_column({column!r}, datasets.Value('int64')).")
            if labels.dtype in ("int", "bool") and n == 1 and problem != "regression":
                hi = labels.hi if labels.hi is not None else 1
                raise ModelError(
                    f"{where} column {column!r} holds integer class ids (up to {hi}), but {name} has num_labels=1, "
                    f"which trains a regression (mean squared error) instead of a classifier. Load the model with "
                    f"num_labels={max(int(hi) + 1, 2)} (from_pretrained(..., num_labels={max(int(hi) + 1, 2)})); "
                    f"for regression on integer scores set problem_type='regression' or cast the labels to float.")
            if labels.dtype in ("int", "bool") and n > 1:
                _check_class_range(labels, n, where, column, name)
        elif labels.per_row == "list":
            lo_w, hi_w = labels.widths or (None, None)
            if lo_w is not None and (lo_w != n or hi_w != n):
                raise DataError(
                    f"{where} column {column!r} holds lists of {lo_w if lo_w == hi_w else f'{lo_w} to {hi_w}'} "
                    f"values per row (multi-label targets), but {name} has num_labels={n}. Each row needs exactly "
                    f"{n} values (a multi-hot vector); or load the model with num_labels={hi_w}.")
            if labels.dtype in ("int", "bool") and problem != "multi_label_classification":
                raise DataError(
                    f"{where} column {column!r} holds multi-hot lists of integers; the multi-label loss "
                    f"(BCEWithLogits) needs floats. Cast them: ds = ds.cast_column({column!r}, "
                    f"datasets.Sequence(datasets.Value('float32'))), and load the model with "
                    f"problem_type='multi_label_classification'.")
    elif task == "token" and isinstance(n, int):
        if labels.dtype in ("int", "bool"):
            _check_class_range(labels, n, where, column, name)
        elif labels.dtype == "float":
            raise DataError(f"{where} column {column!r} holds floats, but token classification needs integer tag "
                            f"ids (with -100 for ignored positions). Cast them to int.")
    elif task == "lm" and labels.dtype in ("int", "bool"):
        vocab = vocab_size(model)
        if vocab is not None and labels.hi is not None and labels.hi >= vocab:
            raise ModelError(
                f"{where} column {column!r} has token id {labels.hi}{_row(labels, labels.hi)}, but {name} has "
                f"vocab_size={vocab} (ids 0..{vocab - 1}): the tokenizer and the model do not match. Use the "
                f"model's own tokenizer, or after adding tokens call model.resize_token_embeddings(len(tokenizer)).")
        if labels.lo is not None and labels.lo < 0:
            raise DataError(f"{where} column {column!r} has the negative label {labels.lo}{_row(labels, labels.lo)}; "
                            f"the only negative label allowed is -100 (ignored by the loss).")


def _check_class_range(labels: _Labels, n: int, where, column, name) -> None:
    if labels.lo is not None and labels.lo < 0:
        raise DataError(
            f"{where} column {column!r} has the label {labels.lo}{_row(labels, labels.lo)}; class ids must be in "
            f"[0, {n}) (-100 marks a row or token the loss ignores). Negative labels usually mean an unlabeled "
            f"split (e.g. a GLUE test set, label -1): train and evaluate on labeled splits only, or filter those "
            f"rows out: ds = ds.filter(lambda r: r[{column!r}] >= 0).")
    if labels.hi is not None and labels.hi >= n:
        raise ModelError(
            f"{where} column {column!r} has the label {labels.hi}{_row(labels, labels.hi)}, but {name} has "
            f"num_labels={n} (valid labels 0..{n - 1}). Load the model with num_labels={int(labels.hi) + 1} "
            f"(from_pretrained(..., num_labels={int(labels.hi) + 1})), or fix the labels.")


def _labels_from_tensor(t) -> _Labels | None:
    if isinstance(t, np.ndarray):
        t = torch.from_numpy(t) if t.dtype.kind in "biuf" else None
    if not isinstance(t, torch.Tensor) or t.numel() == 0:
        return None
    if t.dtype == torch.bool:
        dtype = "bool"
    elif t.is_floating_point():
        dtype = "float"
    elif t.is_complex():
        return None
    else:
        dtype = "int"
    per_row = "scalar" if t.dim() <= 1 else "list"
    widths = (t.shape[-1], t.shape[-1]) if t.dim() == 2 else None
    lo = hi = None
    if dtype in ("int", "bool"):
        valid = t[t != IGNORE_INDEX] if dtype == "int" else t.to(torch.long)
        if valid.numel():
            lo, hi = int(valid.min()), int(valid.max())
    return _Labels(dtype, per_row, lo, hi, widths)


# ================================================================================================ Arrow scans
def _is_arrow_dataset(dataset) -> bool:
    return type(dataset).__name__ == "Dataset" and hasattr(dataset, "features") and hasattr(dataset, "with_format")


def _arrow_column(dataset, column, max_rows=None):
    ds = dataset if max_rows is None or len(dataset) <= max_rows else dataset.select(range(max_rows))
    return ds.with_format("arrow")[column]


def _arrow_kind(feature) -> tuple[str, str] | None:
    """(dtype, per_row) of a datasets feature; None for nested or unknown features."""
    cls = type(feature).__name__
    if cls == "ClassLabel":
        return "int", "scalar"
    if cls == "Value":
        return _value_kind(feature.dtype), "scalar"
    if cls in ("Sequence", "List", "LargeList"):
        inner = getattr(feature, "feature", None)
        if type(inner).__name__ == "ClassLabel":
            return "int", "list"
        if type(inner).__name__ == "Value":
            return _value_kind(inner.dtype), "list"
    return None


def _value_kind(dtype: str) -> str:
    if dtype.startswith(("int", "uint")):
        return "int"
    if dtype.startswith(("float", "double", "half")):
        return "float"
    if dtype == "bool":
        return "bool"
    if dtype in ("string", "large_string"):
        return "str"
    return "other"


def _arrow_labels(dataset, column) -> _Labels | None:
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = _arrow_kind(dataset.features.get(column))
    if kind is None:
        return None
    dtype, per_row = kind
    col = _arrow_column(dataset, column)
    nulls = col.null_count
    if dtype == "str":
        examples = list(dict.fromkeys(v for v in col.slice(0, 200).to_pylist() if v is not None))[:3]
        return _Labels("str", per_row, examples=examples)
    widths = None
    flat = col
    parents = None
    if per_row == "list":
        lens = pc.list_value_length(col)
        mm = pc.min_max(lens).as_py()
        widths = (mm["min"], mm["max"])
        flat = pc.list_flatten(col)
        parents = pc.list_parent_indices(col)
        nulls = 0  # padded/ragged lists are normal; only whole missing rows matter
    lo = hi = None
    if dtype in ("int", "bool"):
        values = flat.cast(pa.int64()) if dtype == "bool" else flat
        values = pc.filter(values, pc.not_equal(values, IGNORE_INDEX))
        if len(values):
            mm = pc.min_max(values).as_py()
            lo, hi = mm["min"], mm["max"]

    def locate(value, flat=flat, parents=parents):
        try:
            i = pc.index(flat, pa.scalar(value, type=flat.type)).as_py()
        except Exception:
            return None
        if i is None or i < 0:
            return None
        return int(parents[i].as_py()) if parents is not None else i

    return _Labels(dtype, per_row, lo, hi, widths, nulls, locate)


def check_arrow_dataset(model: Any, dataset: Any, where: str, label_names: Any) -> None:
    """Vectorised scans of a datasets.Dataset: the whole label column, every row's length, and the token ids
    of the first TOKEN_SCAN_ROWS rows."""
    if not _is_arrow_dataset(dataset) or len(dataset) == 0:
        return
    import pyarrow as pa
    import pyarrow.compute as pc

    input_checks.check_arrow_inputs(model, dataset, where, label_names, TOKEN_SCAN_ROWS)
    columns = dataset.column_names
    for column in list(label_names) + list(LABEL_ALIASES):
        if column in columns:
            labels = _arrow_labels(dataset, column)
            if labels is not None:
                check_labels(model, labels, where, column)
            break
    if "input_ids" not in columns or _arrow_kind(dataset.features["input_ids"]) != ("int", "list"):
        return
    limit = position_limit(model)
    if limit is not None:
        col = _arrow_column(dataset, "input_ids")
        lens = pc.list_value_length(col)
        longest = pc.max(lens).as_py()
        if longest is not None and longest > limit[0]:
            row = pc.index(lens, pa.scalar(longest, type=lens.type)).as_py()
            _raise_too_long(model, where, longest, limit, f" (row {row})")
    vocab = vocab_size(model)
    if vocab is not None:
        col = _arrow_column(dataset, "input_ids", TOKEN_SCAN_ROWS)
        flat = pc.list_flatten(col)
        if len(flat):
            mm = pc.min_max(flat).as_py()
            if mm["max"] >= vocab or mm["min"] < 0:
                bad = mm["max"] if mm["max"] >= vocab else mm["min"]
                parents = pc.list_parent_indices(col)
                i = pc.index(flat, pa.scalar(bad, type=flat.type)).as_py()
                row = f" (row {parents[i].as_py()})" if i is not None and i >= 0 else ""
                _raise_bad_token(model, where, "input_ids", bad, vocab, row)


def _raise_too_long(model, where, longest, limit, row=""):
    n, module = limit
    raise DataError(
        f"{where} has a sequence of {longest} tokens{row} in 'input_ids', but {_model_name(model)} has learned "
        f"position embeddings for only {n} positions ({module}, {_max_positions_name(model)}), so it would fail "
        f"with an index error. Tokenize with truncation: tokenizer(..., truncation=True, max_length={n}).")


def _raise_bad_token(model, where, column, bad, vocab, row=""):
    if bad < 0:
        raise DataError(f"{where} column {column!r} has the negative token id {bad}{row}. Token ids must be in "
                        f"[0, {vocab}); pad input_ids with tokenizer.pad_token_id, and only labels with -100.")
    raise ModelError(
        f"{where} column {column!r} has token id {bad}{row}, but {_model_name(model)} has vocab_size={vocab} "
        f"(embedding rows 0..{vocab - 1}): the tokenizer and the model do not match (largest id {bad} >= "
        f"vocab_size {vocab}). Use the model's own tokenizer, or, if you added tokens to the tokenizer, call "
        f"model.resize_token_embeddings(len(tokenizer)) before training.")


# ================================================================================================ batch checks
def check_batch(trainer: Any, model: Any, batch: dict, where: str, *, require_labels: bool) -> None:
    if not batch:
        return
    label_names = list(trainer.label_names or ["labels"])
    present = [k for k in label_names if batch.get(k) is not None]
    if require_labels and not present and _needs_labels(trainer, model, label_names):
        columns = dataset_columns(trainer.train_dataset) if where == "train_dataset" else None
        columns = columns or sorted(batch)
        hint = ""
        if _task(model) == "lm":
            hint = (" For language modelling, the collator makes the labels: "
                    "data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False).")
        raise DataError(
            f"{where} has no {' / '.join(repr(k) for k in label_names)} column (its columns: "
            f"{', '.join(map(str, columns))}), so {_model_name(model)} cannot compute a loss. Name the label column "
            f"'label' or 'labels' (or set label_names=[...] in TrainingArguments), or pass compute_loss_func / "
            f"override compute_loss.{hint}")
    for key in present:
        labels = _labels_from_tensor(batch[key])
        if labels is None:
            continue
        if _task(model) == "choice":
            choices = batch["input_ids"].shape[1] if isinstance(batch.get("input_ids"), torch.Tensor) \
                and batch["input_ids"].dim() == 3 else None
            if choices is not None and labels.hi is not None and labels.hi >= choices:
                raise DataError(f"{where} column {key!r} has the label {labels.hi}, but each row has {choices} "
                                f"choices (valid labels 0..{choices - 1}).")
            continue
        if key == "labels" or len(present) == 1:
            check_labels(model, labels, where, key)
    input_checks.check_batch_ids(model, batch, where)
    input_checks.warn_nan_in_batch(batch, where, label_names)
    vocab = vocab_size(model)
    ids = batch.get("input_ids")
    if vocab is not None and isinstance(ids, torch.Tensor) and ids.numel() and not ids.is_floating_point():
        hi, lo = int(ids.max()), int(ids.min())
        if hi >= vocab or lo < 0:
            _raise_bad_token(model, where, "input_ids", hi if hi >= vocab else lo, vocab)
    limit = position_limit(model)
    ids = batch.get("input_ids")
    if limit is not None and isinstance(ids, torch.Tensor) and ids.dim() >= 2:
        positions = batch.get("position_ids")
        if isinstance(positions, torch.Tensor) and positions.numel():
            longest = int(positions.max()) + 1
        else:
            longest = ids.shape[-1]
        if longest > limit[0]:
            _raise_too_long(model, where, longest, limit)


def _needs_labels(trainer, model, label_names) -> bool:
    """A transformers model that takes the labels in forward() returns no loss without them; a user's own
    compute_loss / compute_loss_func or a plain nn.Module may compute one anyway, so those are not flagged."""
    if trainer.compute_loss_func is not None or overridden(trainer, "compute_loss"):
        return False
    if not type(model).__module__.startswith("transformers."):
        return False
    import inspect
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False
    return all(k in params for k in label_names)


# ================================================================================================ RNG
@contextlib.contextmanager
def _preserved_collator(collator):
    """Collators may hold private state (a seeded torch.Generator for masking, created lazily): put every
    attribute of the collator and of the collators it wraps back as it was, generators' states included."""
    chain, obj = [], collator
    while obj is not None and hasattr(obj, "__dict__") and len(chain) < 8:
        if not isinstance(obj, (types.FunctionType, types.MethodType, types.BuiltinFunctionType)):
            chain.append(obj)
        obj = getattr(obj, "data_collator", None)
    saved = [(o, dict(vars(o)), {k: v.get_state() for k, v in vars(o).items() if isinstance(v, torch.Generator)})
             for o in chain]
    try:
        yield
    finally:
        for o, attrs, states in saved:
            o.__dict__.clear()
            o.__dict__.update(attrs)
            for k, state in states.items():
                attrs[k].set_state(state)


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Restore the python, numpy and torch (CPU and initialised CUDA) RNG states afterwards."""
    py_state = random.getstate()
    np_state = np.random.get_state()
    torch_state = torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.set_rng_state(torch_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)
