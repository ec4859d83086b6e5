"""Random numbers drawn while a training batch is built (MLM masking, whole-word masking, random augmentations in
a dataset transform) derive from (seed, epoch, batch index, rank), never from which DataLoader worker builds the
batch or what that process drew before. So a resumed run (which starts fresh workers at a later batch) and a run
with any ``dataloader_num_workers`` build exactly the batches of an uninterrupted run.

How: the train batch sampler yields each batch's row indices as a :class:`KeyedBatch` (a list carrying its key);
:class:`BatchKeyedDataset` hands that key, with the indices, to :class:`SeededCollator`, which reads the rows and
calls the user's collator inside :func:`batch_rng`: python's ``random``, numpy's global RNG and torch's CPU
generator are seeded from the key, and a collator's private generators (``seed=...`` of transformers' and
trainwright's ``DataCollatorForLanguageModeling``) are re-seeded from the key and their own seed. In the main
process the training loop's RNG streams (dropout) do not see the collator's draws. Cost: about 10 microseconds per
batch. Nothing changes for the user: same collator, same dataset, same arguments. (Iterable datasets have no batch
index: their collators draw as before.)
"""
from __future__ import annotations

import contextlib
import os
import random
import types
from typing import Any

import numpy as np
import torch

from ..errors import TrainwrightError

_MASK = (1 << 64) - 1


class KeyedBatch(list):
    """A batch's row indices, with ``key = (seed, epoch, batch index, rank)``."""

    def __init__(self, indices: Any, key: Any) -> None:
        super().__init__(indices)
        self.key = key


def _mix(x: int) -> int:  # splitmix64's finaliser
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def batch_seed(key: Any) -> int:
    """A 64-bit seed from a tuple of ints."""
    x = 0
    for value in key:
        x = _mix(x ^ (int(value) & _MASK))
    return x


class PendingRows:
    """The rows of a keyed batch, read by the collator wrapper inside the seeded scope."""
    __slots__ = ("dataset", "indices", "key")

    def __init__(self, dataset: Any, indices: Any, key: Any) -> None:
        self.dataset, self.indices, self.key = dataset, indices, key

    def fetch(self) -> list:
        getitems = getattr(self.dataset, "__getitems__", None)
        if getitems is not None:
            return getitems(list(self.indices))
        return [self.dataset[i] for i in self.indices]

    def __len__(self):
        return len(self.indices)


class BatchKeyedDataset(torch.utils.data.Dataset):
    """The train dataset as the DataLoader sees it: rows as before, and a keyed batch passed on with its key.
    Attributes the wrapper does not have are read from the wrapped dataset (``dataloader.dataset.column_names``)."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        return self.dataset[index]

    def __getitems__(self, indices):
        key = getattr(indices, "key", None)
        if key is None:
            return PendingRows(self.dataset, indices, None).fetch()
        return PendingRows(self.dataset, indices, key)

    def __getattr__(self, name):
        inner = self.__dict__.get("dataset")
        if inner is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(inner, name)


class SeededCollator:
    """Reads a keyed batch's rows and collates them with the RNGs seeded from the batch's key. Plain row lists (the
    pre-flight checks, a user calling the collate function) go straight to the wrapped collator."""

    def __init__(self, data_collator: Any) -> None:
        self.data_collator = data_collator  # the name other code looks through (RemoveColumnsCollator's too)

    def __call__(self, features: PendingRows | list[Any]) -> Any:
        if not isinstance(features, PendingRows):
            return self.data_collator(features)
        with batch_rng(batch_seed(features.key), self.data_collator):
            rows = features.fetch()
            try:
                return self.data_collator(rows)
            except TrainwrightError:
                raise
            except Exception as e:  # name the rows (and a None in them), not just the collator's internals
                from .input_checks import collate_failure
                raise collate_failure(e, rows, features.indices, "train_dataset", self.data_collator, None) from e


def with_batch_seeds(dataset: Any, collator: Any) -> tuple:
    """(dataset, collate_fn) for a map-style train DataLoader whose batch sampler yields :class:`KeyedBatch`."""
    return BatchKeyedDataset(dataset), SeededCollator(collator)


def unwrap_dataset(dataset: Any) -> Any:
    return dataset.dataset if isinstance(dataset, BatchKeyedDataset) else dataset


@contextlib.contextmanager
def batch_rng(seed: int, collator: Any=None) -> Any:
    """python/numpy/torch-CPU global RNGs seeded from ``seed`` inside, and the collator's private generators
    re-seeded. In the main process (``dataloader_num_workers=0``) the loop's RNG streams are kept apart from the
    collator's draws: python's and torch's states are put back afterwards; numpy's (whose state takes ~50 us to
    read and write) is re-seeded from one number drawn from it before, so it stays a function of its own past only.
    A DataLoader worker's RNGs serve nothing else and are left as the batch left them."""
    main = torch.utils.data.get_worker_info() is None
    if main:
        py_state, torch_state = random.getstate(), torch.default_generator.get_state()
        np_next = int(np.random.randint(0, 2**32, dtype=np.int64))
    random.seed(seed)
    np.random.seed(seed >> 32)
    torch.default_generator.manual_seed(seed)
    _reseed_private_generators(collator, seed)
    try:
        yield
    finally:
        if main:
            random.setstate(py_state)
            torch.default_generator.set_state(torch_state)
            np.random.seed(np_next)


def _collator_chain(collator):
    obj, seen = collator, 0
    while obj is not None and seen < 8:
        if not isinstance(obj, (types.FunctionType, types.MethodType, types.BuiltinFunctionType)):
            yield obj
        obj, seen = getattr(obj, "data_collator", None), seen + 1


def _reseed_private_generators(collator, seed: int) -> None:
    for obj in _collator_chain(collator):
        own = getattr(obj, "seed", None)
        if not isinstance(own, int) or isinstance(own, bool):
            continue
        _ensure_generator(obj)
        mixed = batch_seed((seed, own))
        for value in list(vars(obj).values()):
            if isinstance(value, torch.Generator):
                value.manual_seed(mixed)
            elif isinstance(value, np.random.Generator):
                value.bit_generator.state = type(value.bit_generator)(mixed).state


def _ensure_generator(obj) -> None:
    """Have the collator create its lazily made generator for this process now, so that it is re-seeded before its
    first batch too (trainwright's ``_get_generator``, transformers' ``create_rng``)."""
    getter = getattr(obj, "_get_generator", None)
    if callable(getter):
        getter()
        return
    create = getattr(obj, "create_rng", None)
    current = getattr(obj, "generator", None)
    if callable(create) and (not isinstance(current, (torch.Generator, np.random.Generator))
                             or getattr(obj, "_generator_pid", os.getpid()) != os.getpid()):
        create()
