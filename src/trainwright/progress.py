"""What the training loop counts as it goes, as components that a checkpoint saves and a resume restores
(``state_dict()`` / ``load_state_dict()``, torchtitan's habit), so a resumed run continues as if it had never stopped.

* :class:`LossTracker`: the running training loss (over the run and since the last log) and the non-finite-step
  counters. The sums stay on the device: the hot loop never waits for them; they are read when logging, checking,
  saving and at the end of ``train()``.
* :class:`Throughput`: samples/s, non-padding tokens/s, tokens seen and MFU, counted on the host from the collated
  batches; its state is the current logging window (rows, tokens and seconds since the last log).
"""
from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import torch

from .errors import NonFiniteLossError
from .loss_scaling import rows as batch_rows
from .state import TrainerState

PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10G": 125e12}

_FLOAT_SUMS = ("total_loss", "log_loss", "total_finite", "log_finite")
_COUNTERS = ("nonfinite_total", "nonfinite_run", "nonfinite_worst")


class LossTracker:
    """The step losses summed on the device (NaN/inf steps are left out of the mean and counted, as transformers does
    with ``logging_nan_inf_filter``) and the counters of steps whose gradients were NaN/inf (skipped updates)."""

    def __init__(self, device: torch.device) -> None:
        for name in _FLOAT_SUMS:
            setattr(self, name, torch.zeros((), device=device))
        for name in _COUNTERS:  # nonfinite_run: the current run of bad steps; nonfinite_worst: the longest so far
            setattr(self, name, torch.zeros((), dtype=torch.long, device=device))
        self.log_steps = 0  # optimizer steps since the last log

    def add_step_loss(self, step_loss: torch.Tensor) -> None:
        """One optimizer step's loss (the global batch's mean); a NaN/inf loss counts as a step without a loss."""
        finite = torch.isfinite(step_loss)
        step_loss = torch.where(finite, step_loss, torch.zeros_like(step_loss))
        self.log_loss += step_loss
        self.total_loss += step_loss
        self.log_finite += finite
        self.total_finite += finite

    def add_gradient_check(self, grad_norm: torch.Tensor) -> torch.Tensor:
        """Counts a step whose gradient norm is NaN/inf; returns that flag (a long tensor, on the device)."""
        bad = (~torch.isfinite(grad_norm)).to(torch.long)
        self.nonfinite_total += bad
        self.nonfinite_run = (self.nonfinite_run + bad) * bad
        self.nonfinite_worst = torch.maximum(self.nonfinite_worst, self.nonfinite_run)  # a run between checks
        return bad

    def read_log_loss(self) -> float:
        """The mean loss since the last log (one read), and a new logging window."""
        total, finite = torch.stack([self.log_loss, self.log_finite]).tolist()
        self.log_loss.zero_()
        self.log_finite.zero_()
        self.log_steps = 0
        return round(total / finite, 4) if finite else float("nan")

    def train_loss(self) -> float:
        """The mean loss over every step of the run (one read); NaN when no step had a finite loss."""
        total, finite = torch.stack([self.total_loss, self.total_finite]).tolist()
        return total / finite if finite else float("nan")

    def nonfinite_counts(self) -> tuple[int, int, int]:
        """(steps skipped so far, the current run of NaN/inf steps, the longest run so far), in one read."""
        total, run, worst = torch.stack([self.nonfinite_total, self.nonfinite_run, self.nonfinite_worst]).tolist()
        return int(total), int(run), int(worst)

    def check_nonfinite(self, state: TrainerState, limit: int, last_checkpoint: Any) -> None:
        """Records the skipped steps in ``state``; raises NonFiniteLossError when ``limit`` steps in a row had NaN/inf
        gradients (``last_checkpoint()``: the path to name as the last good one)."""
        total, run, worst = self.nonfinite_counts()
        state.skipped_nonfinite_steps = total
        if max(run, worst) < limit:
            return
        last = state.best_model_checkpoint or last_checkpoint() or "none yet"
        where = f"up to step {state.global_step}" if run >= limit else f"ending before step {state.global_step - run}"
        raise NonFiniteLossError(
            f"The loss or gradients were NaN/inf for {max(run, worst)} consecutive steps ({where}); those "
            f"updates were skipped and training stopped. Last good checkpoint: "
            f"{last}. Lower learning_rate, keep max_grad_norm on, check the data for bad values, or use bf16 "
            f"instead of fp16. (max_consecutive_nonfinite_steps={limit})")

    def state_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {name: getattr(self, name).detach().clone() for name in _FLOAT_SUMS + _COUNTERS}
        out["log_steps"] = self.log_steps
        return out

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for name in _FLOAT_SUMS + _COUNTERS:
            if name in state:
                getattr(self, name).fill_(state[name].item() if isinstance(state[name], torch.Tensor) else state[name])
        self.log_steps = int(state.get("log_steps", 0))


class Throughput:
    """samples/s, non-padding tokens/s, tokens seen and MFU, counted on the host from the collated batches (attention
    masks are still on the CPU then), so nothing waits for the device.

    Under torchrun each rank counts its own rows; ``flush`` (called by every rank together: at logging steps, before
    a checkpoint and at the end of ``train()``) sums the counts over the ranks into the state, so ``samples_seen``,
    ``num_input_tokens_seen``, ``total_flos`` and the logged rates are global figures, as in transformers."""

    def __init__(self, model: torch.nn.Module, device: torch.device, dist: Any = None, counter: Any = None) -> None:
        self.dist = dist
        self.counter = counter  # tokens_seen.InputTokenCounter: num_input_tokens_seen as transformers counts it
        self.start_time = self.last_time = time.time()
        self._resumed_seconds = 0.0
        self.samples = 0  # global, since the last read (after a flush)
        self.tokens = 0
        # this rank's rows, non-padding tokens, input tokens seen and main-input positions not yet flushed
        self.pending = [0, 0, 0, 0]
        self.n_params = sum(p.numel() for p in model.parameters())
        # total_flos as transformers counts it (PreTrainedModel.floating_point_ops): 6 x the main input's positions,
        # padding included, x the parameters without the embeddings
        self.main_input = getattr(model, "main_input_name", "input_ids")
        try:
            self.flos_params = int(model.num_parameters(exclude_embeddings=True))
        except Exception:
            self.flos_params = self.n_params
        self.peak = None
        if device.type == "cuda":
            name = torch.cuda.get_device_name(device)
            self.peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)

    def count_batch(self, batch: Any) -> None:
        n = batch_rows(batch)
        batch = batch if isinstance(batch, Mapping) else {}  # a list/tuple batch (overridden compute_loss): rows only
        mask = batch.get("attention_mask")
        if isinstance(mask, torch.Tensor) and not mask.is_cuda:
            tokens = int(mask.sum())
        elif isinstance(batch.get("input_ids"), torch.Tensor):
            tokens = batch["input_ids"].numel()
        else:
            tokens = 0
        main = batch.get(self.main_input)
        self.pending[0] += n
        self.pending[1] += tokens
        self.pending[3] += main.numel() if isinstance(main, torch.Tensor) else 0  # shape only: no sync
        if self.counter is not None:
            self.pending[2] += self.counter.count(batch)

    def start(self) -> None:
        """The clock of the first window starts now (continuing a resumed window)."""
        self.start_time = time.time()
        self.last_time = self.start_time - self._resumed_seconds
        self._resumed_seconds = 0.0

    def flush(self, state: TrainerState) -> None:
        """This rank's counts since the last flush, summed over the ranks, into the window and ``state``."""
        n, tokens, seen, positions = self.pending
        seen += self.counter.take_device_count() if self.counter is not None else 0
        if self.dist is not None and self.dist.enabled:  # one small all-reduce (CPU ints on gloo/NCCL device)
            t = torch.tensor([n, tokens, seen, positions], dtype=torch.float64, device=self.dist.device)
            n, tokens, seen, positions = (int(v) for v in self.dist.all_reduce_sum(t).tolist())
        self.pending = [0, 0, 0, 0]
        self.samples += n
        self.tokens += tokens
        state.samples_seen += n
        state.num_input_tokens_seen += seen
        state.total_flos += 6.0 * self.flos_params * positions

    def read(self, state: TrainerState) -> dict[str, float]:
        """The rates since the last read (flushed first), and a new window."""
        self.flush(state)
        now = time.time()
        elapsed = max(now - self.last_time, 1e-9)
        out = {"samples_per_second": round(self.samples / elapsed, 3),
               "tokens_per_second": round(self.tokens / elapsed, 1)}
        if self.peak:
            out["mfu"] = round(6.0 * self.n_params * self.tokens / elapsed / self.peak, 4)
        self.last_time, self.samples, self.tokens = now, 0, 0
        return out

    def state_dict(self) -> dict[str, Any]:
        """The current logging window (call after ``flush``): its rows, tokens and seconds, so the first rates logged
        after a resume cover the same steps as the first logged loss."""
        return {"window_samples": self.samples, "window_tokens": self.tokens,
                "window_seconds": max(time.time() - self.last_time, 0.0)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.samples = int(state.get("window_samples", 0))
        self.tokens = int(state.get("window_tokens", 0))
        self._resumed_seconds = float(state.get("window_seconds", 0.0))
