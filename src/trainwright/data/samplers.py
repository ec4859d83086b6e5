"""Deterministic, resumable, shardable batch order.

The order of an epoch is a pure function of (seed, epoch): a seeded permutation cut into global
batches of ``batch_size * world_size`` rows; rank r reads rows [r*batch_size, (r+1)*batch_size) of
each global batch, so 2 ranks x 8 see exactly what 1 process x 16 sees. Resuming sets the start
batch and jumps there directly: nothing before it is loaded or replayed.
"""
from __future__ import annotations

import math

import torch


class ResumableBatchSampler(torch.utils.data.Sampler):
    def __init__(self, num_samples: int, batch_size: int, *, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False, world_size: int = 1, rank: int = 0,
                 lengths: list[int] | None = None, group_by_length: bool = False):
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.world_size = world_size
        self.rank = rank
        self.lengths = lengths
        self.group_by_length = group_by_length
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch = epoch
        self.start_batch = start_batch

    def order(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.num_samples))
        g = torch.Generator()
        g.manual_seed(self.seed + epoch)
        perm = torch.randperm(self.num_samples, generator=g).tolist()
        if self.group_by_length and self.lengths is not None:
            perm = _group_by_length(perm, self.lengths, self.batch_size * self.world_size, g)
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
        if self.world_size == 1:
            return global_batch
        per_rank = math.ceil(len(global_batch) / self.world_size)
        return global_batch[self.rank * per_rank:(self.rank + 1) * per_rank]

    def __iter__(self):
        for batch in self.global_batches(self.epoch)[self.start_batch:]:
            yield self.shard(batch)

    def __len__(self) -> int:
        full, rest = divmod(self.num_samples, self.batch_size * self.world_size)
        return full + (1 if rest and not self.drop_last and rest >= self.world_size else 0)


def _group_by_length(perm: list[int], lengths: list[int], batch_size: int, generator) -> list[int]:
    """HF's megabatch scheme: sort chunks of 50 batches by length, keep the longest batch first."""
    mega = batch_size * 50
    chunks = [sorted(perm[i:i + mega], key=lambda j: -lengths[j]) for i in range(0, len(perm), mega)]
    batches = [c[i:i + batch_size] for c in chunks for i in range(0, len(c), batch_size)]
    if len(batches) > 1:
        longest = max(range(len(batches)), key=lambda b: lengths[batches[b][0]])
        batches[0], batches[longest] = batches[longest], batches[0]
        rest = batches[1:]
        idx = torch.randperm(len(rest), generator=generator).tolist()
        batches = [batches[0]] + [rest[i] for i in idx]
    return [i for b in batches for i in b]


class EvalBatchSampler(torch.utils.data.Sampler):
    """Sequential batches (optionally sharded contiguously across ranks) for evaluate/predict."""

    def __init__(self, num_samples: int, batch_size: int, world_size: int = 1, rank: int = 0):
        per_rank = math.ceil(num_samples / world_size)
        start, stop = rank * per_rank, min(num_samples, (rank + 1) * per_rank)
        self.indices = list(range(start, max(start, stop)))
        self.batch_size = batch_size

    def __iter__(self):
        for i in range(0, len(self.indices), self.batch_size):
            yield self.indices[i:i + self.batch_size]

    def __len__(self):
        return math.ceil(len(self.indices) / self.batch_size)
