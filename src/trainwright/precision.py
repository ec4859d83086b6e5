"""Mixed-precision policy: autocast dtype, gradient scaling for fp16, TF32. One small object."""
from __future__ import annotations

import contextlib

import torch

from .errors import ConfigError


class Precision:
    def __init__(self, args, device: torch.device):
        self.device = device
        self.dtype = torch.bfloat16 if args.bf16 else torch.float16 if args.fp16 else None
        self.eval_dtype = torch.bfloat16 if args.bf16_full_eval else torch.float16 if args.fp16_full_eval else None
        if args.fp16 or args.fp16_full_eval:
            if device.type == "cpu":
                raise ConfigError("fp16=True needs a CUDA or MPS device, but training runs on the CPU: "
                                  "use bf16=True on the CPU, or drop fp16.")
        if args.bf16 or args.bf16_full_eval:
            if device.type == "cuda" and not torch.cuda.is_bf16_supported():
                raise ConfigError(f"bf16=True but {torch.cuda.get_device_name(device)} has no bfloat16 support: "
                                  "use fp16=True on this GPU.")
            if device.type == "mps" and not _mps_bf16_supported():
                raise ConfigError("bf16=True but this MPS device has no bfloat16 support: use fp16=True.")
        if args.tf32 is not None and device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = bool(args.tf32)
            torch.backends.cudnn.allow_tf32 = bool(args.tf32)
        self.scaler = torch.amp.GradScaler(device.type) if self.dtype == torch.float16 else None

    def autocast(self, evaluating: bool = False):
        dtype = self.dtype
        if evaluating and self.eval_dtype is not None:
            return contextlib.nullcontext()  # the model itself was cast for evaluation
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def backward(self, loss: torch.Tensor) -> None:
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()

    def unscale_(self, optimizer) -> None:
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer) -> None:
        if self.scaler is not None:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()


def _mps_bf16_supported() -> bool:
    try:
        torch.zeros(1, dtype=torch.bfloat16, device="mps")
        return True
    except Exception:
        return False
