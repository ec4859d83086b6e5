"""Padding-free packing for causal language models.

Three pieces:

* :class:`DataCollatorWithFlattening` -- same constructor and behaviour as
  ``transformers.DataCollatorWithFlattening``: the whole mini-batch becomes ONE row ``[1, total_tokens]`` with
  ``position_ids`` restarting at ``position_ids_start`` (0) for every example and ``labels`` whose first token of
  every example is ``separator_id`` (-100), so no loss term crosses an example boundary. No padding is added and
  no token is dropped. Optional ``seq_idx`` and FlashAttention kwargs (``cu_seq_lens_q/k``, ``max_length_q/k``).
* :func:`pack_dataset` -- dataset-level packing: groups whole examples into rows of at most ``max_length``
  tokens, with first-fit decreasing (``strategy="ffd"``, default: fewest rows, order not kept) or sequential
  greedy (``strategy="sequential"``: keeps the data order, starts a new row when the next example does not fit).
  Each packed row stores ``position_ids`` restarting at every example, so the example boundaries travel with it.
* :class:`DataCollatorForPackedRows` -- stacks packed rows into a rectangular ``[batch, max_length]`` batch
  (rows are nearly full after :func:`pack_dataset`); the padding tail is its own segment with labels -100.

How a model keeps packed examples apart (checked on transformers 5.23, CPU, Llama, ``sdpa`` and ``eager``):
``masking_utils.create_causal_mask`` builds a block-diagonal causal mask from ``position_ids`` (a new sequence
starts wherever ``position_ids`` does not increase by exactly 1) **only when** ``attention_mask is None`` **and**
``past_key_values is None``. ``use_cache`` defaults to ``config.use_cache`` (True for most causal LMs) even in
training mode, and then the model creates an empty ``DynamicCache`` before building the mask, so the packed
detection is silently skipped and examples attend to each other. ``transformers.Trainer`` avoids this by setting
``model.config.use_cache = args.use_cache`` (False by default). So either:

1. call :func:`prepare_model_for_packing` (sets ``model.config.use_cache = False``) or pass ``use_cache=False``;
   the collators then return no ``attention_mask`` and the model isolates the examples from ``position_ids``; or
2. pass ``return_4d_attention_mask=True``: the collator adds a ready-made block-diagonal causal mask
   ``[batch, 1, T, T]`` as ``attention_mask`` (additive: 0 where allowed and ``finfo(dtype).min`` elsewhere,
   or boolean with ``attention_mask_dtype=torch.bool``, for ``sdpa`` only). Models return 4D masks as-is, so
   this works whatever ``use_cache`` is, and for models/attention implementations without packed-sequence
   detection. It costs ``T*T`` elements per row; use the additive form in the model's compute dtype.

FlashAttention-2/3 use ``cu_seq_lens_*`` (``return_flash_attn_kwargs=True``) or ``position_ids``;
``flex_attention`` detects packing from ``position_ids`` too but has no backward pass on CPU (torch 2.x).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

__all__ = [
    "DataCollatorWithFlattening",
    "DataCollatorForPackedRows",
    "pack_dataset",
    "prepare_model_for_packing",
    "packed_causal_attention_mask",
    "segment_lengths_from_position_ids",
    "packing_efficiency",
]

# Attention implementations whose transformers mask/kernels isolate packed sequences given position_ids
# (with attention_mask=None and no cache).
_POSITION_IDS_PACKING_IMPLS = ("sdpa", "eager", "flex_attention", "flash_attention_2", "flash_attention_3")


def _to_list(values: Any) -> list[int]:
    if isinstance(values, (torch.Tensor, np.ndarray)):
        return [int(v) for v in values.reshape(-1).tolist()]
    return [int(v) for v in values]


def segment_lengths_from_position_ids(position_ids: Sequence[int]) -> list[int]:
    """Split one row of ``position_ids`` into sequence lengths, with the rule transformers uses
    (``masking_utils.find_packed_sequence_indices``): a new sequence starts wherever the position does not grow
    by exactly 1 from the previous token."""
    lengths: list[int] = []
    previous = None
    for p in position_ids:
        p = int(p)
        if previous is None or p != previous + 1:
            lengths.append(1)
        else:
            lengths[-1] += 1
        previous = p
    return lengths


def _segment_ids(lengths_per_row: Sequence[Sequence[int]], row_length: int) -> torch.Tensor:
    seg = torch.empty((len(lengths_per_row), row_length), dtype=torch.long)
    for r, lengths in enumerate(lengths_per_row):
        if sum(lengths) != row_length:
            raise ValueError(f"segment lengths {list(lengths)} do not add up to the row length {row_length}")
        seg[r] = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(list(lengths), dtype=torch.long))
    return seg


def packed_causal_attention_mask(
    segment_ids: torch.Tensor, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Block-diagonal causal mask ``[batch, 1, T, T]`` from ``segment_ids`` ``[batch, T]``.

    Token ``i`` may attend to token ``j`` iff ``j <= i`` and both belong to the same segment. With
    ``dtype=torch.bool`` the mask is True where attention is allowed (for ``sdpa``); with a floating dtype it is
    additive (0 allowed, ``torch.finfo(dtype).min`` blocked), which ``eager`` and ``sdpa`` both accept.
    """
    if segment_ids.ndim == 1:
        segment_ids = segment_ids.unsqueeze(0)
    length = segment_ids.shape[-1]
    causal = torch.ones((length, length), dtype=torch.bool).tril_()
    allowed = (segment_ids[:, :, None] == segment_ids[:, None, :]) & causal
    allowed = allowed.unsqueeze(1)
    if dtype == torch.bool:
        return allowed
    mask = torch.zeros(allowed.shape, dtype=dtype)
    return mask.masked_fill_(~allowed, torch.finfo(dtype).min)


def prepare_model_for_packing(model: Any, warn: bool = True) -> Any:
    """Make a transformers model isolate packed examples given ``position_ids`` (no ``attention_mask``).

    Sets ``model.config.use_cache = False`` (with a cache, transformers skips the packed-sequence detection, see
    the module docstring) and warns when the attention implementation is not known to handle packing. Returns
    the model.
    """
    config = getattr(model, "config", None)
    if config is None:
        return model
    if getattr(config, "use_cache", False):
        config.use_cache = False
    impl = getattr(config, "_attn_implementation", None)
    if warn and impl is not None and impl not in _POSITION_IDS_PACKING_IMPLS and not str(impl).startswith("kernels"):
        warnings.warn(
            f"attn_implementation={impl!r} is not known to isolate packed sequences from position_ids; use "
            "return_4d_attention_mask=True in the packing collator or one of "
            f"{_POSITION_IDS_PACKING_IMPLS}.",
            UserWarning,
            stacklevel=2,
        )
    return model


class _PackingMaskMixin:
    return_4d_attention_mask: bool
    attention_mask_dtype: torch.dtype

    def _maybe_mask(self, batch: dict[str, Any], segment_ids: torch.Tensor, return_tensors: str) -> None:
        if not self.return_4d_attention_mask:
            return
        mask = packed_causal_attention_mask(segment_ids, self.attention_mask_dtype)
        batch["attention_mask"] = mask if return_tensors == "pt" else mask.numpy()


class DataCollatorWithFlattening(_PackingMaskMixin):
    """Flatten a mini-batch into one padding-free row (``[1, total_tokens]``).

    Args:
        return_tensors: ``"pt"`` or ``"np"`` (first positional argument, as in transformers).
        return_position_ids: return ``position_ids`` restarting at ``position_ids_start`` for every example.
        separator_id: label given to the first token of every example (-100: no loss across boundaries).
        return_flash_attn_kwargs: also return ``cu_seq_lens_q``/``cu_seq_lens_k`` (int32 cumulative lengths)
            and ``max_length_q``/``max_length_k`` (python ints) for FlashAttention varlen kernels.
        return_seq_idx: also return ``seq_idx`` (int32, which example each token comes from).
        position_ids_start: first position of every example (0; 2 for RoBERTa-like absolute positions).
        return_4d_attention_mask: add a block-diagonal causal ``attention_mask`` ``[1, 1, T, T]`` (see the module
            docstring; needed when the model keeps a cache or cannot detect packing from ``position_ids``).
        attention_mask_dtype: dtype of that mask (floating: additive; ``torch.bool``: boolean, sdpa only).

    Examples are dicts with ``input_ids`` and optionally ``labels`` (used instead of ``input_ids`` as targets).
    Examples that are themselves packed rows (from :func:`pack_dataset`, carrying ``position_ids``) are split into
    their sequences with :func:`segment_lengths_from_position_ids`, and every sequence start gets
    ``separator_id``. Other keys are ignored. Dtypes match transformers: int64 for ``input_ids``, ``labels`` and
    ``position_ids``; int32 for ``seq_idx`` and ``cu_seq_lens_*``.
    """

    def __init__(
        self,
        return_tensors: str = "pt",
        *,
        return_position_ids: bool = True,
        separator_id: int = -100,
        return_flash_attn_kwargs: bool = False,
        return_seq_idx: bool = False,
        position_ids_start: int = 0,
        return_4d_attention_mask: bool = False,
        attention_mask_dtype: torch.dtype = torch.float32,
    ) -> None:
        if return_tensors not in ("pt", "np"):
            raise ValueError(f'return_tensors must be "pt" or "np", got {return_tensors!r}')
        self.return_tensors = return_tensors
        self.return_position_ids = return_position_ids
        self.separator_id = separator_id
        self.return_flash_attn_kwargs = return_flash_attn_kwargs
        self.return_seq_idx = return_seq_idx
        self.position_ids_start = position_ids_start
        self.return_4d_attention_mask = return_4d_attention_mask
        self.attention_mask_dtype = attention_mask_dtype

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(return_tensors={self.return_tensors!r}, "
            f"return_position_ids={self.return_position_ids}, separator_id={self.separator_id}, "
            f"return_flash_attn_kwargs={self.return_flash_attn_kwargs}, return_seq_idx={self.return_seq_idx}, "
            f"position_ids_start={self.position_ids_start}, "
            f"return_4d_attention_mask={self.return_4d_attention_mask})"
        )

    def __call__(
        self,
        features: Sequence[Mapping[str, Any]],
        return_tensors: str | None = None,
        separator_id: int | None = None,
    ) -> dict[str, Any]:
        """``features`` concatenated into one row (no padding) with ``position_ids`` restarting at each example
        (and, as configured, sequence-boundary kwargs); ``separator_id`` overrides the label separator;
        ``return_tensors`` overrides the collator's ("pt" or "np")."""
        return_tensors = return_tensors or self.return_tensors
        if return_tensors not in ("pt", "np"):
            raise ValueError(f'return_tensors must be "pt" or "np", got {return_tensors!r}')
        if separator_id is None:
            separator_id = self.separator_id
        if not features:
            raise ValueError("DataCollatorWithFlattening received an empty list of features")

        input_ids, labels, position_ids, seq_lengths = self._flatten(features, separator_id)
        total = len(input_ids)
        if total == 0:
            raise ValueError("DataCollatorWithFlattening received only empty examples")
        as_array = torch.tensor if return_tensors == "pt" else np.array
        i64 = torch.int64 if return_tensors == "pt" else np.int64
        i32 = torch.int32 if return_tensors == "pt" else np.int32

        batch: dict[str, Any] = {
            "input_ids": as_array([input_ids], dtype=i64),
            "labels": as_array([labels], dtype=i64),
        }
        if self.return_position_ids:
            batch["position_ids"] = as_array([position_ids], dtype=i64)
        if self.return_seq_idx:
            seq_idx = [s for s, n in enumerate(seq_lengths) for _ in range(n)]
            batch["seq_idx"] = as_array([seq_idx], dtype=i32)
        if self.return_flash_attn_kwargs:
            cu = [0]
            for n in seq_lengths:
                cu.append(cu[-1] + n)
            batch["cu_seq_lens_q"] = as_array(cu, dtype=i32)
            batch["cu_seq_lens_k"] = as_array(cu, dtype=i32)
            batch["max_length_q"] = batch["max_length_k"] = int(max(seq_lengths))
        if self.return_4d_attention_mask:
            self._maybe_mask(batch, _segment_ids([seq_lengths], total), return_tensors)
        return batch

    def _flatten(self, features: Sequence[Mapping[str, Any]], separator_id: int) -> tuple[list, list, list, list]:
        """(input ids, labels, position ids, sequence lengths) of the features concatenated; every sequence start
        (packed rows hold several, found from their ``position_ids``) labelled ``separator_id``."""
        input_ids: list[int] = []
        labels: list[int] = []
        position_ids: list[int] = []
        seq_lengths: list[int] = []
        for feature in features:
            ids = _to_list(feature["input_ids"])
            if not ids:
                continue
            lab = _to_list(feature["labels"]) if feature.get("labels") is not None else list(ids)
            if len(lab) != len(ids):
                raise ValueError(f"labels ({len(lab)}) and input_ids ({len(ids)}) differ in length")
            if feature.get("position_ids") is not None:
                pos = _to_list(feature["position_ids"])
                if len(pos) != len(ids):
                    raise ValueError(f"position_ids ({len(pos)}) and input_ids ({len(ids)}) differ in length")
                lengths = segment_lengths_from_position_ids(pos)
            else:
                lengths = [len(ids)]
                pos = [self.position_ids_start + i for i in range(len(ids))]
            offset = 0
            for n in lengths:
                lab[offset] = separator_id
                offset += n
            input_ids += ids
            labels += lab
            position_ids += pos
            seq_lengths += lengths
        return input_ids, labels, position_ids, seq_lengths


class DataCollatorForPackedRows(_PackingMaskMixin):
    """Stack packed rows (from :func:`pack_dataset`) into a rectangular ``[batch, length]`` causal-LM batch.

    Each row keeps its examples apart through ``position_ids`` (restarting at every example) and ``labels``
    (``separator_id`` at every example start). Rows shorter than ``length`` are padded on the right with
    ``pad_token_id``; the padding is a separate segment (its ``position_ids`` restart at ``position_ids_start``),
    its labels are -100, and causal attention means real tokens never see it. ``length`` is ``max_length`` when
    given (rows longer than it are an error), else the longest row rounded up to ``pad_to_multiple_of``.

    No ``attention_mask`` is returned unless ``return_4d_attention_mask=True``; the model must then isolate
    sequences from ``position_ids`` (see :func:`prepare_model_for_packing`). Rows without ``position_ids`` are
    treated as one sequence.
    """

    def __init__(
        self,
        pad_token_id: int = 0,
        max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
        label_pad_token_id: int = -100,
        separator_id: int = -100,
        position_ids_start: int = 0,
        return_seq_idx: bool = False,
        return_4d_attention_mask: bool = False,
        attention_mask_dtype: torch.dtype = torch.float32,
        return_tensors: str = "pt",
    ) -> None:
        if return_tensors not in ("pt", "np"):
            raise ValueError(f'return_tensors must be "pt" or "np", got {return_tensors!r}')
        self.pad_token_id = int(pad_token_id)
        self.max_length = max_length
        self.pad_to_multiple_of = pad_to_multiple_of
        self.label_pad_token_id = label_pad_token_id
        self.separator_id = separator_id
        self.position_ids_start = position_ids_start
        self.return_seq_idx = return_seq_idx
        self.return_4d_attention_mask = return_4d_attention_mask
        self.attention_mask_dtype = attention_mask_dtype
        self.return_tensors = return_tensors

    def __call__(self, features: Sequence[Mapping[str, Any]], return_tensors: str | None = None) -> dict[str, Any]:
        """A batch of rows packed by ``pack_dataset``: stacked, with their ``position_ids`` (and the attention
        kwargs that keep the packed examples apart); ``return_tensors`` overrides the collator's."""
        return_tensors = return_tensors or self.return_tensors
        if not features:
            raise ValueError("DataCollatorForPackedRows received an empty list of features")
        rows = [_to_list(f["input_ids"]) for f in features]
        longest = max(len(r) for r in rows)
        if self.max_length is not None:
            if longest > self.max_length:
                raise ValueError(f"a packed row has {longest} tokens, more than max_length={self.max_length}")
            length = int(self.max_length)
        else:
            length = longest
            if self.pad_to_multiple_of and length % self.pad_to_multiple_of:
                length = (length // self.pad_to_multiple_of + 1) * self.pad_to_multiple_of

        start = self.position_ids_start
        input_ids = torch.full((len(rows), length), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), length), self.label_pad_token_id, dtype=torch.long)
        position_ids = torch.empty((len(rows), length), dtype=torch.long)
        all_lengths: list[list[int]] = []
        for r, (feature, ids) in enumerate(zip(features, rows)):
            n = len(ids)
            lab = _to_list(feature["labels"]) if feature.get("labels") is not None else list(ids)
            if feature.get("position_ids") is not None:
                pos = _to_list(feature["position_ids"])
            else:
                pos = [start + i for i in range(n)]
            if not len(lab) == len(pos) == n:
                raise ValueError("input_ids, labels and position_ids of a packed row must have the same length")
            lengths = segment_lengths_from_position_ids(pos) if n else []
            offset = 0
            for seg in lengths:
                lab[offset] = self.separator_id
                offset += seg
            if n:
                input_ids[r, :n] = torch.tensor(ids)
                labels[r, :n] = torch.tensor(lab)
                position_ids[r, :n] = torch.tensor(pos)
            if length > n:
                position_ids[r, n:] = torch.arange(start, start + length - n)
                lengths = lengths + [length - n]
            all_lengths.append(lengths)

        batch: dict[str, Any] = {"input_ids": input_ids, "labels": labels, "position_ids": position_ids}
        if self.return_seq_idx or self.return_4d_attention_mask:
            segment_ids = _segment_ids(all_lengths, length)
            if self.return_seq_idx:
                batch["seq_idx"] = segment_ids.to(torch.int32)
            self._maybe_mask(batch, segment_ids, "pt")
        if return_tensors == "np":
            batch = {k: v.numpy() for k, v in batch.items()}
        return batch


# ------------------------------------------------------------------------------------------------------------------
# Dataset-level packing
# ------------------------------------------------------------------------------------------------------------------
def _first_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """First-fit decreasing bin packing in O(n log n) with a max segment tree over the bins' free space.

    Bins that are not opened yet have full capacity and sit to the right of the opened ones, so "leftmost leaf
    with enough room" is exactly first fit (an opened bin if one fits, else a new one).
    """
    n = len(lengths)
    if n == 0:
        return []
    order = sorted(range(n), key=lambda i: (-lengths[i], i))
    size = 1
    while size < n:
        size *= 2
    tree = [0] * (2 * size)
    for leaf in range(n):
        tree[size + leaf] = capacity
    for node in range(size - 1, 0, -1):
        tree[node] = max(tree[2 * node], tree[2 * node + 1])
    bins: list[list[int]] = []
    for i in order:
        need = lengths[i]
        node = 1
        while node < size:
            node = 2 * node if tree[2 * node] >= need else 2 * node + 1
        b = node - size
        if b == len(bins):
            bins.append([])
        bins[b].append(i)
        tree[node] -= need
        node //= 2
        while node:
            tree[node] = max(tree[2 * node], tree[2 * node + 1])
            node //= 2
    return [sorted(b) for b in bins]


def _sequential_greedy(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    bins: list[list[int]] = []
    used = capacity + 1
    for i, n in enumerate(lengths):
        if used + n > capacity:
            bins.append([])
            used = 0
        bins[-1].append(i)
        used += n
    return bins


def pack_dataset(
    examples: Any,
    max_length: int,
    strategy: str = "ffd",
    overflow: str = "truncate",
    position_ids_start: int = 0,
) -> Any:
    """Group whole examples into rows of at most ``max_length`` tokens for padding-free causal-LM training.

    Args:
        examples: a list of dicts, or a ``datasets.Dataset``, with an ``input_ids`` column and optionally
            ``labels`` (same length as ``input_ids``; other columns are dropped).
        max_length: row capacity in tokens.
        strategy: ``"ffd"`` (default) -- first-fit decreasing: examples sorted by decreasing length, each put in
            the first row with room; uses at most ``11/9 * optimal + 6/9`` rows and in practice nearly
            ``ceil(total_tokens / max_length)``; rows are not in data order (shuffle them with the sampler). Or
            ``"sequential"`` -- sequential greedy: keeps the data order, closing a row when the next example
            does not fit (more padding, deterministic order).
        overflow: what to do with examples longer than ``max_length``: ``"truncate"`` (default, keep the first
            ``max_length`` tokens; a warning gives the number of tokens dropped), ``"split"`` (cut into chunks of
            ``max_length`` tokens, each packed as an independent example: no token dropped, but later chunks lose
            the earlier context and the first token of every chunk gets no loss), ``"drop"`` or ``"error"``.
        position_ids_start: first position id of every example.

    Returns:
        rows with ``input_ids``, ``labels`` (only if the examples had labels), ``position_ids`` (restarting at every
        example) and ``seq_lengths`` (the example lengths, in row order), as a list of dicts, or as a
        ``datasets.Dataset`` when a Dataset was given. Within a row examples keep their relative data order.
        Collate with :class:`DataCollatorForPackedRows` (rectangular ``[batch, max_length]``) or
        :class:`DataCollatorWithFlattening` (one long row); both set the first label of every example to -100.
    """
    if max_length <= 0:
        raise ValueError(f"max_length must be positive, got {max_length}")
    if strategy not in ("ffd", "sequential"):
        raise ValueError(f'strategy must be "ffd" or "sequential", got {strategy!r}')
    if overflow not in ("truncate", "split", "drop", "error"):
        raise ValueError(f'overflow must be "truncate", "split", "drop" or "error", got {overflow!r}')

    is_dataset = hasattr(examples, "column_names") and hasattr(examples, "select")
    all_ids, all_labels = _packing_columns(examples, is_dataset)
    seqs = _fit_examples(all_ids, all_labels, max_length, overflow)
    lengths = [len(ids) for ids, _ in seqs]
    bins = _first_fit_decreasing(lengths, max_length) if strategy == "ffd" else _sequential_greedy(lengths, max_length)
    rows = _packed_rows(seqs, bins, all_labels is not None, position_ids_start)
    if is_dataset:
        from datasets import Dataset

        keys = ["input_ids", "position_ids", "seq_lengths"] + (["labels"] if all_labels is not None else [])
        return Dataset.from_dict({key: [row[key] for row in rows] for key in keys})
    return rows


def _packing_columns(examples: Any, is_dataset: bool) -> tuple[list, list | None]:
    """(input_ids of every example, their labels or None) from a Dataset or a list of dicts."""
    if is_dataset:
        columns = set(examples.column_names)
        if "input_ids" not in columns:
            raise ValueError("pack_dataset needs an `input_ids` column")
        return list(examples["input_ids"]), (list(examples["labels"]) if "labels" in columns else None)
    examples = list(examples)
    has_labels = bool(examples) and all(e.get("labels") is not None for e in examples)
    return [e["input_ids"] for e in examples], ([e["labels"] for e in examples] if has_labels else None)


def _fit_examples(all_ids: list, all_labels: list | None, max_length: int,
                  overflow: str) -> list[tuple[list[int], list[int] | None]]:
    """Examples as (ids, labels) lists, empty ones skipped and overlong ones truncated, split, dropped or refused
    per ``overflow`` (a warning counts the tokens dropped)."""
    seqs: list[tuple[list[int], list[int] | None]] = []
    dropped_tokens = 0
    for k, ids in enumerate(all_ids):
        ids = _to_list(ids)
        lab = _to_list(all_labels[k]) if all_labels is not None else None
        if lab is not None and len(lab) != len(ids):
            raise ValueError(f"example {k}: labels ({len(lab)}) and input_ids ({len(ids)}) differ in length")
        if not ids:
            continue
        if len(ids) <= max_length:
            seqs.append((ids, lab))
        elif overflow == "error":
            raise ValueError(f"example {k} has {len(ids)} tokens, more than max_length={max_length}")
        elif overflow == "drop":
            dropped_tokens += len(ids)
        elif overflow == "truncate":
            dropped_tokens += len(ids) - max_length
            seqs.append((ids[:max_length], lab[:max_length] if lab is not None else None))
        else:  # split
            for s in range(0, len(ids), max_length):
                seqs.append((ids[s : s + max_length], lab[s : s + max_length] if lab is not None else None))
    if dropped_tokens:
        warnings.warn(
            f"pack_dataset(overflow={overflow!r}) dropped {dropped_tokens} tokens of examples longer than "
            f"max_length={max_length}",
            UserWarning,
            stacklevel=3,
        )
    return seqs


def _packed_rows(seqs: list, bins: list, with_labels: bool, position_ids_start: int) -> list[dict[str, list[int]]]:
    """One row per bin: the members' tokens concatenated, position ids restarting at every example."""
    rows: list[dict[str, list[int]]] = []
    for members in bins:
        row: dict[str, list[int]] = {"input_ids": [], "position_ids": [], "seq_lengths": []}
        if with_labels:
            row["labels"] = []
        for i in members:
            ids, lab = seqs[i]
            row["input_ids"] += ids
            row["position_ids"] += list(range(position_ids_start, position_ids_start + len(ids)))
            row["seq_lengths"].append(len(ids))
            if lab is not None:
                row["labels"] += lab
        rows.append(row)
    return rows


def packing_efficiency(rows: Sequence[Mapping[str, Any]], max_length: int) -> float:
    """Share of the ``len(rows) * max_length`` slots holding real tokens (1.0 = no padding)."""
    if not rows:
        return 0.0
    return sum(len(_to_list(r["input_ids"])) for r in rows) / (len(rows) * max_length)

