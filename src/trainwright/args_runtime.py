"""Where this process stands: the TrainingArguments API that scripts and callbacks read at run time.

``world_size``, ``process_index``, ``local_process_index``, ``should_log``, ``should_save``, ``device``,
``n_gpu``, ``parallel_mode``, ``train_batch_size`` / ``eval_batch_size``, ``get_process_log_level()``,
``main_process_first()``, ``get_warmup_steps()``: transformers' names and meanings, read from the torchrun
environment (RANK / WORLD_SIZE / LOCAL_RANK) rather than from accelerate's state.
"""
from __future__ import annotations

import contextlib
import datetime
import logging
import math
import os
import sys
from collections.abc import Iterator
from typing import Any

logger = logging.getLogger("trainwright")

# transformers' log level names (transformers.utils.logging), plus "passive": leave the level as it is
LOG_LEVELS = {"detail": logging.DEBUG, "debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
              "error": logging.ERROR, "critical": logging.CRITICAL, "passive": -1}


class ProcessView:
    """Mixed into TrainingArguments (a dataclass); holds no fields of its own."""

    # ------------------------------------------------------------------ processes
    @property
    def world_size(self) -> int:
        """The number of processes (``WORLD_SIZE``; 1 outside torchrun)."""
        return int(os.environ.get("WORLD_SIZE", 1))

    @property
    def process_index(self) -> int:
        """This process's rank in the job (``RANK``; 0 outside torchrun)."""
        return int(os.environ.get("RANK", 0))

    @property
    def local_process_index(self) -> int:
        """This process's rank on its machine (``LOCAL_RANK``, else ``local_rank``, else 0)."""
        return int(os.environ.get("LOCAL_RANK", max(self.local_rank, 0)))

    @property
    def should_log(self) -> bool:
        """Whether this process logs: the main process of each node (log_on_each_node=True, the default)
        or of the whole job."""
        return (self.local_process_index if self.log_on_each_node else self.process_index) == 0

    @property
    def should_save(self) -> bool:
        """Whether this process writes checkpoints: the main process of each node (save_on_each_node=True)
        or of the whole job."""
        return (self.local_process_index if self.save_on_each_node else self.process_index) == 0

    @property
    def parallel_mode(self) -> Any:
        """transformers' ``ParallelMode``: DISTRIBUTED under torchrun with more than one process, else
        NOT_PARALLEL (trainwright never uses ``torch.nn.DataParallel``, so never NOT_DISTRIBUTED)."""
        from transformers.training_args import ParallelMode
        return ParallelMode.DISTRIBUTED if self.world_size > 1 else ParallelMode.NOT_PARALLEL

    # ------------------------------------------------------------------ devices and batches
    @property
    def device(self) -> Any:
        """The ``torch.device`` this process trains on: its CUDA device, else MPS, else the CPU (``use_cpu``)."""
        from .distributed import select_device
        return select_device(self)

    @property
    def n_gpu(self) -> int:
        """GPUs used by this process: 1 on CUDA, else 0 (one GPU per process; no DataParallel)."""
        return 1 if self.device.type == "cuda" else 0

    @property
    def train_batch_size(self) -> int:
        """Rows per training batch of this process (``per_device_train_batch_size``)."""
        return self.per_device_train_batch_size * max(1, self.n_gpu)

    @property
    def eval_batch_size(self) -> int:
        """Rows per evaluation batch of this process (``per_device_eval_batch_size``)."""
        return self.per_device_eval_batch_size * max(1, self.n_gpu)

    @property
    def place_model_on_device(self) -> bool | None:
        """Read by transformers' example scripts; the Trainer always places the model itself (None)."""
        return None

    @property
    def ddp_timeout_delta(self) -> datetime.timedelta:
        """``ddp_timeout`` as a ``timedelta`` (the process group's timeout)."""
        return datetime.timedelta(seconds=self.ddp_timeout)

    def get_warmup_steps(self, num_training_steps: int) -> int:
        """Warmup steps: ``warmup_steps`` itself when >= 1, else that fraction of ``num_training_steps``."""
        if self.warmup_steps < 1:
            return math.ceil(num_training_steps * self.warmup_steps)
        return int(self.warmup_steps)

    # ------------------------------------------------------------------ logging
    def get_process_log_level(self) -> int:
        """The log level for this process: ``log_level`` on the process that logs (``should_log``),
        ``log_level_replica`` on the others; "passive" gives transformers' current verbosity (WARNING unless
        the script changed it), as transformers does."""
        level = LOG_LEVELS[self.log_level if self.should_log else self.log_level_replica]
        if level != -1:
            return level
        hf_logging = sys.modules.get("transformers.utils.logging")
        if hf_logging is not None:
            return hf_logging.get_verbosity()
        return logging.getLogger("transformers").getEffectiveLevel()

    # ------------------------------------------------------------------ ordering work between processes
    @contextlib.contextmanager
    def main_process_first(self, local: bool = True, desc: str = "work") -> Iterator[None]:
        """Run the block on the main process first (of each node with ``local=True``, of the job with
        ``local=False``); the other processes wait at a barrier and run it afterwards (typically reading the
        ``datasets`` cache the main process wrote). A no-op in a single process.

        Under torchrun the process group is started here if it is not running yet, exactly as the Trainer
        starts it (:func:`trainwright.distributed.ensure_process_group`); the Trainer then uses that group.
        """
        if self.world_size <= 1:
            yield
            return
        import torch.distributed as dist

        from .distributed import ensure_process_group
        ensure_process_group(self, self.device)
        is_main = (self.local_process_index if local else self.process_index) == 0
        who = "main local process" if local else "main process"
        try:
            if not is_main:
                logger.debug("%d: waiting for the %s to perform %s", self.process_index, who, desc)
                dist.barrier()
            yield
        finally:
            if is_main:
                logger.debug("%d: %s completed %s, releasing all replicas", self.process_index, who, desc)
                dist.barrier()
