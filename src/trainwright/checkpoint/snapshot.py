"""A checkpoint in two halves: :func:`capture` takes everything the checkpoint holds at the save point, and
:func:`write` turns it into files in the temporary directory. Between the two, training may go on: the capture
holds host copies of every tensor (:class:`~.host_copy.HostCopies`) and encoded copies of every other value, so
the write (which can run in a background thread) never reads the live model, optimizer or state.

What the capture does at the save point: the optimizer, scheduler, scaler, RNG and run components' state dicts are
encoded (JSON-able data plus tensors) and their tensors copied; the model's ``state_dict()`` is copied and later
written with the model's own ``save_pretrained(state_dict=...)`` (a ``save_pretrained`` that cannot take a state
dict, and a PEFT adapter, are written at the save point instead), and the processing class is saved at the save
point (its files are fsynced by the write); the trainer state and arguments are already private dicts. Without
``copies`` (a synchronous save) nothing is copied and the write reads the objects themselves.
"""
from __future__ import annotations

import inspect
import os
import time
from typing import Any

from .format import (
    OPTIMIZER_STATE,
    RNG_STATE,
    SCALER_STATE,
    SCHEDULER_STATE,
    STATES_DIR,
    TRAINER_STATE_NAME,
    TRAINING_ARGS_NAME,
    _encode,
    _get_rng_state,
    _lenient_json_default,
    _param_signature,
    _unwrap_model,
    _unwrap_optimizer,
)
from .host_copy import HostCopies, frozen_storages, run_copies, trained_storages
from .writer import _finish, _save_model, _Writer


class Snapshot:
    """What :func:`write` needs: the temp dir's writer, the model and its copied state, the files to write."""

    def __init__(self, final: str, writer: _Writer, model: Any, signature: dict, processing_class: Any) -> None:
        self.final = final
        self.writer = writer
        self.model = model
        self.signature = signature
        self.processing_class = processing_class
        self.model_state: dict | None = None  # host copies (None: the write reads the model itself)
        self.model_info: dict | None = None  # set when the model was written at the save point
        self.files: list[tuple] = []  # (relative path, "json" | "tensors", payload, json default)
        self.external: list[str] | None = None  # the processing class's files, written at the save point
        self.defer = False  # copy the trained parameters and the optimizer state later (see host_copy)
        self.copy_jobs: list = []  # those copies, to make before anything is written
        self.manifest: dict = {}

    @property
    def tmp(self) -> str:
        return self.writer.root


def capture(final: str, writer: _Writer, *, model: Any, optimizer: Any = None, lr_scheduler: Any = None,
            scaler: Any = None, trainer_state: dict | None = None, training_args: dict | None = None,
            processing_class: Any = None, save_only_model: bool = False, rng_state: bool = True,
            states: Any = None, extra: dict | None = None, copies: HostCopies | None = None,
            defer: bool = False) -> Snapshot:
    """Everything the checkpoint holds, as of now (see the module docstring). ``defer`` (with ``copies``): the
    trained parameters and the optimizer state are copied by :func:`write` first (``snap.copy_jobs``); the caller
    keeps the optimizer from stepping until then."""
    snap = Snapshot(final, writer, model, _param_signature(model), processing_class)
    snap.defer = bool(defer and copies is not None)
    if copies is not None:
        copies.begin()
    _capture_model(snap, copies)
    if copies is not None and processing_class is not None and hasattr(processing_class, "save_pretrained"):
        # at the save point: the training thread may use (and reconfigure) the tokenizer while the write runs
        snap.external = writer.run_external(lambda: processing_class.save_pretrained(writer.root), register=False)
    components: dict = {}
    if not save_only_model:
        components = _capture_run_state(snap, optimizer, lr_scheduler, scaler, rng_state, states, copies)
    if trainer_state is not None:
        snap.files.append((TRAINER_STATE_NAME, "json", trainer_state, None))
    if training_args is not None:
        snap.files.append((TRAINING_ARGS_NAME, "json", training_args, _lenient_json_default))
    snap.manifest = {"kind": "checkpoint", "save_only_model": bool(save_only_model), "components": components,
                     "global_step": (trainer_state or {}).get("global_step")}
    if extra:
        snap.manifest["extra"] = _encode(extra, None, "extra", strict=True)
    if copies is not None:
        snap.copy_jobs = copies.end()  # the device copies have landed; the deferred ones are still to make
    return snap


def write(snap: Snapshot) -> None:
    """The files of ``snap`` into its temp dir, each fsynced and hashed, the manifest last (the deferred copies
    made first: :func:`make_copies`)."""
    w = snap.writer
    model_info = snap.model_info
    if model_info is None:
        model_info = _save_model(w, snap.model, checkpoint=True, state=snap.model_state)
    processing_class = snap.processing_class
    if snap.external is not None:
        for rel in snap.external:
            w.wrote(rel)  # fsynced (and counted) here
    elif processing_class is not None and hasattr(processing_class, "save_pretrained"):
        w.run_external(lambda: processing_class.save_pretrained(w.root))
    for rel, kind, payload, default in snap.files:
        if "/" in rel:
            os.makedirs(os.path.join(w.root, os.path.dirname(rel)), exist_ok=True)
        if kind == "tensors":
            w.write_tensors(rel, payload)
        else:
            w.write_json(rel, payload, default=default)
    _finish(w, snap.signature, model_info, snap.manifest)


def make_copies(snap: Snapshot) -> None:
    """The deferred copies of ``snap`` (once; in the background writer, before anything is written). With the test
    hook TRAINWRIGHT_TEST_SLOW_CHECKPOINT_SECONDS they start that much later (the next step has to wait)."""
    jobs, snap.copy_jobs = snap.copy_jobs, []
    if jobs and snap.writer.slow > 0:
        time.sleep(snap.writer.slow)
    run_copies(jobs)


def _capture_model(snap: Snapshot, copies: HostCopies | None) -> None:
    m = _unwrap_model(snap.model)
    if copies is None:
        return
    save = getattr(m, "save_pretrained", None)
    from .adapters import is_adapter_model
    # written at the save point: a model whose save_pretrained cannot be given a copy of its state, and a PEFT
    # adapter (small; peft computes some of the tensors it saves, e.g. prompt embeddings, from the live model)
    if is_adapter_model(m) or (callable(save) and not _takes_state_dict(save)):
        snap.model_info = _save_model(snap.writer, snap.model, checkpoint=True)
        return
    state = m.state_dict()
    if getattr(m, "state_is_a_copy", False):  # an FSDP2 view: the gathered state is already its own
        snap.model_state = state
    else:
        snap.model_state = copies.copy_dict("model.", state, frozen_storages(m),
                                            defer=trained_storages(m) if snap.defer else False)


def _takes_state_dict(save: Any) -> bool:
    """Whether ``save_pretrained`` writes the ``state_dict`` it is given (transformers' does; a PEFT adapter never
    gets here: it is written at the save point)."""
    try:
        return "state_dict" in inspect.signature(save).parameters
    except (TypeError, ValueError):
        return False


def _capture_run_state(snap: Snapshot, optimizer, lr_scheduler, scaler, rng_state: bool, states,
                       copies: HostCopies | None) -> dict:
    """The optimizer, scheduler, scaler, RNG and stateful components; returns the manifest's ``components``."""
    components: dict[str, Any] = {}
    if optimizer is not None:
        own = getattr(optimizer, "state_is_a_copy", False)
        _add_state(snap, OPTIMIZER_STATE, optimizer.state_dict(), strict=True,
                   cls=type(_unwrap_optimizer(optimizer)).__name__, copies=None if own else copies,
                   always_tensors=True, defer=snap.defer)
        components["optimizer"] = type(_unwrap_optimizer(optimizer)).__name__
    if lr_scheduler is not None:
        _add_state(snap, SCHEDULER_STATE, lr_scheduler.state_dict(), strict=False, cls=type(lr_scheduler).__name__,
                   copies=copies)
        components["lr_scheduler"] = type(lr_scheduler).__name__
    if scaler is not None:
        _add_state(snap, SCALER_STATE, scaler.state_dict(), strict=True, cls=type(scaler).__name__, copies=copies)
        components["scaler"] = type(scaler).__name__
    if rng_state:
        _add_state(snap, RNG_STATE, _get_rng_state(), strict=True, cls="rng", copies=copies, always_tensors=True)
        components["rng_state"] = True
    if states:
        for name, component in states.items():
            _add_state(snap, f"{STATES_DIR}/{name}", component.state_dict(), strict=True,
                       cls=type(component).__name__, copies=copies)
        components["states"] = {name: type(component).__name__ for name, component in states.items()}
    return components


def _add_state(snap: Snapshot, stem: str, state: dict, *, strict: bool, cls: str, copies: HostCopies | None,
               always_tensors: bool = False, defer: bool = False) -> None:
    """``stem.safetensors`` (its tensors, copied) and ``stem.json`` (the rest, encoded now) to write."""
    tensors: dict = {}
    dropped: list = []
    encoded = _encode(state, tensors, "", strict=strict, skipped=dropped)
    if copies is not None:
        tensors = copies.copy_dict(stem + ":", tensors, defer=defer)
    if tensors or always_tensors:
        snap.files.append((stem + ".safetensors", "tensors", tensors, None))
    snap.files.append((stem + ".json", "json", {"class": cls, "state_dict": encoded, "skipped": dropped}, None))
