"""The process-level parallelism the training loop needs, and nothing more: the device, the ranks, DDP, the
collectives, and the views a checkpoint is written from. In a plain single process every method is a cheap no-op, so
the loop reads the same either way; FSDP2 sharding lives in :mod:`.fsdp`, the process group in
:mod:`.process_group`.
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import Any

import torch

from ..errors import ConfigError
from .fsdp import FSDPPlan, activation_checkpointing_on
from .process_group import default_store, ensure_process_group, install_failure_report

logger = logging.getLogger("trainwright")

# how long rank 0 waits for the other ranks to join a call that FSDP2 makes collective (save_model), in seconds
EVERY_RANK_CHECK_S = 60.0


def select_device(args: Any) -> torch.device:
    """cuda (this process's local rank), then mps, then cpu; use_cpu=True forces the CPU."""
    if getattr(args, "use_cpu", False):
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


class Distributed:
    """What the loop needs from torch.distributed, and nothing more."""

    def __init__(self, args: Any, device: torch.device) -> None:
        self.args = args
        self.device = device
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", str(self.world_size)))
        self.enabled = self.world_size > 1
        self.fsdp = FSDPPlan(getattr(args, "fsdp", None), getattr(args, "fsdp_config", None))
        self.sharded = False  # True once the model was sharded with FSDP2
        self._created_group = False
        if self.fsdp.enabled and not self.enabled:
            logger.warning("fsdp=%r is ignored in a single process: launch with torchrun --nproc_per_node=N to shard.",
                           getattr(args, "fsdp", None))
        if self.fsdp.enabled and self.enabled and getattr(args, "save_on_each_node", False):
            raise ConfigError("save_on_each_node=True is not supported with fsdp: the full state is gathered on rank 0 "
                              "only. Put output_dir on a filesystem every node sees, and drop save_on_each_node.")
        if self.enabled:
            self._init_process_group()
            self._quiet_replicas()
            install_failure_report(self.rank, self.local_rank, self.world_size)

    @property
    def is_main_process(self) -> bool:
        return self.rank == 0

    def _init_process_group(self):
        self._created_group = ensure_process_group(self.args, self.device)

    def _quiet_replicas(self):
        """log_level_replica (default "warning") for every rank but 0, as transformers."""
        level = getattr(self.args, "log_level" if self.is_main_process else "log_level_replica", "passive")
        if level and level != "passive":
            value = logging.getLevelName(str(level).upper())
            if isinstance(value, int):
                logger.setLevel(value)
                logging.getLogger("transformers").setLevel(value)

    # ---------------------------------------------------------------- model wrapping
    def wrap_model(self, model: torch.nn.Module, precision: Any = None) -> torch.nn.Module:
        """The model to train: in a single process ``model`` itself; under torchrun sharded with FSDP2 (``fsdp=``,
        mixed precision from ``precision``) or wrapped in DDP."""
        if not self.enabled:
            return model
        from torch.distributed.fsdp import FSDPModule
        if self.fsdp.enabled or isinstance(model, FSDPModule):  # (or sharded by the user's own script)
            return self._fully_shard(model, precision)
        from torch.nn.parallel import DistributedDataParallel as DDP
        kwargs = {}
        find_unused = self.args.ddp_find_unused_parameters
        if find_unused is None and hasattr(model, "gradient_checkpointing_enable"):
            # transformers' default for its models: find unused parameters unless gradient checkpointing is on
            find_unused = not activation_checkpointing_on(model)
        if find_unused is not None:
            kwargs["find_unused_parameters"] = find_unused
        if self.args.ddp_bucket_cap_mb is not None:
            kwargs["bucket_cap_mb"] = self.args.ddp_bucket_cap_mb
        if self.args.ddp_broadcast_buffers is not None:
            kwargs["broadcast_buffers"] = self.args.ddp_broadcast_buffers
        if self.args.ddp_static_graph is not None:
            kwargs["static_graph"] = self.args.ddp_static_graph
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DDP(model, device_ids=device_ids, **kwargs)

    def _fully_shard(self, model, precision):
        from torch.distributed.fsdp import FSDPModule

        from .fsdp import shard_model
        if isinstance(model, FSDPModule):  # train() called again, or sharded by the user: keep it
            self.sharded = True
            return model
        if self.fsdp.hybrid and self.world_size % self.local_world_size:
            raise ConfigError(f"fsdp={self.args.fsdp!r} needs the same number of processes on every node "
                              f"(world size {self.world_size}, {self.local_world_size} on this node).")
        shape = (self.world_size // self.local_world_size, self.local_world_size) if self.fsdp.hybrid \
            else (self.world_size,)
        policy = precision.fsdp_policy(self.fsdp.reduce_dtype) if precision is not None else None
        shard_model(model, self.fsdp, mesh_shape=shape, device=self.device, mp_policy=policy, log=self.is_main_process)
        self.sharded = True
        return model

    def check_optimizer(self, optimizer: Any, model: Any) -> None:
        """An optimizer built before FSDP2 sharded the model holds the old, unsharded parameters."""
        if self.sharded:
            from .fsdp import check_optimizer
            check_optimizer(optimizer, unwrap_model(model))

    def no_sync(self, model: Any, skip: bool) -> contextlib.AbstractContextManager:
        """Skip the gradient all-reduce on micro-steps that are not the last of an accumulation."""
        if not self.enabled:
            return contextlib.nullcontext()
        if hasattr(model, "set_requires_gradient_sync"):  # FSDP2 (also under torch.compile, by attribute)
            model.set_requires_gradient_sync(not skip)
            return contextlib.nullcontext()
        if skip and hasattr(model, "no_sync"):
            return model.no_sync()
        return contextlib.nullcontext()

    def shard_iterable(self, dataset: Any, batch_size: int) -> Any:
        """An iterable training set read by every rank: each rank keeps its share of every global batch."""
        if not self.enabled:
            return dataset
        return IterableShard(dataset, batch_size, self.world_size, self.rank)

    # ---------------------------------------------------------------- checkpoints
    def state_for_saving(self, model: Any, optimizer: Any = None) -> tuple:
        """(model, optimizer) to hand to checkpoint.save_checkpoint / save_model_dir on the writing rank.

        Under FSDP2 this is collective (every rank must call it): the full state is gathered to rank 0's
        CPU memory. Otherwise the unwrapped model and the optimizer themselves."""
        if not self.sharded:
            return unwrap_model(model), optimizer
        from .fsdp import gather_full_state
        return gather_full_state(unwrap_model(model), optimizer)

    def state_for_loading(self, model: Any, optimizer: Any = None) -> tuple:
        """(model, optimizer) to hand to checkpoint.load_checkpoint / load_model_weights. Under FSDP2 every
        rank must load (each reads the full state and keeps its own shard)."""
        if not self.sharded:
            return unwrap_model(model), optimizer
        from .fsdp import loading_views
        return loading_views(unwrap_model(model), optimizer)

    # ---------------------------------------------------------------- collectives
    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            import torch.distributed as dist
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def mean_over_ranks(self, tensor: torch.Tensor) -> torch.Tensor:
        """The mean of a (device) tensor over the ranks; no host synchronisation."""
        if not self.enabled:
            return tensor
        tensor = tensor.detach().clone()
        self.all_reduce_sum(tensor)
        return tensor / self.world_size

    def all_true(self, flag: bool) -> bool:
        """Whether ``flag`` holds on every rank (collective; also a barrier)."""
        if not self.enabled:
            return bool(flag)
        import torch.distributed as dist
        t = torch.tensor(1 if flag else 0, dtype=torch.int32, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return bool(t.item())

    def agreed_signal(self, signum: int | None) -> int | None:
        """The stop signal any rank received (None if none did), the same on every rank, so that all
        ranks stop and checkpoint at the same step. One tiny all-reduce on a CPU (gloo) group per step:
        the host waits for the other hosts, never for the GPU."""
        if not self.enabled:
            return signum
        import torch.distributed as dist
        flag = torch.tensor([int(signum or 0)], dtype=torch.int32)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self._cpu_group())
        return int(flag.item()) or None

    def _cpu_group(self):
        import torch.distributed as dist
        if dist.get_backend() == "gloo":
            return None  # the default group already works on CPU tensors
        if getattr(self, "_gloo_group", None) is None:  # created lazily, at the same step on every rank
            self._gloo_group = dist.new_group(backend="gloo", timeout=self.args.ddp_timeout_delta)
        return self._gloo_group

    def check_every_rank_calls(self, what: str) -> None:
        """Before a public method that is collective only because FSDP2 must gather the full state (save_model):
        make sure every rank called it, instead of hanging until ddp_timeout when only rank 0 did (as after
        ``if trainer.is_world_process_zero(): trainer.save_model()``, which is fine under DDP).

        No collective that could hang: the calls are numbered rounds on the process group's key-value store (the
        c10d store torchrun set up). Each rank counts itself in; rank 0 waits for all of them at most
        EVERY_RANK_CHECK_S seconds (or ddp_timeout if shorter) and posts the verdict, which the others read. A round
        rank 0 gave up on is skipped by a rank that arrives later (it was not that rank's call), so the next call
        made on every rank meets again. A no-op unless the model is sharded."""
        if not (self.enabled and self.sharded):
            return
        store = default_store()
        if store is None:
            return
        rounds = self.__dict__.setdefault("_every_rank_rounds", {})
        timeout = min(EVERY_RANK_CHECK_S, float(getattr(self.args, "ddp_timeout", EVERY_RANK_CHECK_S)))
        fix = (f"Call trainer.{what}() on every rank (drop the `if trainer.is_world_process_zero():` around it): "
               f"with fsdp the full state is gathered from all ranks, and only rank 0 writes the files.")
        while True:
            rounds[what] = n = rounds.get(what, 0) + 1
            key = f"trainwright/every_rank/{what}/{n}"
            store.add(key, 1)
            if self.rank != 0:
                if store.get(key + "/verdict") == b"ok":
                    return
                continue  # rank 0 gave up on this round before this rank came: meet it at the next one
            deadline = time.monotonic() + timeout
            while (arrived := store.add(key, 0)) < self.world_size:
                if time.monotonic() > deadline:
                    store.set(key + "/verdict", "missing")
                    raise ConfigError(f"{what}() with fsdp={self.args.fsdp!r} was called on rank 0, but only "
                                      f"{arrived} of {self.world_size} ranks called it within {timeout:.0f} s. {fix}")
                time.sleep(0.02)
            store.set(key + "/verdict", "ok")
            return

    def all_gather_objects(self, obj: Any) -> list:
        if not self.enabled:
            return [obj]
        import torch.distributed as dist
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out


class IterableShard(torch.utils.data.IterableDataset):
    """This rank's rows of a stream that every rank reads in the same order: of each run of
    ``batch_size x world_size`` rows (a global batch), rank r keeps the r-th contiguous, balanced share,
    as the map-style sampler does; a last run with fewer rows than ranks is dropped (no empty batch)."""

    def __init__(self, dataset: Any, batch_size: int, world_size: int, rank: int) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.world_size = world_size
        self.rank = rank

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def _share(self, rows: list) -> list:
        n = len(rows)
        return rows[self.rank * n // self.world_size:(self.rank + 1) * n // self.world_size]

    def __iter__(self):
        size = self.batch_size * self.world_size
        rows = []
        for row in self.dataset:
            rows.append(row)
            if len(rows) == size:
                yield from self._share(rows)
                rows = []
        if len(rows) >= self.world_size:
            yield from self._share(rows)


def unwrap_model(model: torch.nn.Module, *, any_module_wrapper: bool = False) -> torch.nn.Module:
    """The user's model under torch.compile and (Distributed)DataParallel wrappers (an FSDP2 model is sharded in
    place, so it is its own unwrapped model).

    ``any_module_wrapper`` also looks through any other wrapper that holds the model as ``.module`` with every
    parameter under it (accelerate-style): the checkpoint code does, so that weight names never carry a
    ``module.`` prefix."""
    from torch.nn.parallel import DataParallel, DistributedDataParallel
    while True:
        inner = getattr(model, "_orig_mod", None)
        if isinstance(inner, torch.nn.Module):
            model = inner
            continue
        inner = getattr(model, "module", None)
        if isinstance(inner, torch.nn.Module) and (
                isinstance(model, (DataParallel, DistributedDataParallel))
                or type(model).__name__ in ("DistributedDataParallel", "DataParallel")
                or any_module_wrapper and all(n.startswith("module.") for n, _ in model.named_parameters())):
            model = inner
            continue
        return model
