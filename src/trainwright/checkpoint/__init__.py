"""Crash-safe, pickle-free checkpoints: the format, the files, and when and where the Trainer saves.

Nothing is ever pickled: tensors go to safetensors files, everything else to JSON. A checkpoint directory is written
into a temporary sibling, with a completion manifest written last, and renamed into place; a directory without a
valid manifest is never used to resume. See ``docs/checkpoints.md`` for the layout.

Which module holds what:

* :mod:`.api`: the public functions -- :func:`save_checkpoint`, :func:`load_checkpoint`, :func:`checkpoint_status`,
  :func:`list_checkpoints`, :func:`latest_checkpoint`, :func:`rotate_checkpoints`, :func:`save_model_dir`,
  :func:`load_model_weights` (re-exported here).
* :mod:`.format`: file names, the pickle-free encoding of state dicts, RNG states, the model fingerprint.
* :mod:`.writer` / :mod:`.reader`: writing (temp dir, fsync, manifest last, atomic rename) and verified reading
  (pickle scan, sizes and sha256 against the manifest, parse everything, then apply).
* :mod:`.manager`: :class:`CheckpointManager`, the Trainer's side -- when and where to save, the run's stateful
  components, the best-model bookkeeping, rotation, resuming and loading the best model.
* :mod:`.resume`: what a resume reads and checks before the first step (arguments, world size, data fingerprint).
* :mod:`.adapters`: a PEFT model's checkpoint holds its adapter (what ``PeftModel.from_pretrained`` loads), never
  the frozen base, and puts every trainable tensor back on resume.
* :mod:`.hf`: reading checkpoints written by ``transformers.Trainer`` (its ``.pt`` files only through
  ``torch.load(weights_only=True)``; ``training_args.bin`` is skipped).
* :mod:`.safe_fs` / :mod:`.run_lock`: the filesystem layer -- atomic writes that degrade cleanly on a full disk,
  symlink-safe deletes, regular-file checks -- and the one-run-per-``output_dir`` lock.
"""
from .api import (
    checkpoint_status,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_model_weights,
    rotate_checkpoints,
    save_checkpoint,
    save_model_dir,
)
from .format import MANIFEST_NAME, MODEL_WEIGHTS_NAME, PREFIX_CHECKPOINT_DIR, TRAINER_STATE_NAME, TRAINING_ARGS_NAME

__all__ = ["MANIFEST_NAME", "MODEL_WEIGHTS_NAME", "PREFIX_CHECKPOINT_DIR", "TRAINER_STATE_NAME", "TRAINING_ARGS_NAME",
           "checkpoint_status", "latest_checkpoint", "list_checkpoints", "load_checkpoint", "load_model_weights",
           "rotate_checkpoints", "save_checkpoint", "save_model_dir"]
