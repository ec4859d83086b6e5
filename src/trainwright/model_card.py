"""``Trainer.create_model_card()``: a ``README.md`` model card in ``output_dir``, as transformers writes one.

The card has YAML front matter that the Hugging Face Hub (and ``huggingface_hub.ModelCard``) reads --
``library_name``, ``license``, ``language``, ``base_model``, ``tags``, ``datasets``, ``metrics`` and a
``model-index`` with the final evaluation results when the task, the dataset and the metrics are known -- and a
body with the base model, the datasets, the final evaluation results, the training hyperparameters, a table with
one row per evaluation of the run (from ``state.log_history``) and the framework versions.

Nothing is looked up on the network: the defaults come from the trainer (the model's ``_name_or_path`` when it
is a Hub name, the dataset's builder name, the model class's task). The card is written on the main process
only, to a temporary file renamed over ``README.md`` when complete; a failed write (a full disk, an I/O error)
is a warning, never an exception, so it cannot end a finished run.
"""
from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping
from typing import Any

logger = logging.getLogger("trainwright")

FILENAME = "README.md"
GENERATED_TAG = "generated_from_trainer"

# builder names of datasets loaded from local files: not Hub datasets, so not named as such (as transformers)
_LOCAL_BUILDERS = ("csv", "json", "pandas", "parquet", "text", "arrow", "generator", "imagefolder", "audiofolder")

# Hub metric ids recognised among the evaluation results (for the front matter's metrics / model-index)
_METRIC_IDS = ("accuracy", "bleu", "exact_match", "f1", "matthews_correlation", "pearsonr", "perplexity",
               "precision", "recall", "rouge", "sacrebleu", "spearmanr", "wer")

# model class name suffix -> (Hub task id, task name)
_TASKS = (
    (("ForSequenceClassification",), "text-classification", "Text Classification"),
    (("ForTokenClassification",), "token-classification", "Token Classification"),
    (("ForQuestionAnswering",), "question-answering", "Question Answering"),
    (("ForMultipleChoice",), "multiple-choice", "Multiple Choice"),
    (("ForMaskedLM",), "fill-mask", "Masked Language Modeling"),
    (("ForCausalLM", "LMHeadModel"), "text-generation", "Causal Language Modeling"),
    (("ForConditionalGeneration", "ForSeq2SeqLM"), "text2text-generation", "Sequence-to-sequence Language Modeling"),
    (("ForImageClassification",), "image-classification", "Image Classification"),
    (("ForAudioClassification",), "audio-classification", "Audio Classification"),
    (("ForCTC", "ForSpeechSeq2Seq"), "automatic-speech-recognition", "Automatic Speech Recognition"),
)
_TASK_NAMES = {task: name for _, task, name in _TASKS}

# keys of an evaluation log that are bookkeeping, not results
_NOT_RESULTS = ("runtime", "samples_per_second", "steps_per_second", "epoch", "step", "total_flos")


# ================================================================================================ entry point
def create_model_card(trainer: Any, language: Any = None, license: Any = None, tags: Any = None,
                      model_name: Any = None, finetuned_from: Any = None,
                      tasks: Any = None, dataset_tags: Any = None, dataset: Any = None,
                      dataset_args: Any = None) -> str | None:
    """Writes ``output_dir/README.md``; returns its path, or None on the other ranks or when the write failed."""
    if not trainer.is_world_process_zero():
        return None
    output_dir = trainer.args.output_dir
    path = os.path.join(output_dir, FILENAME)
    text = model_card_text(trainer, language=language, license=license, tags=_merge_tags(tags, path),
                           model_name=model_name, finetuned_from=finetuned_from, tasks=tasks,
                           dataset_tags=dataset_tags, dataset=dataset, dataset_args=dataset_args)
    return path if _write_atomically(path, text) else None


def model_card_text(trainer: Any, language: Any = None, license: Any = None, tags: Any = None, model_name: Any = None,
                    finetuned_from: Any = None,
                    tasks: Any = None, dataset_tags: Any = None, dataset: Any = None, dataset_args: Any = None) -> str:
    """The card as a string (front matter + body)."""
    import yaml

    model = _unwrapped(trainer.model)
    dataset_tags, dataset_args, dataset_meta = _dataset_defaults(trainer, dataset_tags, dataset_args)
    dataset = _as_list(dataset) or dataset_tags
    if finetuned_from is None:
        finetuned_from = _hub_name(model)
    tasks = _as_list(tasks) or _task_of(model)
    if model_name is None:
        model_name = os.path.basename(os.path.normpath(trainer.args.output_dir)) or finetuned_from or "model"
    tags = _as_list(tags)
    for tag in (GENERATED_TAG, "trainwright"):
        if tag not in tags:
            tags.append(tag)
    rows, final = evaluation_results(trainer.state.log_history)

    front = {"library_name": "transformers"}
    if language:
        front["language"] = _as_list(language)
    if license:
        front["license"] = license
    if finetuned_from:
        front["base_model"] = finetuned_from
    front["tags"] = tags
    if dataset_tags:
        front["datasets"] = dataset_tags
    metric_ids = _metric_ids(final)
    if metric_ids:
        front["metrics"] = list(metric_ids)
    front["model-index"] = [{"name": model_name, "results": _model_index_results(
        tasks, dataset_tags, dataset, dataset_args, dataset_meta, metric_ids, final)}]

    lines = ["---", yaml.safe_dump(front, sort_keys=False, allow_unicode=True).rstrip("\n"), "---", "",
             "<!-- This model card was written by trainwright's Trainer.create_model_card() from what the Trainer "
             "knew. Proofread and complete it, then remove this comment. -->", "", f"# {model_name}", ""]
    base = f"a fine-tuned version of [{finetuned_from}](https://huggingface.co/{finetuned_from})" \
        if finetuned_from else "trained from scratch"
    lines.append(f"This model is {base} on {_dataset_phrase(dataset)}.")
    if final:
        lines += ["It achieves the following results on the evaluation set:"]
        lines += [f"- {_title(k)}: {_fmt(v)}" for k, v in final.items()]
    lines += ["", "## Model description", "", "More information needed", "",
              "## Intended uses & limitations", "", "More information needed", "",
              "## Training and evaluation data", "", "More information needed", "",
              "## Training procedure", "", "### Training hyperparameters", "",
              "The following hyperparameters were used during training:"]
    lines += [f"- {k}: {v}" for k, v in hyperparameters(trainer).items()]
    if rows:
        lines += ["", "### Training results", "", markdown_table(rows)]
    lines += ["", "### Framework versions", ""] + [f"- {name} {version}" for name, version in framework_versions()]
    return "\n".join(lines) + "\n"


# ================================================================================================ results
def evaluation_results(log_history: list[dict]) -> tuple[list[dict], dict]:
    """(one table row per evaluation during training, the last evaluation's results).

    A row holds the last training loss logged before that evaluation ("No log" if none yet), the epoch, the step,
    the validation loss and every other ``eval_*`` result; an evaluation after ``train()`` ended is not a row of
    the training table but can be the final result."""
    rows, final = [], {}
    train_loss = "No log"
    training_ended = False
    for entry in log_history:
        if "train_runtime" in entry:
            training_ended = True
            continue
        if "loss" in entry:
            train_loss = entry["loss"]
        results = {k: v for k, v in entry.items() if _is_eval_result(k)}
        if not results:
            continue
        final = {k[len("eval_"):]: v for k, v in results.items()}
        if training_ended:
            continue
        row = {"Training Loss": train_loss, "Epoch": entry.get("epoch"), "Step": entry.get("step")}
        if "eval_loss" in results:
            row["Validation Loss"] = results["eval_loss"]
        row.update({_title(k[len("eval_"):]): v for k, v in results.items() if k != "eval_loss"})
        rows.append(row)
    return rows, final


def _is_eval_result(key: str) -> bool:
    return key.startswith("eval_") and not key.endswith(_NOT_RESULTS)


def markdown_table(rows: list[dict]) -> str:
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    cells = [[_fmt(row.get(c, "-")) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    out = ["| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths)) + " |",
           "|" + "|".join(":" + "-" * w + ":" for w in widths) + "|"]
    out += ["| " + " | ".join(v.ljust(w) for v, w in zip(r, widths)) + " |" for r in cells]
    return "\n".join(out)


def _metric_ids(final: dict) -> dict[str, str]:
    """Hub metric id -> result key, for the results whose name is a known metric."""
    found = {}
    for key in final:
        ident = key.lower()
        if ident in _METRIC_IDS:
            found[ident] = key
        elif ident == "rouge1":
            found["rouge"] = key
    return found


def _model_index_results(tasks, dataset_tags, dataset, dataset_args, dataset_meta, metric_ids, final) -> list:
    """One result per (task, dataset) with the final metrics; the Hub rejects a result without all three."""
    known_tasks = [t for t in tasks if t in _TASK_NAMES]
    if not known_tasks or not dataset_tags or not metric_ids:
        return []
    names = dataset + dataset_tags[len(dataset):] if len(dataset) < len(dataset_tags) else dataset
    results = []
    for task in known_tasks:
        for i, tag in enumerate(dataset_tags):
            entry = {"name": str(names[i]), "type": tag}
            if i < len(dataset_meta) and isinstance(dataset_meta[i], Mapping):
                entry.update({k: v for k, v in dataset_meta[i].items() if v is not None})
            if i < len(dataset_args) and dataset_args[i] is not None:
                entry["args"] = dataset_args[i]
            metrics = [{"name": _title(key), "type": ident, "value": _plain(final[key])}
                       for ident, key in metric_ids.items()]
            results.append({"task": {"name": _TASK_NAMES[task], "type": task}, "dataset": entry, "metrics": metrics})
    return results


# ================================================================================================ hyperparameters
def hyperparameters(trainer: Any) -> dict:
    args = trainer.args
    world = max(int(getattr(trainer.dist, "world_size", 1) or 1), 1)
    accum = args.gradient_accumulation_steps
    out = {"learning_rate": args.learning_rate, "train_batch_size": args.per_device_train_batch_size,
           "eval_batch_size": args.per_device_eval_batch_size, "seed": args.seed}
    if args.data_seed is not None:
        out["data_seed"] = args.data_seed
    if world > 1:
        out["distributed_type"] = "multi-GPU" if trainer.device.type == "cuda" else "multi-process"
        out["num_devices"] = world
    if accum > 1:
        out["gradient_accumulation_steps"] = accum
    if args.per_device_train_batch_size * world * accum != args.per_device_train_batch_size:
        out["total_train_batch_size"] = args.per_device_train_batch_size * world * accum
    if args.per_device_eval_batch_size * world != args.per_device_eval_batch_size:
        out["total_eval_batch_size"] = args.per_device_eval_batch_size * world
    if getattr(args, "max_tokens_per_batch", None):
        out["max_tokens_per_batch"] = args.max_tokens_per_batch
    out["optimizer"] = _optimizer_description(trainer)
    out["lr_scheduler_type"] = getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)
    if args.lr_scheduler_kwargs:
        out["lr_scheduler_kwargs"] = args.lr_scheduler_kwargs
    if args.warmup_steps:
        key = "lr_scheduler_warmup_ratio" if isinstance(args.warmup_steps, float) and args.warmup_steps < 1 \
            else "lr_scheduler_warmup_steps"
        out[key] = args.warmup_steps
    if args.max_steps is not None and args.max_steps > 0:
        out["training_steps"] = args.max_steps
    else:
        out["num_epochs"] = args.num_train_epochs
    if args.weight_decay:
        out["weight_decay"] = args.weight_decay
    if args.fp16:
        out["mixed_precision_training"] = "Native AMP (fp16)"
    elif args.bf16:
        out["mixed_precision_training"] = "bf16 autocast"
    if args.label_smoothing_factor:
        out["label_smoothing_factor"] = args.label_smoothing_factor
    return out


def _optimizer_description(trainer) -> str:
    """The optimizer train() used (read from the optimizer itself), or the one the arguments ask for."""
    args = trainer.args
    optimizer = getattr(trainer, "optimizer", None)
    if optimizer is not None:
        defaults = getattr(optimizer, "defaults", {}) or {}
        parts = []
        if "betas" in defaults:
            parts.append(f"betas=({defaults['betas'][0]},{defaults['betas'][1]})")
        if "eps" in defaults:
            parts.append(f"epsilon={defaults['eps']}")
        if defaults.get("momentum"):
            parts.append(f"momentum={defaults['momentum']}")
        return type(optimizer).__name__ + (" with " + " and ".join(parts) if parts else "")
    name = getattr(args.optim, "value", args.optim)
    extra = f" and optimizer_args={args.optim_args}" if args.optim_args else ""
    if "adam" in str(name).lower():
        return f"{name} with betas=({args.adam_beta1},{args.adam_beta2}) and epsilon={args.adam_epsilon}{extra}"
    return f"{name}{extra}"


def framework_versions() -> list[tuple[str, str]]:
    import importlib.metadata as md

    import trainwright
    out = [("Trainwright", trainwright.__version__)]
    for name, dist in (("Transformers", "transformers"), ("Pytorch", "torch"), ("Datasets", "datasets"),
                       ("Tokenizers", "tokenizers")):
        try:
            out.append((name, md.version(dist)))
        except md.PackageNotFoundError:
            continue
    return out


# ================================================================================================ defaults
def _dataset_defaults(trainer, dataset_tags, dataset_args):
    """dataset_tags / dataset_args / per-dataset metadata, defaulting (as transformers) to the builder of the eval
    (else train) dataset when it was loaded from the Hub."""
    tags, args_, meta = _as_list(dataset_tags), _as_list(dataset_args), []
    one = trainer.eval_dataset if trainer.eval_dataset is not None else trainer.train_dataset
    if isinstance(one, Mapping):
        one = next(iter(one.values()), None)
    builder = getattr(one, "builder_name", None)
    if isinstance(builder, str) and builder and builder not in _LOCAL_BUILDERS:
        config = getattr(one, "config_name", None)
        split = getattr(one, "split", None)
        meta = [{"config": config, "split": str(split) if split is not None else None}]
        if not tags:
            tags = [builder]
        if not args_ and config:
            args_ = [config]
    return tags, args_, meta


def _hub_name(model) -> str | None:
    """The model's ``_name_or_path`` when it names a Hub repository (not a local directory, not empty)."""
    name = getattr(getattr(model, "config", None), "_name_or_path", None)
    if not isinstance(name, str) or not name or os.path.isdir(name) or os.path.isabs(name):
        return None
    return name


def _task_of(model) -> list[str]:
    name = type(model).__name__
    for suffixes, task, _ in _TASKS:
        if name.endswith(suffixes):
            return [task]
    return []


def _merge_tags(tags, path: str) -> list[str]:
    """The tags given, plus those of an existing card at ``path`` (as transformers keeps them)."""
    tags = _as_list(tags)
    try:
        if not os.path.isfile(path):
            return tags
        import yaml
        with open(path, encoding="utf-8") as f:
            text = f.read()
        if text.startswith("---"):
            front = yaml.safe_load(text.split("---", 2)[1]) or {}
            for tag in _as_list(front.get("tags") if isinstance(front, Mapping) else None):
                if tag not in tags:
                    tags.append(tag)
    except Exception as e:  # an unreadable old card is replaced, not fatal
        logger.info("Could not read the tags of the existing %s (%s); writing a new card.", path, e)
    return tags


def _dataset_phrase(dataset: list) -> str:
    if not dataset:
        return "an unknown dataset"
    if len(dataset) == 1:
        return f"the {dataset[0]} dataset"
    return ", ".join(f"the {d}" for d in dataset[:-1]) + f" and the {dataset[-1]} datasets"


# ================================================================================================ small helpers
def _as_list(value) -> list:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [v for v in value if v is not None]


def _title(key: str) -> str:
    return " ".join(part.capitalize() for part in key.split("_"))


def _plain(value):
    if hasattr(value, "item"):
        value = value.item()
    return value


def _fmt(value) -> str:
    value = _plain(value)
    if isinstance(value, float):
        text = str(value)
        if "." in text and len(text.split(".")[1]) > 4 and "e" not in text:
            return f"{value:.4f}"
        return text
    return "None" if value is None else str(value)


def _unwrapped(model):
    from .distributed import unwrap_model
    return unwrap_model(model)


def _write_atomically(path: str, text: str) -> bool:
    from .checkpoint.safe_fs import write_atomic
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        return write_atomic(path, text, degrade=False)  # a symlink at path is replaced, never followed
    except OSError as e:
        warnings.warn(f"create_model_card: could not write {path} ({e.strerror or e}); the run is not affected. "
                      f"Free space or fix the directory, then call trainer.create_model_card() again.",
                      RuntimeWarning, stacklevel=3)
        return False
