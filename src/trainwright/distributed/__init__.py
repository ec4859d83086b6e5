"""Device choice and torch.distributed policy, kept out of the training loop's way.

Under ``torchrun`` (RANK / WORLD_SIZE / LOCAL_RANK set) the process group is started, the local device bound, and
the model wrapped in DDP or sharded with FSDP2; in a plain single process every method is a cheap no-op, so the loop
reads the same either way.

Which module holds what:

* :mod:`.parallel`: :class:`Distributed` (ranks, DDP wrapping, ``no_sync``, collectives, the every-rank check, the
  model/optimizer views a checkpoint is written from), :func:`select_device`, :func:`unwrap_model` (the one
  function that looks through DDP / torch.compile wrappers) and :class:`IterableShard`.
* :mod:`.fsdp`: FSDP2 -- the ``fsdp=`` / ``fsdp_config=`` settings (:class:`FSDPPlan`), sharding the model, and the
  full-state views that let the checkpoint code save and load a sharded model as if it were not sharded.
* :mod:`.process_group`: starting / destroying the default process group, the failure report, the c10d store.

Mixed precision (including the FSDP2 ``MixedPrecisionPolicy``) belongs to :class:`trainwright.precision.Precision`.
"""
from .fsdp import FSDPPlan
from .parallel import EVERY_RANK_CHECK_S, Distributed, IterableShard, select_device, unwrap_model
from .process_group import ensure_process_group

__all__ = ["EVERY_RANK_CHECK_S", "Distributed", "FSDPPlan", "IterableShard", "ensure_process_group", "select_device",
           "unwrap_model"]
