"""FSDP2 (``torch.distributed.fsdp.fully_shard``): the ``fsdp=`` / ``fsdp_config=`` settings, sharding the model,
and full-state views of a sharded model and optimizer for checkpoints.

Checkpoints stay one format whatever the parallelism: a full (unsharded) model and optimizer state, written by rank 0
with :mod:`trainwright.checkpoint` (safetensors + JSON, no pickle). Under FSDP2 the full state is gathered
collectively first (``get_model_state_dict`` / ``get_optimizer_state_dict`` with ``full_state_dict=True,
cpu_offload=True``) and on resume every rank reads the full state and keeps its own shard (``set_model_state_dict`` /
``set_optimizer_state_dict``). :class:`_FullStateModel` and :class:`_FullStateOptimizer` present the sharded model and
optimizer to the checkpoint code as if they were unsharded, so it needs no FSDP knowledge. The mixed-precision policy
of the shards comes from :class:`trainwright.precision.Precision`.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import warnings
from typing import Any

import torch

from ..errors import ConfigError

logger = logging.getLogger("trainwright")

# the fsdp= words of transformers' FSDPOption and what they mean here
_FSDP_OPTIONS = ("full_shard", "shard_grad_op", "hybrid_shard", "hybrid_shard_zero2", "no_shard", "offload",
                 "auto_wrap")
# fsdp_config keys (after dropping an "fsdp_" prefix, as transformers does)
_FSDP_CONFIG_KEYS = {
    "transformer_layer_cls_to_wrap": "class names of the blocks sharded one by one (default: the model's "
                                     "_no_split_modules, else the items of its layer lists)",
    "min_num_params": "shard every sub-module holding at least this many (not yet sharded) parameters",
    "reshard_after_forward": "free the gathered parameters after each block's forward (full_shard: True)",
    "offload_params": "keep parameters, gradients and optimizer states on the CPU (CPUOffloadPolicy)",
    "cpu_offload": "same as offload_params",
    "activation_checkpointing": "recompute activations in backward (gradient checkpointing)",
    "reduce_dtype": "dtype of the gradient reduce-scatter (default float32)",
    "version": "FSDP version: 2 (1 is accepted and runs FSDP2)",
}
# FSDP1 / accelerate keys that have no FSDP2 counterpart: accepted, with a note that they do nothing
_FSDP_IGNORED_KEYS = ("backward_prefetch", "forward_prefetch", "limit_all_gathers", "use_orig_params",
                      "sync_module_states", "cpu_ram_efficient_loading", "state_dict_type", "xla",
                      "xla_fsdp_settings", "xla_fsdp_grad_ckpt", "xla_fsdp_v2", "activation_cpu_offload",
                      "transformer_cls_names_to_wrap")


# ====================================================================== settings
class FSDPPlan:
    """The fsdp= / fsdp_config= settings, checked and normalised (transformers' forms accepted:
    "full_shard", "full_shard auto_wrap", ["full_shard", "offload"], True, and fsdp_config as a dict or
    the path of a JSON file, with or without "fsdp_" key prefixes)."""

    def __init__(self, fsdp: Any, fsdp_config: Any = None) -> None:
        options = _fsdp_options(fsdp)
        config = _fsdp_config(fsdp_config)
        self.options = options
        self.config = config
        strategies = [o for o in options if o in ("full_shard", "shard_grad_op", "hybrid_shard",
                                                  "hybrid_shard_zero2", "no_shard")]
        if len(strategies) > 1:
            raise ConfigError(f"fsdp={fsdp!r} names several sharding strategies ({', '.join(strategies)}): keep one.")
        self.strategy = strategies[0] if strategies else "full_shard"
        self.enabled = bool(options) and self.strategy != "no_shard"
        self.hybrid = self.strategy.startswith("hybrid_shard")
        default_reshard = self.strategy in ("full_shard", "hybrid_shard")
        self.reshard_after_forward = _as_bool(config.get("reshard_after_forward", default_reshard),
                                              "fsdp_config['reshard_after_forward']")
        self.offload = "offload" in options or _as_bool(config.get("offload_params", config.get("cpu_offload", False)),
                                                        "fsdp_config['offload_params']")
        self.activation_checkpointing = _as_bool(config.get("activation_checkpointing", False),
                                                 "fsdp_config['activation_checkpointing']")
        layers = config.get("transformer_layer_cls_to_wrap")
        if isinstance(layers, str):
            layers = [s.strip() for s in layers.split(",") if s.strip()]
        if layers is not None and (not isinstance(layers, (list, tuple)) or not all(isinstance(s,
                                                                                               str) for s in layers)):
            raise ConfigError(f"fsdp_config['transformer_layer_cls_to_wrap'] must be a class name or a list of class "
                              f"names (e.g. ['BertLayer']), got {layers!r}.")
        self.layer_classes = list(layers) if layers else None
        min_params = config.get("min_num_params", 0) or 0
        if not isinstance(min_params, int) or isinstance(min_params, bool) or min_params < 0:
            raise ConfigError(f"fsdp_config['min_num_params'] must be a non-negative integer, got {min_params!r}.")
        self.min_num_params = min_params
        reduce_dtype = config.get("reduce_dtype", "float32")
        dtype = getattr(torch, str(reduce_dtype).removeprefix("torch."), None)
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ConfigError(f"fsdp_config['reduce_dtype']={reduce_dtype!r} is not a floating dtype: use 'float32' "
                              "(default) or 'bfloat16'.")
        self.reduce_dtype = dtype
        version = config.get("version", 2)
        if version not in (1, 2, "1", "2"):
            raise ConfigError(f"fsdp_config['version']={version!r}: trainwright runs FSDP2 (version 2).")
        unknown = [k for k in config if k not in _FSDP_CONFIG_KEYS and k not in _FSDP_IGNORED_KEYS]
        if unknown:
            warnings.warn(f"fsdp_config keys {unknown} are not used by trainwright's FSDP2; the keys it reads: "
                          f"{', '.join(_FSDP_CONFIG_KEYS)}.", stacklevel=3)
        self.ignored = [k for k in config if k in _FSDP_IGNORED_KEYS]


def _fsdp_options(fsdp) -> list[str]:
    if fsdp in (None, False, "", []):
        return []
    if fsdp is True:
        return ["full_shard"]
    if isinstance(fsdp, str):
        items = fsdp.split()
    elif isinstance(fsdp, (list, tuple)):
        items = [w for item in fsdp for w in str(getattr(item, "value", item)).split()]
    else:
        raise ConfigError(f"fsdp={fsdp!r}: give a string such as 'full_shard' or 'full_shard auto_wrap', or a list.")
    items = [w.strip().lower() for w in items if w.strip()]
    bad = [w for w in items if w not in _FSDP_OPTIONS]
    if bad:
        raise ConfigError(f"fsdp={fsdp!r}: unknown option(s) {bad}. Valid: {', '.join(_FSDP_OPTIONS)} "
                          "(e.g. fsdp='full_shard auto_wrap').")
    if items and not any(w in ("full_shard", "shard_grad_op", "hybrid_shard", "hybrid_shard_zero2", "no_shard")
                         for w in items):
        items.insert(0, "full_shard")  # "offload" / "auto_wrap" alone: full sharding, as transformers
    return items


def _fsdp_config(fsdp_config) -> dict:
    if fsdp_config in (None, "", {}):
        return {}
    if isinstance(fsdp_config, (str, os.PathLike)):
        path = os.fspath(fsdp_config)
        try:
            with open(path, encoding="utf-8") as f:
                fsdp_config = json.load(f)
        except (OSError, ValueError) as e:
            raise ConfigError(f"fsdp_config={path!r} is not a readable JSON file ({e}): pass a dict or a JSON "
                              "file.") from e
    if not isinstance(fsdp_config, dict):
        raise ConfigError(f"fsdp_config must be a dict or the path of a JSON file, got {type(fsdp_config).__name__}.")
    return {(k[5:] if k.startswith("fsdp_") else k): v for k, v in fsdp_config.items()}


def _as_bool(value, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    if isinstance(value, int):
        return bool(value)
    raise ConfigError(f"{name} must be true or false, got {value!r}.")


# ====================================================================== sharding
def shard_model(model: Any, plan: FSDPPlan, *, mesh_shape: tuple[int, ...], device: torch.device, mp_policy: Any,
                log: bool) -> Any:
    """Shard ``model`` in place with ``fully_shard``: the blocks of :func:`_blocks_to_shard` one by one, then the
    root. Every rank first takes rank 0's weights (as DDP does when it wraps). ``mesh_shape`` is ``(world,)`` or, for
    hybrid sharding, ``(nodes, processes per node)``; ``mp_policy`` is the precision's ``MixedPrecisionPolicy``."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, fully_shard
    if plan.ignored and log:
        logger.info("fsdp_config keys %s have no FSDP2 counterpart and are ignored.", plan.ignored)
    if plan.activation_checkpointing and hasattr(model, "gradient_checkpointing_enable") and \
            not activation_checkpointing_on(model):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    # every rank must shard the same weights: rank 0's (DDP does the same when it wraps)
    with torch.no_grad():
        for tensor in list(model.parameters()) + list(model.buffers()):
            dist.broadcast(tensor.data, src=0)
    if plan.hybrid:
        mesh = init_device_mesh(device.type, mesh_shape, mesh_dim_names=("replicate", "shard"))
    else:
        mesh = init_device_mesh(device.type, mesh_shape)
    kwargs = {"mesh": mesh, "reshard_after_forward": plan.reshard_after_forward}
    if mp_policy is not None:
        kwargs["mp_policy"] = mp_policy
    if plan.offload:
        kwargs["offload_policy"] = CPUOffloadPolicy(pin_memory=device.type == "cuda")
    for module in _blocks_to_shard(model, plan):
        fully_shard(module, **kwargs)
    fully_shard(model, **kwargs)
    return model


def activation_checkpointing_on(model: Any) -> bool:
    """Whether activation (gradient) checkpointing is on (transformers v5 renamed the property)."""
    for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):
        if name in dir(type(model)):
            return bool(getattr(model, name))
    return False


def check_optimizer(optimizer: Any, model: Any) -> None:
    """An optimizer built before FSDP2 sharded the model holds the old, unsharded parameters."""
    if optimizer is None:
        return
    own = {id(p) for p in model.parameters()}
    if any(id(p) not in own for g in optimizer.param_groups for p in g["params"]):
        raise ConfigError("Trainer(optimizers=(optimizer, ...)) with fsdp: the optimizer was built before FSDP2 "
                          "sharded the model, so it holds parameters the model no longer uses. Pass "
                          "optimizer_cls_and_kwargs=(torch.optim.AdamW, {...}) instead (built after sharding), "
                          "or drop fsdp.")


def _blocks_to_shard(model, plan: FSDPPlan) -> list:
    """Sub-modules sharded one by one before the root (children before parents)."""
    names = set(plan.layer_classes or getattr(model, "_no_split_modules", None) or ())
    if names:
        blocks = [m for m in model.modules() if type(m).__name__ in names and m is not model]
        missing = set(plan.layer_classes or ()) - {type(m).__name__ for m in blocks}
        if missing:
            raise ConfigError(f"fsdp_config['transformer_layer_cls_to_wrap'] names {sorted(missing)}, but the model "
                              f"has no such module. Its module classes: "
                              f"{', '.join(sorted({type(m).__name__ for m in model.modules()})[:20])}.")
        return blocks
    if plan.min_num_params:
        chosen, done = [], set()
        for module in _post_order(model):
            if module is model:
                continue
            own = sum(p.numel() for p in module.parameters() if id(p) not in done)
            if own >= plan.min_num_params:
                chosen.append(module)
                done.update(id(p) for p in module.parameters())
        return chosen
    blocks = []  # the items of every list of identical blocks (encoder.layer, model.layers, h, ...)
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) > 1 and \
                len({type(m) for m in module}) == 1 and any(True for _ in module[0].parameters()):
            blocks.extend(module)
    return blocks


def _post_order(module):
    for child in module.children():
        yield from _post_order(child)
    yield module


def gather_full_state(model: Any, optimizer: Any = None) -> tuple:
    """(model view, optimizer view) holding the full state gathered to rank 0's CPU memory (collective)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_state = get_model_state_dict(model, options=options)
    optim_view = None
    if optimizer is not None:
        optim_state = get_optimizer_state_dict(model, optimizer, options=options)
        optim_view = _FullStateOptimizer(optimizer, model,
                                         _optimizer_state_by_index(optim_state) if optim_state else None)
    return _FullStateModel(model, model_state), optim_view


def loading_views(model: Any, optimizer: Any = None) -> tuple:
    """(model view, optimizer view) that take a full state and keep this rank's shard (every rank must load)."""
    return _FullStateModel(model), (_FullStateOptimizer(optimizer, model) if optimizer is not None else None)


# ====================================================================== full-state views of an FSDP2 model
class _FullStateModel:
    """Stands in for an FSDP2-sharded model where the checkpoint module expects a plain one.

    Saving: ``save_pretrained`` / ``state_dict`` give the gathered full state (rank 0; CPU tensors).
    Loading: ``load_state_dict`` distributes a full state dict (set_model_state_dict; collective).
    ``named_parameters`` gives the global shapes (DTensor), so the checkpoint's model fingerprint is the
    same as for the unsharded model."""

    def __init__(self, model, state: dict | None = None):
        self._model = model
        self._state = state
        save = getattr(model, "save_pretrained", None)
        if callable(save):
            @functools.wraps(save)
            def save_pretrained(save_directory, *args, **kwargs):
                if self._state is None:
                    raise RuntimeError("no gathered state to save")
                kwargs["state_dict"] = dict(self._state)  # save_pretrained pops from it
                return save(save_directory, *args, **kwargs)
            self.save_pretrained = save_pretrained
        name = type(model).__name__
        self.__class__ = type(name[4:] if name.startswith("FSDP") else name, (_FullStateModel,), {})

    def named_parameters(self, *args, **kwargs):
        return self._model.named_parameters(*args, **kwargs)

    def parameters(self, *args, **kwargs):
        return self._model.parameters(*args, **kwargs)

    def state_dict(self, *args, keep_vars: bool = False, **kwargs):
        if self._state is not None and not keep_vars:
            return dict(self._state)
        out = {}
        for k, v in self._model.state_dict(keep_vars=keep_vars).items():
            out[k] = v.to_local() if hasattr(v, "to_local") else v
        return out

    def load_state_dict(self, state_dict, strict: bool = True):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
        return set_model_state_dict(self._model, state_dict,
                                    options=StateDictOptions(full_state_dict=True, strict=strict))

    def __getattr__(self, name):
        if name.startswith("__") or name in ("_model", "_state", "_orig_mod", "module"):
            raise AttributeError(name)
        return getattr(self._model, name)


class _FullStateOptimizer:
    """Stands in for the optimizer of an FSDP2 model. ``state_dict`` is the gathered full state keyed by
    parameter index, exactly what ``optimizer.state_dict()`` gives for the unsharded model (so the
    checkpoint resumes at any world size, sharded or not); ``load_state_dict`` takes that form back."""

    def __init__(self, optimizer, model, state: dict | None = None):
        self.optimizer = optimizer  # checkpoint._unwrap_optimizer reads the class name through this
        self._model = model
        self._state = state

    def state_dict(self):
        if self._state is None:
            raise RuntimeError("no gathered optimizer state to save")
        return self._state

    def load_state_dict(self, state_dict):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict
        names = _param_names(self.optimizer, self._model)
        groups = []
        for group in state_dict["param_groups"]:
            ids = group["params"]
            if any(int(i) >= len(names) for i in ids):
                raise ValueError(f"the saved optimizer state has parameter index {max(ids)}, the optimizer has "
                                 f"{len(names)} parameters")
            groups.append({**group, "params": [names[int(i)] for i in ids]})
        state = {names[int(i)]: v for i, v in state_dict["state"].items()}
        set_optimizer_state_dict(self._model, self.optimizer, {"state": state, "param_groups": groups},
                                 options=StateDictOptions(full_state_dict=True))


def _param_names(optimizer, model) -> list[str]:
    """Fully qualified names of the optimizer's parameters, in its index order."""
    by_id = {id(p): n for n, p in model.named_parameters()}
    names = []
    for group in optimizer.param_groups:
        for p in group["params"]:
            if id(p) not in by_id:
                raise ValueError("the optimizer holds a parameter that is not in the model")
            names.append(by_id[id(p)])
    return names


def _optimizer_state_by_index(state: dict) -> dict:
    """A full optimizer state dict keyed by parameter name (torch.distributed.checkpoint) turned into
    the index-keyed form of optimizer.state_dict() (indices numbered across param_groups in order)."""
    index: dict[str, int] = {}
    groups = []
    for group in state["param_groups"]:
        ids = []
        for name in group["params"]:
            index.setdefault(name, len(index))
            ids.append(index[name])
        groups.append({**group, "params": ids})
    return {"state": {index[k]: v for k, v in state["state"].items() if k in index}, "param_groups": groups}
