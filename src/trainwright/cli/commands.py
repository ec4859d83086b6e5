"""The ``train``, ``evaluate`` and ``predict`` commands: each loads what its config names (data through
:mod:`trainwright.cli.data`, models through :mod:`trainwright.cli.models`), asks the task preset for the
task-specific parts, and runs :class:`trainwright.Trainer` (or the task's trainer class)."""
from __future__ import annotations

import csv
import json
import os
from typing import Any

from ..errors import ConfigError
from .config import RunConfig
from .data import DataLoader, check_has_labels, check_split_columns, main_process, row_ids, tokenize_split
from .models import from_pretrained, load_model, load_tokenizer, model_from_config, resolve_model
from .tasks import LabelInfo, PredictionInputs


# ====================================================================== train
def run_train(cfg: RunConfig, resume: bool | str | None = None) -> dict:
    """The whole fine-tuning run; returns the evaluation metrics (empty without a validation set)."""
    task = cfg.task
    resume = _check_resume(cfg, resume)
    model_path = resolve_model(cfg.model, cfg) if cfg.model_config is None else None
    tokenizer_path = resolve_model(cfg.tokenizer, cfg) if cfg.tokenizer else model_path

    loader = DataLoader(cfg)
    splits = loader.load(("train", "validation"))
    train, validation = splits["train"], splits.get("validation")
    check_split_columns(cfg, train, loader.where["train"], with_labels=True)
    if validation is not None:
        check_split_columns(cfg, validation, loader.where["validation"], with_labels=True)
    info = task.label_info(loader.unlimited["train"], cfg.data)  # labels of all training rows, not just the limit
    if validation is not None:
        task.check_labels(validation, cfg.data, info, loader.where["validation"], loader.where["train"])
    args = cfg.training_args(has_validation=validation is not None)

    tokenizer = task.prepare_tokenizer(load_tokenizer(tokenizer_path))
    train_tok = tokenize_split(cfg, train, "train", tokenizer, info, with_labels=True)
    eval_tok = tokenize_split(cfg, validation, "validation", tokenizer, info, with_labels=True) \
        if validation is not None else None

    if cfg.model_config is not None:  # a new model, e.g. a tiny Llama with the tokenizer's vocabulary
        model = model_from_config(task, cfg.model_config, tokenizer, info, seed=args.seed)
    else:
        from ..outputs import set_seed
        set_seed(args.seed)  # a new head, and a peft adapter, are initialised from training.seed, in any process
        model = load_model(task, model_path, info)
    model = task.prepare_model(model, tokenizer)
    if cfg.peft is not None:
        from .peft import apply_peft
        model = apply_peft(model, cfg.peft, cfg.path)
    trainer = task.trainer_class()(model=model, args=args, train_dataset=train_tok, eval_dataset=eval_tok,
                                   processing_class=tokenizer,
                                   data_collator=task.collator(tokenizer, cfg.data, model=model),
                                   compute_metrics=task.compute_metrics(cfg.metrics, info, tokenizer))
    result = trainer.train(resume_from_checkpoint=resume)
    trainer.save_metrics("train", result.metrics)
    metrics = _final_evaluation(trainer, args) if eval_tok is not None else {}
    trainer.save_model(cfg.output_dir)
    if not main_process():
        return metrics
    if cfg.peft is not None:
        from .peft import save_base_config
        save_base_config(model, cfg.output_dir)
    _write_run_config(cfg)
    print(f"Model and tokenizer saved to {cfg.output_dir}"
          + (f"; metrics in {os.path.join(cfg.output_dir, 'eval_results.json')}" if metrics else ""), flush=True)
    return metrics


def _check_resume(cfg: RunConfig, resume):
    """``--resume`` (True: the newest checkpoint in output_dir) or ``--resume PATH``, checked before loading."""
    if resume is True:
        from ..checkpoint import latest_checkpoint
        if latest_checkpoint(cfg.output_dir) is None:
            raise ConfigError(f"--resume: {cfg.output_dir} holds no complete checkpoint-<step> directory to resume "
                              "from. Run without --resume, or pass --resume PATH/TO/checkpoint-N.")
    elif isinstance(resume, str):
        resume = cfg.resolve_path(resume)
        if not os.path.isdir(resume):
            raise ConfigError(f"--resume {resume}: no such checkpoint directory.")
    return resume


def _final_evaluation(trainer, args) -> dict:
    metrics = _final_eval_from_history(trainer, args)
    if metrics is None:  # the last evaluation was not of the final weights
        metrics = trainer.evaluate()
    trainer.log_metrics("eval", metrics)
    trainer.save_metrics("eval", metrics)
    return metrics


def _final_eval_from_history(trainer, args) -> dict | None:
    """The metrics of an evaluation run at the last step (eval_strategy=epoch/steps), so the final
    weights are not evaluated twice; None when there is none or the best model was reloaded."""
    if args.load_best_model_at_end:
        return None
    for entry in reversed(trainer.state.log_history):
        if "eval_runtime" in entry:
            if entry.get("step") != trainer.state.global_step:
                return None
            return {k: v for k, v in entry.items() if k.startswith("eval_") or k == "epoch"}
    return None


def _write_run_config(cfg: RunConfig) -> None:
    import yaml
    with open(os.path.join(cfg.output_dir, "trainwright_config.yaml"), "w", encoding="utf-8") as f:
        f.write(f"# the config of this run (from {cfg.path}, after --set overrides)\n")
        yaml.safe_dump(cfg.raw, f, sort_keys=False, allow_unicode=True)


# ====================================================================== evaluate and predict
def _load_trained(cfg: RunConfig, model_dir: str | None, predict: bool = False):
    path = cfg.resolve_path(model_dir) if model_dir else cfg.output_dir
    from .peft import has_adapter
    adapter = has_adapter(path) and not os.path.isfile(os.path.join(path, "config.json"))
    if not adapter and not os.path.isfile(os.path.join(path, "config.json")):
        hint = "run `trainwright train CONFIG` first, or pass --model DIR" if not model_dir else \
            "point --model at a directory written by trainwright train or save_pretrained"
        raise ConfigError(f"no trained model in {path} (config.json, or adapter_config.json for an adapter, "
                          f"missing): {hint}.")
    has_tokenizer = any(os.path.isfile(os.path.join(path, f)) for f in ("tokenizer.json", "tokenizer_config.json",
                                                                        "vocab.txt"))
    tokenizer = load_tokenizer(path if has_tokenizer else resolve_model(cfg.tokenizer or cfg.model, cfg))
    tokenizer = cfg.task.prepare_tokenizer(tokenizer, predict=predict)  # e.g. left padding for generation
    if adapter:  # an adapter (peft: section): loaded onto its base model
        from .peft import load_adapter_model
        model = load_adapter_model(cfg, path)
    else:
        import transformers
        model = from_pretrained(getattr(transformers, cfg.task.model_class).from_pretrained, path, "model")
    model = cfg.task.prepare_model(model, tokenizer)
    label_names = [str(n) for n in cfg.data["label_names"]] if cfg.data.get("label_names") else None
    info = LabelInfo.from_model_config(model.config, label_names)
    return path, model, tokenizer, info


def _eval_trainer(cfg: RunConfig, model, tokenizer, info, eval_dataset=None, predict: bool = False):
    task = cfg.task
    args = cfg.training_args(has_validation=False, eval_strategy="no", save_strategy="no",
                             load_best_model_at_end=False, eval_on_start=False, write_report=False,
                             **(task.predict_overrides(cfg.data) if predict else {}))
    return task.trainer_class()(model=model, args=args, eval_dataset=eval_dataset, processing_class=tokenizer,
                                data_collator=task.collator(tokenizer, cfg.data, model=model, predict=predict),
                                compute_metrics=task.compute_metrics(cfg.metrics, info, tokenizer))


def _pick_split(cfg: RunConfig, loader: DataLoader, split: str | None, default_order) -> tuple[str, Any]:
    order = [split] if split else list(default_order)
    for name in order:
        splits = loader.load((name,))
        if name in splits:
            return name, splits[name]
    if split:
        raise ConfigError(f"{cfg.path}: there is no {split} split: set data.{split}"
                          + (" (or data.validation_split)." if split == "validation" else "."))
    raise ConfigError(f"{cfg.path}: no {' or '.join(order)} data to use: set data.{order[0]}.")


def run_evaluate(cfg: RunConfig, model_dir: str | None = None, split: str | None = None,
                 output: str | None = None) -> dict:
    path, model, tokenizer, info = _load_trained(cfg, model_dir)
    loader = DataLoader(cfg)
    name, ds = _pick_split(cfg, loader, split, ("validation",))
    where = loader.where[name]
    check_has_labels(cfg, ds, where, name)
    check_split_columns(cfg, ds, where, with_labels=True)
    cfg.task.check_labels(ds, cfg.data, info, where, f"the model in {path}")
    tok = tokenize_split(cfg, ds, name, tokenizer, info, with_labels=True)
    trainer = _eval_trainer(cfg, model, tokenizer, info, tok)
    metrics = trainer.evaluate(metric_key_prefix="eval")
    trainer.log_metrics("eval", metrics)
    if not main_process():
        return metrics
    output = output or os.path.join(cfg.output_dir, "eval_results.json")
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(output, "w", encoding="utf-8") as f:
        json.dump(metrics, f, indent=4, sort_keys=True)
    print(f"Evaluation results written to {output}", flush=True)
    return metrics


def run_predict(cfg: RunConfig, model_dir: str | None = None, split: str | None = None,
                output: str | None = None) -> str:
    output = output or os.path.join(cfg.output_dir, "predictions.csv")
    ext = os.path.splitext(output)[1].lower()
    if ext not in (".csv", ".jsonl"):
        raise ConfigError(f"--output {output}: write predictions to a .csv or .jsonl file.")
    path, model, tokenizer, info = _load_trained(cfg, model_dir, predict=True)
    loader = DataLoader(cfg)
    name, ds = _pick_split(cfg, loader, split, ("test", "validation"))
    where = loader.where[name]
    check_split_columns(cfg, ds, where, with_labels=False)
    label_col = cfg.task.label_column(cfg.data)
    has_gold = label_col is not None and label_col in ds.column_names
    if has_gold:
        cfg.task.check_labels(ds, cfg.data, info, where, f"the model in {path}")
    tok = tokenize_split(cfg, ds, name, tokenizer, info, with_labels=False)
    trainer = _eval_trainer(cfg, model, tokenizer, info, predict=True)
    out = trainer.predict(tok, **cfg.task.predict_kwargs(cfg.data))
    if not main_process():
        return output
    inputs = PredictionInputs(ids=row_ids(cfg, ds, loader.source_rows.get(name)), info=info, tokenizer=tokenizer,
                              gold=list(ds[label_col]) if has_gold else None, dataset=ds, data=cfg.data)
    rows = cfg.task.prediction_rows(out.predictions, inputs)
    write_rows(rows, output)
    print(f"{len(rows):,} predictions for {where} written to {output}", flush=True)
    return output


def write_rows(rows: list[dict], output: str) -> None:
    """Prediction rows as JSONL (one object per line) or CSV (lists space-separated, dicts as prefixed columns)."""
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    if output.lower().endswith(".jsonl"):
        with open(output, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        return
    flat = []
    for row in rows:
        r = {k: (" ".join(map(str, v)) if isinstance(v, list) else v)  # a tag sequence: space-separated
             for k, v in row.items() if not isinstance(v, dict)}
        for k, v in row.items():
            if isinstance(v, dict):
                prefix = "prob" if k == "probabilities" else k
                r.update({f"{prefix}_{kk}": vv for kk, vv in v.items()})
        flat.append(r)
    fields = list(dict.fromkeys(k for r in flat for k in r))
    with open(output, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(flat)
