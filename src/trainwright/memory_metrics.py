"""Memory metrics for ``skip_memory_metrics=False``, with transformers' keys and meaning.

For each of ``Trainer.__init__`` (``init``), ``train`` (``train``), ``evaluate`` (``eval``) and
``predict`` (``test``):

* ``<stage>_mem_cpu_alloc_delta``: the process's resident memory (RSS) at the end minus at the start, in bytes;
* ``<stage>_mem_cpu_peaked_delta``: how far above the end value the RSS peaked during the stage (0 or more);
* on CUDA, ``<stage>_mem_gpu_alloc_delta`` / ``<stage>_mem_gpu_peaked_delta`` from ``torch.cuda``'s allocator.

The ``init`` figures and ``before_init_mem_cpu`` (``before_init_mem_gpu``) are added to the first metrics
reported after ``Trainer(...)``. An evaluation inside ``train()`` is counted in the train figures (the CUDA peak
counter is global), as in transformers. Off by default: it costs a garbage collection at each start and end and
a thread that samples the RSS every millisecond.

The RSS comes from ``psutil`` when it is installed, else from ``/proc/self/statm`` (Linux); where neither
exists the metrics are left out, with one warning.
"""
from __future__ import annotations

import gc
import logging
import os
import threading

import torch

logger = logging.getLogger("trainwright")
_SAMPLE_SECONDS = 0.001


def _rss_reader():
    """A function returning this process's resident memory in bytes, or None if none is available."""
    try:
        import psutil
        process = psutil.Process()
        return lambda: process.memory_info().rss
    except ImportError:
        pass
    if os.path.exists("/proc/self/statm"):
        page = os.sysconf("SC_PAGE_SIZE")

        def read():
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * page
        return read
    return None


class MemoryTracker:
    def __init__(self, enabled: bool, device: torch.device) -> None:
        self.enabled = bool(enabled)
        self.rss = _rss_reader() if self.enabled else None
        if self.enabled and self.rss is None:
            logger.warning("skip_memory_metrics=False: this platform has no /proc and psutil is not installed, so "
                           "the memory metrics are left out. pip install psutil to get them.")
            self.enabled = False
        self.cuda = self.enabled and device.type == "cuda"
        self.device = device
        self.stage = None
        self.cpu: dict[str, dict] = {}
        self.gpu: dict[str, dict] = {}
        self.init_reported = False
        self._thread = None

    # -------------------------------------------------------------- sampling the RSS peak
    def _sample(self):
        while self._sampling:
            self._peak = max(self._peak, self.rss())
            self._stop_event.wait(_SAMPLE_SECONDS)

    def _stop_sampling(self):
        if self._thread is not None:
            self._sampling = False
            self._stop_event.set()
            self._thread.join()
            self._thread = None

    def start(self, stage: str) -> None:
        if not self.enabled or (self.stage is not None and self.stage != stage):
            return  # evaluate() inside train(): counted in train's figures
        self.stage = stage
        self._stop_sampling()  # a stage that ended in an exception left its sampler running
        gc.collect()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
            torch.cuda.empty_cache()
            self._gpu_start = torch.cuda.memory_allocated(self.device)
        self._cpu_start = self.rss()
        self._peak = self._cpu_start
        self._sampling = True
        self._stop_event = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="trainwright-memory", daemon=True)
        self._thread.start()

    def stop(self, stage: str, metrics: dict | None = None) -> None:
        """Ends ``stage`` and adds its figures (and the init ones, the first time) to ``metrics``."""
        if not self.enabled or self.stage != stage:
            return
        self._stop_sampling()
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()
            now, peak = torch.cuda.memory_allocated(self.device), torch.cuda.max_memory_allocated(self.device)
            self.gpu[stage] = {"begin": self._gpu_start, "alloc": now - self._gpu_start, "peaked": max(0, peak - now)}
        now = self.rss()
        self.cpu[stage] = {"begin": self._cpu_start, "alloc": now - self._cpu_start,
                           "peaked": max(0, max(self._peak, now) - now)}
        self.stage = None
        if metrics is not None:
            self._report(stage, metrics)

    def _report(self, stage: str, metrics: dict) -> None:
        stages = [stage]
        if not self.init_reported and "init" in self.cpu:
            stages.insert(0, "init")
            self.init_reported = True
        for name in stages:
            for kind in ("alloc", "peaked"):
                metrics[f"{name}_mem_cpu_{kind}_delta"] = self.cpu[name][kind]
                if name in self.gpu:
                    metrics[f"{name}_mem_gpu_{kind}_delta"] = self.gpu[name][kind]
        if stages[0] == "init":
            metrics["before_init_mem_cpu"] = self.cpu["init"]["begin"]
            if "init" in self.gpu:
                metrics["before_init_mem_gpu"] = self.gpu["init"]["begin"]
