"""TrainerState: what the loop knows about itself, saved as JSON in every checkpoint (HF's fields)."""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TrainerState:
    epoch: float | None = None
    global_step: int = 0
    max_steps: int = 0
    logging_steps: int | float = 500
    eval_steps: int | float = 500
    save_steps: int | float = 500
    train_batch_size: int | None = None
    num_train_epochs: int = 0
    num_input_tokens_seen: int = 0
    total_flos: float = 0.0
    log_history: list[dict[str, Any]] = field(default_factory=list)
    best_metric: float | None = None
    best_global_step: int | None = None
    best_model_checkpoint: str | None = None
    is_local_process_zero: bool = True
    is_world_process_zero: bool = True
    is_hyper_param_search: bool = False
    trial_name: str | None = None
    trial_params: dict[str, Any] | None = None
    stateful_callbacks: dict[str, Any] = field(default_factory=dict)
    # trainwright additions (ignored by HF readers)
    samples_seen: int = 0
    skipped_nonfinite_steps: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save_to_json(self, json_path: str) -> None:
        """Write the state as JSON, atomically (a temp file renamed over ``json_path``); errors are raised."""
        from .checkpoint.safe_fs import write_atomic

        write_atomic(json_path, json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n", degrade=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainerState:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def load_from_json(cls, json_path: str) -> TrainerState:
        with open(json_path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))


# ---------------------------------------------------------------------------------------------- checking
_COUNTS = ("global_step", "max_steps", "num_train_epochs", "num_input_tokens_seen", "samples_seen",
           "skipped_nonfinite_steps")


def check_trainer_state(data: Any, where: str) -> None:
    """Raise CheckpointError naming the file, the key and the fix when a ``trainer_state.json`` (trainwright's or
    transformers') holds a value of the wrong type or an absurd number. Unknown keys are ignored."""
    from .errors import CheckpointError

    def bad(key, value, expected):
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        raise CheckpointError(
            f"{where}: {key!r} is {shown} ({type(value).__name__}), expected {expected}. The file was edited or "
            f"damaged: correct {key!r}, resume from another checkpoint, or start a new run without "
            "resume_from_checkpoint.")

    if not isinstance(data, dict):
        raise CheckpointError(f"{where} holds a JSON {type(data).__name__}, not an object of trainer state fields; "
                              "resume from another checkpoint, or start a new run without resume_from_checkpoint.")

    def is_int(v):
        return isinstance(v, int) and not isinstance(v, bool)

    def is_num(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    if "global_step" not in data:
        bad("global_step", None, "the number of optimizer steps done (an integer >= 0)")
    for key in _COUNTS:
        if key in data and data[key] is not None and (not is_int(data[key]) or data[key] < 0):
            bad(key, data[key], "an integer >= 0")
    epoch = data.get("epoch")
    if epoch is not None and (not is_num(epoch) or not math.isfinite(epoch) or epoch < 0):
        bad("epoch", epoch, "a finite number >= 0 (or null)")
    for key in ("logging_steps", "eval_steps", "save_steps", "total_flos"):
        v = data.get(key)
        if v is not None and (not is_num(v) or not math.isfinite(v) or v < 0):
            bad(key, v, "a finite number >= 0")
    if data.get("train_batch_size") is not None and (not is_int(data["train_batch_size"])
                                                     or data["train_batch_size"] < 1):
        bad("train_batch_size", data["train_batch_size"], "an integer >= 1 (or null)")
    best = data.get("best_metric")
    if best is not None and not is_num(best):  # +-inf is how transformers starts the comparison: allowed
        bad("best_metric", best, "a number (or null)")
    best_step = data.get("best_global_step")
    if best_step is not None and (not is_int(best_step) or not 0 <= best_step <= data["global_step"]):
        bad("best_global_step", best_step, f"an integer between 0 and global_step={data['global_step']} (or null)")
    if data.get("best_model_checkpoint") is not None and not isinstance(data["best_model_checkpoint"], str):
        bad("best_model_checkpoint", data["best_model_checkpoint"], "a path (a string, or null)")
    history = data.get("log_history")
    if history is not None and (not isinstance(history, list) or not all(isinstance(h, dict) for h in history)):
        bad("log_history", history, "a list of objects")
    for key in ("stateful_callbacks", "trial_params"):
        if data.get(key) is not None and not isinstance(data[key], dict):
            bad(key, data[key], "an object (or null)")
