"""Shared set-up of the distributed test scripts (run by torchrun) and of their single-process
references in tests/test_distributed.py: the same tiny BERT, data and arguments on both sides."""
from __future__ import annotations

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)
for _k, _v in (("HF_HUB_OFFLINE", "1"), ("HF_DATASETS_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"),
               ("TOKENIZERS_PARALLELISM", "false"), ("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")):
    os.environ.setdefault(_k, _v)

TRAIN_ROWS = 301  # 18 global batches of 16 and a last one of 13 rows (7 + 6 on two ranks): 19 steps an epoch
EVAL_ROWS = 37    # odd: with batches of 8, 5 batches, 3 on rank 0 and 2 on rank 1
TINY_EVAL_ROWS = 3  # one batch: rank 1 has no row at all
MAX_STEPS = 20    # crosses the epoch boundary (a new shuffle) after step 19
STOP_AT = 10


def tokenizer():
    from transformers import AutoTokenizer

    from conftest import minilm_path
    return AutoTokenizer.from_pretrained(minilm_path())


def _tokenized(split, rows, tok):
    from conftest import sst2_dataset
    ds = sst2_dataset(split, rows)
    return ds.map(lambda b: tok(b["sentence"], truncation=True, max_length=32), batched=True)


def train_data(tok):
    return _tokenized("train", TRAIN_ROWS, tok)


def eval_data(tok, rows=EVAL_ROWS):
    return _tokenized("dev", rows, tok)


def make_model(tok, seed=0):
    import torch
    from transformers import BertForSequenceClassification

    from conftest import tiny_bert_config
    torch.manual_seed(seed)
    return BertForSequenceClassification(tiny_bert_config(tok, dropout=0.0))


def train_args(out, **kw):
    from trainwright import TrainingArguments
    base = dict(output_dir=str(out), per_device_train_batch_size=8, per_device_eval_batch_size=8,
                max_steps=MAX_STEPS, learning_rate=3e-3, warmup_steps=2, weight_decay=0.01, seed=7,
                logging_steps=5, save_strategy="no", report_to="none", disable_tqdm=True, write_report=False,
                dataloader_num_workers=0, include_num_input_tokens_seen="non_padding")  # summed over the ranks
    base.update(kw)
    return TrainingArguments(**base)


def accuracy(eval_pred):
    import numpy as np
    logits, labels = eval_pred
    return {"accuracy": float((np.argmax(logits, axis=-1) == labels).mean()),
            "mean_logit": float(np.asarray(logits, dtype=np.float64).mean())}


class StopAt:
    """A callback that stops (and saves) at a step, as if the job had been cut there."""

    def __new__(cls, step):
        from trainwright import TrainerCallback

        class _StopAt(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step == step:
                    control.should_training_stop = True
                    control.should_save = True
        return _StopAt()


def train_logs(trainer):
    return [[h["step"], h["loss"]] for h in trainer.state.log_history if "loss" in h]


def train_counts(trainer):
    """Rows and tokens seen (state and logs): global figures, the same under any number of ranks."""
    return {"samples_seen": trainer.state.samples_seen, "tokens_seen": trainer.state.num_input_tokens_seen,
            "logged_tokens_seen": [h["num_input_tokens_seen"] for h in trainer.state.log_history
                                   if "num_input_tokens_seen" in h]}


def batch_metrics_record(tok, out):
    """evaluate() with batch_eval_metrics (a streaming accuracy: each call's compute_result and rows) and
    predict() with eval_use_gather_object (a prediction_step returning one dict per row), on the sets of
    evaluation_record."""
    import numpy as np

    from trainwright import Trainer
    calls = []

    def streaming_accuracy(p, compute_result=False):
        calls.append([bool(compute_result), int(p.label_ids.shape[0])])
        hits = np.asarray(p.predictions.argmax(-1).cpu() == p.label_ids.cpu())
        totals = streaming_accuracy.__dict__.setdefault("totals", [0, 0])
        totals[0], totals[1] = totals[0] + int(hits.sum()), totals[1] + len(hits)
        if compute_result:
            streaming_accuracy.totals = [0, 0]
            return {"accuracy": totals[0] / totals[1]}
        return {}

    class ObjectTrainer(Trainer):
        def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
            loss, logits, labels = super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
            return loss, [{"argmax": int(i)} for i in logits.argmax(-1).tolist()], [
                {"label": int(y)} for y in labels.tolist()]

    streamed = Trainer(make_model(tok, seed=3), train_args(os.path.join(out, "batch"), batch_eval_metrics=True),
                       processing_class=tok, compute_metrics=streaming_accuracy)
    objects = ObjectTrainer(make_model(tok, seed=3), train_args(os.path.join(out, "objects"),
                                                                eval_use_gather_object=True), processing_class=tok)
    record = {}
    for name, rows in (("odd", EVAL_ROWS), ("tiny", TINY_EVAL_ROWS)):
        data = eval_data(tok, rows)
        calls.clear()
        accuracy = streamed.evaluate(data)["eval_accuracy"]
        pred = objects.predict(data)
        record[name] = {"accuracy": accuracy, "calls": list(calls), "labels": [r["label"] for r in pred.label_ids],
                        "argmax": [r["argmax"] for r in pred.predictions]}
    return record


def per_batch_record(tok, out):
    """predict() with eval_do_concat_batches=False and evaluate() with include_for_metrics=["loss"] (what
    compute_metrics gets: the per-batch shapes and losses), on the sets of evaluation_record."""
    import numpy as np

    from trainwright import Trainer
    seen = {}

    def keep(p):
        seen["p"] = p
        return {}

    trainer = Trainer(make_model(tok, seed=3), train_args(os.path.join(out, "per_batch"), eval_do_concat_batches=False,
                                                          include_for_metrics=["loss"]),
                      processing_class=tok, compute_metrics=keep)
    record = {}
    for name, rows in (("odd", EVAL_ROWS), ("tiny", TINY_EVAL_ROWS)):
        data = eval_data(tok, rows)
        pred = trainer.predict(data)
        loss = trainer.evaluate(data)["eval_loss"]
        record[name] = {"predictions": [np.asarray(p).tolist() for p in pred.predictions],
                        "label_ids": [np.asarray(y).tolist() for y in pred.label_ids],
                        "losses": [np.asarray(x).tolist() for x in seen["p"].losses], "eval_loss": loss}
    return record


def dump(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def evaluation_record(trainer, tok):
    """evaluate() and predict() on an odd-sized set and on a set smaller than one batch per rank."""
    out = {}
    for name, rows in (("odd", EVAL_ROWS), ("tiny", TINY_EVAL_ROWS)):
        data = eval_data(tok, rows)
        metrics = trainer.evaluate(data)
        pred = trainer.predict(data)
        out[name] = {"metrics": {k: v for k, v in metrics.items() if "runtime" not in k and "per_second" not in k},
                     "predictions": pred.predictions.tolist(), "label_ids": pred.label_ids.tolist(),
                     "labels": list(data["label"]), "test_loss": pred.metrics.get("test_loss")}
    return out
