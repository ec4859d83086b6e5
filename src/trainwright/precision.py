"""Mixed-precision policy, one small object that owns all of it: the autocast dtype, gradient scaling for fp16
(a ``ShardedGradScaler`` once FSDP2 shards the model), the cast of the model for ``bf16_full_eval`` /
``fp16_full_eval`` evaluation, the FSDP2 ``MixedPrecisionPolicy``, and TF32."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from .errors import ConfigError


class Precision:
    def __init__(self, args: Any, device: torch.device) -> None:
        self.device = device
        self.dtype = torch.bfloat16 if args.bf16 else torch.float16 if args.fp16 else None
        self.eval_dtype = torch.bfloat16 if args.bf16_full_eval else torch.float16 if args.fp16_full_eval else None
        if (args.fp16 or args.fp16_full_eval) and not fp16_supported(device):
            name = "fp16_full_eval" if args.fp16_full_eval and not args.fp16 else "fp16"
            raise ConfigError(f"{name}=True but {_device_name(device)} has no float16 support: use bf16=True "
                              f"if the device has it, or drop {name}.")
        if (args.bf16 or args.bf16_full_eval) and not bf16_supported(device):
            name = "bf16_full_eval" if args.bf16_full_eval and not args.bf16 else "bf16"
            raise ConfigError(f"{name}=True but {_device_name(device)} has no bfloat16 support: use fp16=True "
                              f"on this device, or drop {name}.")
        if args.tf32 is not None and device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = bool(args.tf32)
            torch.backends.cudnn.allow_tf32 = bool(args.tf32)
        self.scaler = torch.amp.GradScaler(device.type) if self.dtype == torch.float16 else None

    def autocast(self, evaluating: bool = False) -> contextlib.AbstractContextManager:
        dtype = self.dtype
        if evaluating and self.eval_dtype is not None:
            return contextlib.nullcontext()  # the model itself was cast for evaluation
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def fsdp_policy(self, reduce_dtype: torch.dtype = torch.float32) -> Any:
        """The FSDP2 ``MixedPrecisionPolicy`` of the shards: parameters in the autocast dtype, gradients reduced in
        ``reduce_dtype`` (``fsdp_config['reduce_dtype']``); None when neither differs from float32."""
        from torch.distributed.fsdp import MixedPrecisionPolicy
        if self.dtype is not None:
            return MixedPrecisionPolicy(param_dtype=self.dtype, reduce_dtype=reduce_dtype)
        if reduce_dtype != torch.float32:
            return MixedPrecisionPolicy(reduce_dtype=reduce_dtype)
        return None

    def adapt_to_sharding(self, sharded: bool) -> None:
        """fp16 under FSDP2: each rank sees only its gradient shard, so the inf check must be agreed by all ranks
        (``ShardedGradScaler`` all-reduces it); otherwise the scaler is kept."""
        if self.scaler is None or not sharded:
            return
        from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler
        if not isinstance(self.scaler, ShardedGradScaler):
            self.scaler = ShardedGradScaler(self.device.type)

    @contextlib.contextmanager
    def evaluation(self, model: torch.nn.Module) -> Iterator[None]:
        """Around an evaluation: with ``bf16_full_eval`` / ``fp16_full_eval`` the model is cast to that dtype and
        back to float32 afterwards (as transformers); otherwise nothing changes."""
        if self.eval_dtype is None:
            yield
            return
        model.to(self.eval_dtype)
        try:
            yield
        finally:
            model.to(torch.float32)

    def backward(self, loss: torch.Tensor) -> None:
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()

    def unscale_(self, optimizer: Any) -> None:
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: Any) -> None:
        if self.scaler is not None:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()


def fp16_supported(device: torch.device) -> bool:
    """Whether float16 autocast (+ GradScaler) works on ``device``. CUDA and MPS have it; on the CPU
    torch >= 2.3 has float16 autocast, checked once with a tiny matmul (as transformers allows it)."""
    device = torch.device(device)
    if device.type in ("cuda", "mps", "xpu"):
        return True
    if device.type == "cpu":
        return _cpu_autocast_works(torch.float16)
    return False


def bf16_supported(device: torch.device) -> bool:
    """Whether bfloat16 autocast works on ``device`` (CUDA: Ampere or newer, or emulated where torch says so)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "mps":
        return _mps_bf16_supported()
    if device.type == "cpu":
        return _cpu_autocast_works(torch.bfloat16)
    return device.type == "xpu"


_CPU_AUTOCAST: dict = {}


def _cpu_autocast_works(dtype) -> bool:
    if dtype not in _CPU_AUTOCAST:
        try:
            with torch.autocast(device_type="cpu", dtype=dtype):
                out = torch.ones(2, 2) @ torch.ones(2, 2)
            _CPU_AUTOCAST[dtype] = out.dtype == dtype and bool(torch.isfinite(out.float()).all())
        except Exception:
            _CPU_AUTOCAST[dtype] = False
    return _CPU_AUTOCAST[dtype]


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        try:
            return f"the GPU ({torch.cuda.get_device_name(device)})"
        except Exception:
            return "the GPU"
    return {"cpu": "the CPU", "mps": "this MPS device"}.get(device.type, f"the {device.type} device")


def _mps_bf16_supported() -> bool:
    try:
        torch.zeros(1, dtype=torch.bfloat16, device="mps")
        return True
    except Exception:
        return False
