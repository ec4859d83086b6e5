"""Device choice and torch.distributed policy, kept out of the training loop's way.

Under ``torchrun`` (RANK / WORLD_SIZE / LOCAL_RANK set) the process group is started here
(nccl on CUDA, gloo on CPU), the local device bound, and the model wrapped in DDP or sharded with
FSDP2. In a plain single process every method is a cheap no-op, so the loop reads the same either way.
"""
from __future__ import annotations

import contextlib
import os

import torch


def select_device(args) -> torch.device:
    """cuda (this process's local rank), then mps, then cpu; use_cpu=True forces the CPU."""
    if getattr(args, "use_cpu", False):
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def is_distributed_launch() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


class Distributed:
    """What the loop needs from torch.distributed, and nothing more."""

    def __init__(self, args, device: torch.device):
        self.args = args
        self.device = device
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world_size > 1
        if self.enabled:
            self._init_process_group()

    @property
    def is_main_process(self) -> bool:
        return self.rank == 0

    def _init_process_group(self):
        import torch.distributed as dist
        if dist.is_initialized():
            return
        backend = self.args.ddp_backend or ("nccl" if self.device.type == "cuda" else "gloo")
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        dist.init_process_group(backend=backend, timeout=self.args.ddp_timeout_delta,
                                **({"device_id": self.device} if backend == "nccl" else {}))

    # ---------------------------------------------------------------- model wrapping
    def wrap_model(self, model: torch.nn.Module) -> torch.nn.Module:
        if not self.enabled:
            return model
        if self.args.fsdp:
            return self._fully_shard(model)
        from torch.nn.parallel import DistributedDataParallel as DDP
        kwargs = {}
        if self.args.ddp_find_unused_parameters is not None:
            kwargs["find_unused_parameters"] = self.args.ddp_find_unused_parameters
        if self.args.ddp_bucket_cap_mb is not None:
            kwargs["bucket_cap_mb"] = self.args.ddp_bucket_cap_mb
        if self.args.ddp_broadcast_buffers is not None:
            kwargs["broadcast_buffers"] = self.args.ddp_broadcast_buffers
        if self.args.ddp_static_graph is not None:
            kwargs["static_graph"] = self.args.ddp_static_graph
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DDP(model, device_ids=device_ids, **kwargs)

    def _fully_shard(self, model):
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
        mp = None
        if self.args.bf16:
            mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        elif self.args.fp16:
            mp = MixedPrecisionPolicy(param_dtype=torch.float16, reduce_dtype=torch.float32)
        kwargs = {"mp_policy": mp} if mp is not None else {}
        layer_cls = tuple(getattr(model, "_no_split_modules", None) or ())
        for module in model.modules():
            if type(module).__name__ in layer_cls:
                fully_shard(module, **kwargs)
        fully_shard(model, **kwargs)
        return model

    def no_sync(self, model, skip: bool):
        """Skip the gradient all-reduce on micro-steps that are not the last of an accumulation."""
        if self.enabled and skip and hasattr(model, "no_sync"):
            return model.no_sync()
        if self.enabled and hasattr(model, "set_requires_gradient_sync"):  # FSDP2
            model.set_requires_gradient_sync(not skip)
        return contextlib.nullcontext()

    # ---------------------------------------------------------------- collectives
    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            import torch.distributed as dist
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def barrier(self):
        if self.enabled:
            import torch.distributed as dist
            dist.barrier()

    def broadcast_object(self, obj):
        if not self.enabled:
            return obj
        import torch.distributed as dist
        holder = [obj]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]

    def all_gather_objects(self, obj) -> list:
        if not self.enabled:
            return [obj]
        import torch.distributed as dist
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def destroy(self):
        if self.enabled:
            import torch.distributed as dist
            if dist.is_initialized():
                dist.destroy_process_group()


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The user's model under DDP / torch.compile wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif hasattr(model, "module") and isinstance(model.module, torch.nn.Module) and \
                type(model).__name__ in ("DistributedDataParallel", "DataParallel"):
            model = model.module
        else:
            return model
