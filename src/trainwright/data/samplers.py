"""Deterministic, resumable, shardable batch order.

The order of an epoch is a pure function of (seed, epoch): a seeded permutation cut into global
batches of ``batch_size * world_size`` rows; rank r reads its share of each global batch
(rows [r*batch_size, (r+1)*batch_size) of a full one), so 2 ranks x 8 see exactly what 1 process
x 16 sees. Resuming sets the start batch and jumps there directly: nothing before it is loaded or
replayed. The sampler's ``state_dict()`` is its position (the epoch and the batches the training loop has
consumed in it, with what the order depends on); a checkpoint saves it, and a resumed run starts from it.

* :class:`ResumableBatchSampler` -- fixed-size batches; ``group_by_length=True`` groups rows of
  similar length (HF's megabatch scheme) while staying seeded, shuffled and resumable. Groups are
  ``group_batches`` batches (the gradient accumulation steps) long, so one optimizer step sees the
  same rows whether its batch is 16 or 4 x 4.
* :class:`TokenBudgetBatchSampler` -- ``max_tokens_per_batch``: a variable number of rows per batch
  so that the padded tokens of every per-rank batch (rows x longest row, rounded up to
  ``pad_to_multiple_of``) stay within the budget. The number of batches may differ per epoch:
  ``num_batches(epoch)`` gives it exactly and :class:`EpochPlan` turns it into optimizer steps.
* :class:`EvalBatchSampler` -- evaluation/predict: the single-process batches (optionally sorted by
  length: less padding), each rank a contiguous run of them; ``inverse_order`` puts the gathered
  outputs back in dataset order.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence, Sized
from typing import Any

import numpy as np
import torch

from .batch_seeds import KeyedBatch


class ResumableBatchSampler(torch.utils.data.Sampler):
    variable_batches = False  # every epoch has the same number of batches

    def __init__(self, num_samples: int, batch_size: int, *, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False, world_size: int = 1, rank: int = 0,
                 lengths: list[int] | None = None, group_by_length: bool = False, group_batches: int = 1):
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.world_size = world_size
        self.rank = rank
        self.lengths = lengths
        self.group_by_length = group_by_length
        self.group_batches = max(1, int(group_batches))  # batches per length group (gradient accumulation)
        self.epoch = 0
        self.start_batch = 0
        self.consumed = (0, 0)  # (epoch, batches of it the training loop has finished): set by the loop
        self.resume_position: tuple[int, int] | None = None  # from a checkpoint, until the loop reads it

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch = epoch
        self.start_batch = start_batch

    def state_dict(self) -> dict[str, Any]:
        """The position: ``epoch`` and ``batches_done`` in it (per rank), and the order's inputs for reference."""
        epoch, done = self.consumed
        return {"epoch": int(epoch), "batches_done": int(done), "batches_in_epoch": int(self.num_batches(epoch)),
                "seed": int(self.seed), "shuffle": bool(self.shuffle), "group_by_length": bool(self.group_by_length),
                "world_size": int(self.world_size)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Keeps the saved position for the training loop's resume (:meth:`resume_start`)."""
        self.resume_position = (int(state["epoch"]), int(state["batches_done"]))
        self.consumed = self.resume_position

    def _generator(self, epoch: int) -> torch.Generator:
        g = torch.Generator()
        g.manual_seed(self.seed + epoch)
        return g

    def order(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.num_samples))
        g = self._generator(epoch)
        perm = torch.randperm(self.num_samples, generator=g).tolist()
        if self.group_by_length and self.lengths is not None:
            perm = _group_by_length(perm, self.lengths, self.batch_size * self.world_size * self.group_batches, g)
        return perm

    def global_batches(self, epoch: int) -> list[list[int]]:
        order = self.order(epoch)
        size = self.batch_size * self.world_size
        batches = [order[i:i + size] for i in range(0, len(order), size)]
        if batches and len(batches[-1]) < size and (self.drop_last or len(batches[-1]) < self.world_size):
            # a last batch too small to give every rank a row is dropped (only possible with world_size > 1)
            batches.pop()
        return batches

    def shard(self, global_batch: list[int]) -> list[int]:
        """This rank's rows of a global batch: contiguous, balanced (sizes differ by at most one row),
        never empty when the global batch has at least ``world_size`` rows."""
        if self.world_size == 1:
            return global_batch
        n = len(global_batch)
        return global_batch[self.rank * n // self.world_size:(self.rank + 1) * n // self.world_size]

    def __iter__(self):
        # each batch carries (seed, epoch, batch index, rank): a collator's random numbers derive from it
        for index, batch in enumerate(self.global_batches(self.epoch)[self.start_batch:], self.start_batch):
            yield KeyedBatch(self.shard(batch), (self.seed, self.epoch, index, self.rank))

    def num_batches(self, epoch: int) -> int:
        """Batches (per rank, one per global batch) in ``epoch``, before any resume skip."""
        full, rest = divmod(self.num_samples, self.batch_size * self.world_size)
        return full + (1 if rest and not self.drop_last and rest >= self.world_size else 0)

    def __len__(self) -> int:
        return self.num_batches(self.epoch)


MEGABATCH_BATCHES = 50  # batches per length-sorted chunk (transformers' LengthGroupedSampler uses 50)


def _group_by_length(perm: list[int], lengths, batch_size: int, generator) -> list[int]:
    """HF's megabatch scheme: sort chunks of 50 batches by length (longest first), cut them into
    batches, put the batch holding the longest row first (an out-of-memory shows at once) and
    shuffle the others. A last, partial batch stays last, so every other batch keeps its rows together
    when the order is cut into batches of ``batch_size`` (or ``batch_size`` / accumulation steps)."""
    mega = batch_size * MEGABATCH_BATCHES
    chunks = [sorted(perm[i:i + mega], key=lambda j: -lengths[j]) for i in range(0, len(perm), mega)]
    batches = [c[i:i + batch_size] for c in chunks for i in range(0, len(c), batch_size)]
    tail = [batches.pop()] if len(batches) > 1 and len(batches[-1]) < batch_size else []
    if len(batches) > 1:
        longest = max(range(len(batches)), key=lambda b: lengths[batches[b][0]])
        batches[0], batches[longest] = batches[longest], batches[0]
        rest = batches[1:]
        idx = torch.randperm(len(rest), generator=generator).tolist()
        batches = [batches[0]] + [rest[i] for i in idx]
    return [i for b in batches + tail for i in b]


class TokenBudgetBatchSampler(ResumableBatchSampler):
    """Batches with a variable number of rows and at most ``max_tokens`` padded tokens per rank.

    Every epoch (a pure function of ``seed`` and the epoch number):

    1. a seeded permutation of the rows (``shuffle=False``: the data order);
    2. with ``shuffle``: chunks of about ``megabatch_batches`` batches' worth of rows are sorted by
       length, longest first, so that a batch holds rows of similar length (little padding) while
       which rows meet still changes every epoch;
    3. rows are taken greedily into a global batch while ``ceil(rows / world_size) * longest`` stays
       within ``max_tokens`` (``longest`` = the longest row rounded up to ``pad_to_multiple_of``, as
       the collator pads it); rank r gets the r-th contiguous, balanced share, so no rank exceeds the
       budget and the ranks' shares together are exactly the global batch;
    4. with ``shuffle``: the batch with the longest row comes first (an out-of-memory error shows in
       the first step), the others in a seeded random order.

    Every row is used exactly once per epoch, except under DDP a final batch with fewer rows than
    ranks (at most ``world_size - 1`` rows) which is dropped. A row longer than the budget is an
    error (truncate the data or raise the budget). ``drop_last`` has no other effect here.
    """

    variable_batches = True

    def __init__(self, lengths: Sequence[int] | np.ndarray, max_tokens: int, *, shuffle: bool = True, seed: int = 0,
                 world_size: int = 1, rank: int = 0, pad_to_multiple_of: int | None = None,
                 drop_last: bool = False, megabatch_batches: int = 50) -> None:
        lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
        super().__init__(len(lengths), 1, shuffle=shuffle, seed=seed, drop_last=drop_last,
                         world_size=world_size, rank=rank, lengths=lengths, group_by_length=shuffle)
        if max_tokens < 1:
            raise ValueError(f"max_tokens_per_batch={max_tokens!r} must be a positive number of padded tokens.")
        self.max_tokens = int(max_tokens)
        self.pad_to_multiple_of = int(pad_to_multiple_of) if pad_to_multiple_of else None
        self.padded_lengths = _round_up(np.maximum(lengths, 1), self.pad_to_multiple_of)
        too_long = np.flatnonzero(self.padded_lengths > self.max_tokens)
        if len(too_long):
            from ..errors import ConfigError
            i = int(too_long[0])
            raise ConfigError(
                f"max_tokens_per_batch={self.max_tokens} is smaller than {len(too_long)} row(s) of the training "
                f"set (row {i} pads to {int(self.padded_lengths[i])} tokens"
                + (f" with pad_to_multiple_of={self.pad_to_multiple_of}" if self.pad_to_multiple_of else "")
                + f"; the longest to {int(self.padded_lengths.max())}). Raise max_tokens_per_batch to at least "
                  f"{int(self.padded_lengths.max())} or truncate the rows (tokenizer(..., truncation=True, "
                  f"max_length=...)).")
        mean = float(self.padded_lengths.mean()) if len(lengths) else 1.0
        rows_per_batch = max(1, int(self.max_tokens // max(mean, 1.0)) * world_size)
        self.megabatch_rows = max(1, rows_per_batch * megabatch_batches)
        self._cache: OrderedDict[int, list[list[int]]] = OrderedDict()

    def global_batches(self, epoch: int) -> list[list[int]]:
        if epoch in self._cache:
            self._cache.move_to_end(epoch)
            return self._cache[epoch]
        batches = self._make_batches(epoch)
        self._cache[epoch] = batches
        while len(self._cache) > 4:
            self._cache.popitem(last=False)
        return batches

    def _make_batches(self, epoch: int) -> list[list[int]]:
        n = self.num_samples
        padded = self.padded_lengths
        g = self._generator(epoch)
        if self.shuffle:
            order = torch.randperm(n, generator=g).numpy()
            parts = []
            for i in range(0, n, self.megabatch_rows):
                chunk = order[i:i + self.megabatch_rows]
                parts.append(chunk[np.argsort(-padded[chunk], kind="stable")])
            order = np.concatenate(parts) if parts else order
        else:
            order = np.arange(n)
        world, budget = self.world_size, self.max_tokens
        batches: list[list[int]] = []
        current: list[int] = []
        longest = 0
        for i, p in zip(order.tolist(), padded[order].tolist()):
            new_longest = p if p > longest else longest
            if current and -(-(len(current) + 1) // world) * new_longest > budget:
                batches.append(current)
                current, new_longest = [], p
            current.append(i)
            longest = new_longest
        if current:
            batches.append(current)
        if batches and len(batches[-1]) < world:
            batches.pop()  # cannot give every rank a row
        if self.shuffle and len(batches) > 1:
            first = max(range(len(batches)), key=lambda b: (int(padded[batches[b]].max()), -b))
            rest = batches[:first] + batches[first + 1:]
            idx = torch.randperm(len(rest), generator=g).tolist()
            batches = [batches[first]] + [rest[k] for k in idx]
        return batches

    def num_batches(self, epoch: int) -> int:
        return len(self.global_batches(epoch))

    def padded_tokens(self, batch: list[int]) -> int:
        """Tokens the collator produces for ``batch`` (rows x longest padded row)."""
        return len(batch) * int(self.padded_lengths[batch].max()) if len(batch) else 0


def _round_up(values: np.ndarray, multiple: int | None) -> np.ndarray:
    if not multiple:
        return values
    return -(-values // multiple) * multiple


class EpochPlan:
    """Optimizer steps per epoch for a batch sampler whose number of batches may change from epoch
    to epoch (token budgets): the total steps for ``num_train_epochs`` (the LR schedule's length),
    the epochs needed for ``max_steps``, and where a global step falls (resume)."""

    def __init__(self, sampler: Sized, gradient_accumulation_steps: int = 1) -> None:
        self.sampler = sampler
        self.accum = gradient_accumulation_steps
        self._steps: dict[int, int] = {}

    def steps(self, epoch: int) -> int:
        if not getattr(self.sampler, "variable_batches", False):
            epoch = 0
        if epoch not in self._steps:
            batches = self.sampler.num_batches(epoch) if hasattr(self.sampler, "num_batches") else len(self.sampler)
            self._steps[epoch] = max(1, math.ceil(batches / self.accum))
        return self._steps[epoch]

    def total_steps(self, num_train_epochs: float) -> int:
        if not getattr(self.sampler, "variable_batches", False):
            return math.ceil(num_train_epochs * self.steps(0))
        whole = int(math.floor(num_train_epochs))
        total = sum(self.steps(e) for e in range(whole))
        frac = num_train_epochs - whole
        return total + (math.ceil(frac * self.steps(whole)) if frac > 0 else 0)

    def num_epochs(self, max_steps: int, exact_limit: int = 1000) -> int:
        """Epochs needed to reach ``max_steps`` (exact for the first ``exact_limit`` epochs, then a
        generous estimate; the training loop stops at ``max_steps`` anyway)."""
        if not getattr(self.sampler, "variable_batches", False):
            return math.ceil(max_steps / self.steps(0))
        total, epoch, fewest = 0, 0, None
        while total < max_steps:
            if epoch >= exact_limit:
                return epoch + 2 * math.ceil((max_steps - total) / max(1, fewest))
            s = self.steps(epoch)
            fewest = s if fewest is None else min(fewest, s)
            total += s
            epoch += 1
        return max(epoch, 1)

    def locate(self, global_step: int) -> tuple[int, int]:
        """(epoch, optimizer steps already done in that epoch) for a run at ``global_step``."""
        if not getattr(self.sampler, "variable_batches", False):
            return divmod(global_step, self.steps(0))
        epoch = 0
        while global_step >= self.steps(epoch):
            global_step -= self.steps(epoch)
            epoch += 1
        return epoch, global_step


class EvalBatchSampler(torch.utils.data.Sampler):
    """Batches for evaluate/predict, the same batches whatever the number of ranks.

    The rows are cut into batches exactly as one process would cut them (in dataset order, or with
    ``lengths`` sorted by length, longest first, so that a batch holds rows of similar length: little
    padding; with ``fill_to_longest`` a batch of shorter rows takes more rows, up to the padded tokens
    of ``batch_size`` longest rows and ``max_rows``, so the eval batch size bounds memory, not rows);
    rank r then takes a contiguous, balanced run of those batches. So every row is computed
    in the same batch as in a single process (bit-identical outputs, identical metrics), and the ranks'
    outputs concatenated in rank order are the single-process outputs. ``inverse_order`` (None when
    unsorted, the same on every rank) indexes that concatenation (gathered over all ranks) back into
    dataset order.

    With several ranks every rank yields the same number of batches, so that all run the same number
    of forward passes (FSDP2 gathers parameters in each one; DDP may sync buffers): a rank with fewer
    batches repeats a one-row padding batch, which the evaluation loop runs and drops (the batches
    after ``num_real_batches``). A rank can thus have no real row at all (fewer batches than ranks).
    """

    def __init__(self, num_samples: int, batch_size: int, world_size: int = 1, rank: int = 0,
                 lengths: Sequence[int] | np.ndarray | None = None, fill_to_longest: bool = False,
                 pad_to_multiple_of: int | None = None,
                 max_rows: int | None = None, fill_max_tokens: int | None = None) -> None:
        self.batch_size = batch_size
        order = np.arange(num_samples)
        self.inverse_order = None
        sorted_lengths = None
        if lengths is not None and num_samples > 1:
            lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
            if len(lengths) == num_samples and lengths.min() != lengths.max():
                order = np.argsort(-lengths, kind="stable")
                self.inverse_order = np.argsort(order, kind="stable")
                sorted_lengths = _round_up(np.maximum(lengths[order], 1), pad_to_multiple_of)
        if fill_to_longest and sorted_lengths is not None:
            bounds = _fill_batches(sorted_lengths, batch_size, max_rows or 8 * batch_size, fill_max_tokens)
        else:
            bounds = [(i, i + batch_size) for i in range(0, num_samples, batch_size)]
        order = order.tolist()
        batches = [order[a:b] for a, b in bounds]
        per_rank, rest = divmod(len(batches), world_size)
        first = rank * per_rank + min(rank, rest)
        self.batches = batches[first:first + per_rank + (1 if rank < rest else 0)]
        self.num_real_batches = len(self.batches)
        most = per_rank + (1 if rest else 0) if world_size > 1 else len(self.batches)
        self.num_padding_batches = most - len(self.batches)
        # the padding batch: one row (the shortest when sorted), run and dropped
        self.padding_batch = [order[-1]] if order else []
        self.indices = [i for b in self.batches for i in b]

    def __iter__(self):
        yield from self.batches
        if self.padding_batch:
            for _ in range(self.num_padding_batches):
                yield list(self.padding_batch)

    def __len__(self):
        return self.num_real_batches + (self.num_padding_batches if self.padding_batch else 0)


def _fill_batches(sorted_lengths, batch_size: int, max_rows: int,
                  max_tokens: int | None = None) -> list[tuple[int, int]]:
    """Cut rows sorted longest first into batches of at most ``batch_size x longest row`` padded tokens:
    the first batch is ``batch_size`` rows of the longest length (the memory the user sized the eval
    batch for), later batches of shorter rows take more rows (at most ``max_rows``) in the same memory.
    ``max_tokens`` lowers that budget (never below ``batch_size`` rows): on a CPU, batches beyond a few
    thousand tokens run slower per row, so there only small batches are filled."""
    budget = batch_size * int(sorted_lengths[0])
    if max_tokens:
        budget = min(budget, int(max_tokens))
    n, start, out = len(sorted_lengths), 0, []
    while start < n:
        rows = max(batch_size, min(max_rows, budget // int(sorted_lengths[start])))
        out.append((start, min(start + rows, n)))
        start += rows
    return out


def restore_order(outputs: Any, inverse_order: np.ndarray | None, objects: bool = False) -> Any:
    """Put outputs concatenated in sorted order (numpy arrays, possibly nested in tuples/lists/dicts)
    back in dataset order. Arrays whose first dimension is not the number of rows are left as is. With ``objects``
    (``eval_use_gather_object``) a list of one object per row is reordered as a whole."""
    if outputs is None or inverse_order is None:
        return outputs
    if objects and isinstance(outputs, list) and len(outputs) == len(inverse_order):
        return [outputs[i] for i in inverse_order]
    if isinstance(outputs, (list, tuple)):
        return type(outputs)(restore_order(o, inverse_order, objects) for o in outputs)
    if isinstance(outputs, Mapping):
        return {k: restore_order(v, inverse_order, objects) for k, v in outputs.items()}
    if isinstance(outputs, np.ndarray) and outputs.ndim >= 1 and outputs.shape[0] == len(inverse_order):
        return outputs[inverse_order]
    return outputs


# --------------------------------------------------------------------------------------- lengths
_LENGTH_CACHE: OrderedDict = OrderedDict()


def dataset_lengths(dataset: Any, length_column_name: str = "length", *,
                    allow_slow: bool = True) -> np.ndarray | None:
    """Row lengths (a numpy int64 array) from the length column, else ``len(input_ids)``, or None.

    ``datasets.Dataset``: read from the Arrow column (no Python rows are built; about 10 ms for
    67k rows), cached by the dataset's fingerprint, so repeated evaluations pay once. A list of
    dicts: ``len(row["input_ids"])``. Any other map-style dataset is indexed row by row only when
    ``allow_slow`` (training with group_by_length / a token budget asks for it); evaluation passes
    ``allow_slow=False`` and then does not sort.
    """
    columns = getattr(dataset, "column_names", None)
    if isinstance(columns, list):
        key = getattr(dataset, "_fingerprint", None)
        cache_key = (key, length_column_name, len(dataset)) if key else None
        if cache_key is not None and cache_key in _LENGTH_CACHE:
            _LENGTH_CACHE.move_to_end(cache_key)
            return _LENGTH_CACHE[cache_key]
        lengths = _arrow_lengths(dataset, length_column_name, columns)
        if lengths is not None and cache_key is not None:
            _LENGTH_CACHE[cache_key] = lengths
            while len(_LENGTH_CACHE) > 16:
                _LENGTH_CACHE.popitem(last=False)
        return lengths
    if isinstance(dataset, (list, tuple)):
        return _row_lengths(dataset, length_column_name)
    if not allow_slow:
        return None
    return _row_lengths(dataset, length_column_name)


def _row_lengths(dataset, length_column_name: str):
    try:
        first = dataset[0] if len(dataset) else None
        if not isinstance(first, Mapping):
            return None
        if length_column_name in first:
            return np.asarray([dataset[i][length_column_name] for i in range(len(dataset))], dtype=np.int64)
        if "input_ids" in first:
            return np.asarray([len(dataset[i]["input_ids"]) for i in range(len(dataset))], dtype=np.int64)
    except Exception:
        return None
    return None


def _arrow_lengths(dataset, length_column_name: str, columns: list[str]):
    name = length_column_name if length_column_name in columns else "input_ids" if "input_ids" in columns else None
    if name is None:
        return None
    try:  # fast path: the Arrow table and the indices mapping of select()/shuffle()
        import pyarrow.compute as pc
        column = dataset.data.column(name)
        values = column.to_numpy() if name == length_column_name else \
            pc.list_value_length(column).to_numpy(zero_copy_only=False)
        indices = getattr(dataset, "_indices", None)
        if indices is not None:
            values = values[indices.column(0).to_numpy()]
        values = np.asarray(values, dtype=np.int64)
        if len(values) == len(dataset):
            return values
    except Exception:
        pass
    if name == length_column_name:
        return np.asarray(list(dataset[name]), dtype=np.int64)
    return np.asarray([len(x) for x in dataset[name]], dtype=np.int64)


def collator_padding(collator: Any) -> tuple[int | None, int | None]:
    """(pad_to_multiple_of, fixed padded length or None) of a padding collator, looking through
    wrappers that keep the wrapped collator in ``data_collator`` (RemoveColumnsCollator). Behind a
    wrapper that trims padding (data/trim.py) no length is fixed."""
    seen, trimmed = 0, False
    while hasattr(collator, "data_collator") and seen < 8:
        trimmed = trimmed or getattr(collator, "trims_padding", False)  # data/trim.py: the model gets real widths
        collator, seen = collator.data_collator, seen + 1
    multiple = getattr(collator, "pad_to_multiple_of", None)
    fixed = None
    pads_to_max = getattr(collator, "padding", None) == "max_length" or \
        type(collator).__name__ == "DataCollatorForPackedRows"
    if pads_to_max and not trimmed and getattr(collator, "max_length", None):
        fixed = int(collator.max_length)
    return (int(multiple) if multiple else None), fixed


# Collators that turn every feature into exactly one output row (so outputs can be re-ordered row by
# row after a length-sorted evaluation). Packing/flattening collators are not among them.
ROW_PRESERVING_COLLATORS = ("DataCollatorWithPadding", "default_data_collator", "DataCollatorForTokenClassification",
                            "DataCollatorForSeq2Seq", "DataCollatorForLanguageModeling",
                            "DataCollatorForWholeWordMask", "DefaultDataCollator")


def is_row_preserving(collator: Any) -> bool:
    seen = 0
    while hasattr(collator, "data_collator") and seen < 8:
        collator, seen = collator.data_collator, seen + 1
    name = getattr(collator, "__name__", None) or type(collator).__name__
    return name in ROW_PRESERVING_COLLATORS
