"""Trainer subclasses as client code writes them keep working with every argument, metric_for_best_model and
load_best_model_at_end included: overrides of evaluate() (transformers' question-answering pattern), predict(),
compute_loss() and get_train_dataloader() (any iterable of batches). The pre-flight dry evaluation goes through
the methods the run uses, steps aside where a subclass computes the metrics itself, and a compute_metrics that
always raises stops the run before training, with its own traceback."""
import time
import traceback

import numpy as np
import pytest
import torch

from conftest import accuracy_metrics
from trainwright import ConfigError, PredictionOutput, Trainer, TrainerCallback, TrainingArguments


def _args(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=8, per_device_eval_batch_size=8,
                learning_rate=2e-3, save_strategy="no", report_to="none", disable_tqdm=True, write_report=False,
                logging_steps=1, seed=3)
    base.update(kw)
    return TrainingArguments(**base)


def _best_args(tmp_path, metric, **kw):
    return _args(tmp_path, num_train_epochs=3, eval_strategy="epoch", save_strategy="epoch",
                 load_best_model_at_end=True, metric_for_best_model=metric, **kw)


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_best_loaded(trainer):
    """The final weights are those of the best checkpoint (read back from its safetensors file)."""
    from safetensors.torch import load_file
    best = trainer.state.best_model_checkpoint
    assert best is not None
    saved = load_file(f"{best}/model.safetensors")
    now = trainer.model.state_dict()
    assert all(torch.equal(now[k], v) for k, v in saved.items() if k in now)


class Counter(TrainerCallback):
    def __init__(self):
        self.evaluate = self.prediction_steps = 0

    def on_evaluate(self, args, state, control, **kwargs):
        self.evaluate += 1

    def on_prediction_step(self, args, state, control, **kwargs):
        self.prediction_steps += 1


# ====================================================================== evaluate() overridden (the QA pattern)
class PostProcessingTrainer(Trainer):
    """As transformers' examples/pytorch/question-answering/trainer_qa.py: metrics computed from post-processed
    predictions, with compute_metrics switched off around evaluation_loop."""

    def __init__(self, *args, eval_examples=None, post_process_function=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.eval_examples = eval_examples
        self.post_process_function = post_process_function

    def evaluate(self, eval_dataset=None, eval_examples=None, ignore_keys=None, metric_key_prefix="eval"):
        from transformers.trainer_utils import speed_metrics
        eval_dataset = self.eval_dataset if eval_dataset is None else eval_dataset
        eval_examples = self.eval_examples if eval_examples is None else eval_examples
        eval_dataloader = self.get_eval_dataloader(eval_dataset)
        compute_metrics = self.compute_metrics
        self.compute_metrics = None
        start_time = time.time()
        try:
            output = self.evaluation_loop(eval_dataloader, description="Evaluation",
                                          prediction_loss_only=True if compute_metrics is None else None,
                                          ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
        finally:
            self.compute_metrics = compute_metrics
        output.metrics.update(speed_metrics(metric_key_prefix, start_time, num_samples=output.num_samples))
        metrics = self.compute_metrics(self.post_process_function(eval_examples, output.predictions))
        metrics = {k if k.startswith(f"{metric_key_prefix}_") else f"{metric_key_prefix}_{k}": v
                   for k, v in metrics.items()}
        metrics.update(output.metrics)
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    def predict(self, test_dataset, test_examples=None, ignore_keys=None, metric_key_prefix="test"):
        test_dataloader = self.get_test_dataloader(test_dataset)
        compute_metrics = self.compute_metrics
        self.compute_metrics = None
        try:
            output = self.evaluation_loop(test_dataloader, description="Prediction", ignore_keys=ignore_keys,
                                          metric_key_prefix=metric_key_prefix)
        finally:
            self.compute_metrics = compute_metrics
        processed = self.post_process_function(test_examples, output.predictions)
        metrics = {f"{metric_key_prefix}_{k}": v for k, v in self.compute_metrics(processed).items()}
        return PredictionOutput(predictions=processed.predictions, label_ids=processed.label_ids, metrics=metrics)


def _post_process(examples, logits):
    from trainwright import EvalPrediction
    return EvalPrediction(predictions=np.argmax(logits, axis=-1), label_ids=np.array(examples["label"]))


def _balanced_accuracy(p):
    recalls = [float((p.predictions[p.label_ids == c] == c).mean()) for c in np.unique(p.label_ids)]
    return {"balanced_accuracy": float(np.mean(recalls))}


def test_evaluate_override_with_best_model(tmp_path, tokenizer, make_tiny_model, sst2_small):
    """As in the QA example, the model sees no labels at evaluation (they stay with the examples, for the
    post-processing). Refused before: the pre-flight dry run called evaluation_loop directly, which computes no
    metrics without labels, and found no 'eval_balanced_accuracy'."""
    train, dev = sst2_small
    counter = Counter()
    examples = dev.select(range(40))
    trainer = PostProcessingTrainer(make_tiny_model(), _best_args(tmp_path, "balanced_accuracy"),
                                    train_dataset=train.select(range(64)),
                                    eval_dataset=examples.remove_columns("label"),
                                    processing_class=tokenizer, compute_metrics=_balanced_accuracy,
                                    eval_examples=examples, post_process_function=_post_process, callbacks=[counter])
    trainer.train()
    evals = [h for h in trainer.state.log_history if "eval_balanced_accuracy" in h]
    assert len(evals) == 3 == counter.evaluate  # one per epoch, nothing from a dry run
    assert counter.prediction_steps == 3 * len(trainer.get_eval_dataloader())  # every batch of each evaluation
    assert trainer.state.best_metric == max(e["eval_balanced_accuracy"] for e in evals)
    _assert_best_loaded(trainer)
    out = trainer.predict(examples.remove_columns("label"), examples)
    assert out.predictions.shape == (40,) and set(out.metrics) == {"test_balanced_accuracy"}


# ====================================================================== compute_loss() overridden
class WeightedLossTrainer(Trainer):
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        weight = torch.tensor([1.0, 2.0], device=outputs.logits.device)
        loss = torch.nn.functional.cross_entropy(outputs.logits, labels, weight=weight)
        return (loss, outputs) if return_outputs else loss


def test_compute_loss_override_with_best_model(tmp_path, tokenizer, make_tiny_model, sst2_small):
    train, dev = sst2_small
    trainer = WeightedLossTrainer(make_tiny_model(), _best_args(tmp_path, "accuracy"),
                                  train_dataset=train.select(range(64)), eval_dataset=dev.select(range(32)),
                                  processing_class=tokenizer, compute_metrics=accuracy_metrics)
    trainer.train()
    evals = [h for h in trainer.state.log_history if "eval_accuracy" in h]
    assert len(evals) == 3 and all("eval_loss" in e for e in evals)  # the weighted loss, through compute_loss
    _assert_best_loaded(trainer)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert np.isfinite(losses).all()


# ====================================================================== get_train_dataloader() overridden
def _batches(dataset, tokenizer, batch_size):
    """Pre-collated batches (dicts of tensors), as a subclass's own loader might yield them."""
    from trainwright import DataCollatorWithPadding
    collate = DataCollatorWithPadding(tokenizer)
    rows = [{k: dataset[i][k] for k in ("input_ids", "attention_mask", "label")} for i in range(len(dataset))]
    return [dict(collate(rows[i:i + batch_size])) for i in range(0, len(rows), batch_size)]


class ListLoaderTrainer(Trainer):
    def __init__(self, *args, batches=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.batches = batches

    def get_train_dataloader(self):
        return self.batches  # a plain list of dict batches


def test_get_train_dataloader_returning_a_list_of_batches(tmp_path, tokenizer, make_tiny_model, sst2_small):
    train, dev = sst2_small
    batches = _batches(train.select(range(72)), tokenizer, 8)  # 9 batches: 5 steps an epoch with accumulation 2
    trainer = ListLoaderTrainer(make_tiny_model(), _best_args(tmp_path, "accuracy", gradient_accumulation_steps=2),
                                eval_dataset=dev.select(range(32)), processing_class=tokenizer,
                                compute_metrics=accuracy_metrics, batches=batches)
    out = trainer.train()
    assert out.global_step == 3 * 5 and trainer.state.epoch == 3.0
    assert [h["step"] for h in trainer.state.log_history if "eval_accuracy" in h] == [5, 10, 15]
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert np.mean(losses[-3:]) < np.mean(losses[:3])  # it learns from the subclass's batches
    _assert_best_loaded(trainer)


def test_list_loader_resumes_where_it_stopped(tmp_path, tokenizer, make_tiny_model, sst2_small):
    """Stopped at step 4 of 6 in the first epoch and resumed: the batches already trained on are passed over (as
    HF does for a loader it cannot seek), so the weights equal those of the uninterrupted run."""
    from conftest import StopAt
    batches = _batches(sst2_small[0].select(range(48)), tokenizer, 8)

    def run(out, resume=None, callbacks=None, **kw):
        trainer = ListLoaderTrainer(make_tiny_model(), _args(tmp_path, output_dir=str(tmp_path / out),
                                                             num_train_epochs=2, **kw),
                                    batches=batches, callbacks=callbacks)
        trainer.train(resume_from_checkpoint=resume)
        return trainer

    full = run("full")
    run("cut", callbacks=[StopAt(4)], save_strategy="steps", save_steps=100)
    resumed = run("cut", resume=True)
    assert resumed.state.global_step == full.state.global_step == 12
    reference = full.model.state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in resumed.model.state_dict().items())


class StreamTrainer(Trainer):
    """get_train_dataloader over a generator-based IterableDataset; counts the rows the loader reads."""

    def __init__(self, *args, batches=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.batches, self.reads = batches, 0

    def get_train_dataloader(self):
        trainer = self

        class Stream(torch.utils.data.IterableDataset):
            def __iter__(self):
                while True:
                    for batch in trainer.batches:
                        trainer.reads += 1
                        yield batch

        return torch.utils.data.DataLoader(Stream(), batch_size=None)


def test_get_train_dataloader_generator_based(tmp_path, tokenizer, make_tiny_model, sst2_small):
    train, _ = sst2_small
    batches = _batches(train.select(range(32)), tokenizer, 8)
    trainer = StreamTrainer(make_tiny_model(), _args(tmp_path), batches=batches)
    with pytest.raises(ConfigError, match="without a length.*set max_steps="):
        trainer.train()
    trainer = StreamTrainer(make_tiny_model(), _args(tmp_path, max_steps=6), batches=batches)
    before = _weights(trainer.model)
    out = trainer.train()
    assert out.global_step == 6 and trainer.reads == 6  # the pre-flight read none of the user's rows
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())


# ====================================================================== the dry run
def test_dry_run_is_invisible_to_callbacks_and_logs(tmp_path, tokenizer, make_tiny_model, sst2_small):
    train, dev = sst2_small
    counter = Counter()
    trainer = Trainer(make_tiny_model(), _args(tmp_path, max_steps=4, eval_strategy="steps", eval_steps=2,
                                               metric_for_best_model="accuracy"),
                      train_dataset=train.select(range(32)), eval_dataset=dev.select(range(24)),
                      processing_class=tokenizer, compute_metrics=accuracy_metrics, callbacks=[counter])
    trainer.train()
    batches = len(trainer.get_eval_dataloader())
    assert counter.evaluate == 2 and counter.prediction_steps == 2 * batches
    assert len([h for h in trainer.state.log_history if "eval_accuracy" in h]) == 2
    # the handler holds the last real evaluation's loader, not the dry run's list of one batch
    assert isinstance(trainer.callback_handler.eval_dataloader, torch.utils.data.DataLoader)


def _raise_always(eval_pred):
    raise RuntimeError("metric service is down")


def test_compute_metrics_that_always_raises_fails_before_training(tmp_path, tokenizer, make_tiny_model,
                                                                   sst2_small):
    """Before: a warning ("could not run on one batch"), then the same error after eval_steps of training."""
    train, dev = sst2_small
    trainer = Trainer(make_tiny_model(), _args(tmp_path, max_steps=4, eval_strategy="steps", eval_steps=2),
                      train_dataset=train.select(range(32)), eval_dataset=dev.select(range(24)),
                      processing_class=tokenizer, compute_metrics=_raise_always)
    with pytest.raises(ConfigError, match=r"compute_metrics raised RuntimeError: metric service is down -- on the "
                                          r"whole eval_dataset \(24 rows\)") as info:
        trainer.train()
    assert trainer.state.global_step == 0
    cause = info.value.__cause__
    assert isinstance(cause, RuntimeError)
    frames = [f.name for f in traceback.extract_tb(cause.__traceback__)]
    assert frames[-1] == "_raise_always"  # the user's own frame, in the chained traceback


def test_metric_over_the_whole_eval_set_is_not_refused(tmp_path, tokenizer, make_tiny_model, sst2_small):
    """A compute_metrics that scores against the whole eval set's references (kept outside the Trainer) fails on a
    one-batch sample with trainwright's own DataError; it works on the whole set, so training goes on (before: the
    DataError stopped the run)."""
    from trainwright import metrics
    train, dev = sst2_small
    eval_set = dev.select(range(24))
    references = eval_set["label"]
    accuracy = metrics.load("accuracy")

    def against_all_references(eval_pred):
        return accuracy.compute(predictions=eval_pred.predictions.argmax(-1), references=references)

    trainer = Trainer(make_tiny_model(), _args(tmp_path, max_steps=2, eval_strategy="steps", eval_steps=1,
                                               metric_for_best_model="accuracy"),
                      train_dataset=train.select(range(16)), eval_dataset=eval_set, processing_class=tokenizer,
                      compute_metrics=against_all_references)
    trainer.train()
    assert len([h for h in trainer.state.log_history if "eval_accuracy" in h]) == 2


def test_large_eval_set_code_errors_fail_others_wait(tmp_path, tokenizer, make_tiny_model, sst2_small, monkeypatch):
    """An eval set too large to evaluate whole before training: an error of the code itself still stops the run;
    a ValueError (a metric that may need more rows) is left to the first evaluation, with a warning."""
    import trainwright.preflight.evaluation as ep
    monkeypatch.setattr(ep, "DRY_RUN_FULL_ROWS", 8)
    train, dev = sst2_small

    def typo(eval_pred):
        return {"accuracy": float((eval_pred.predictions.argmx(-1) == eval_pred.label_ids).mean())}

    def needs_16_rows(eval_pred):
        if len(eval_pred.label_ids) < 16:
            raise ValueError("need 16 rows")
        return accuracy_metrics(eval_pred)

    def build(metrics):
        return Trainer(make_tiny_model(), _args(tmp_path, max_steps=2, eval_strategy="steps", eval_steps=1),
                       train_dataset=train.select(range(16)), eval_dataset=dev.select(range(24)),
                       processing_class=tokenizer, compute_metrics=metrics)

    trainer = build(typo)
    with pytest.raises(ConfigError, match="compute_metrics raised AttributeError.*on one eval_dataset batch") as info:
        trainer.train()
    assert isinstance(info.value.__cause__, AttributeError) and trainer.state.global_step == 0
    trainer = build(needs_16_rows)
    with pytest.warns(UserWarning, match="compute_metrics could not run on one eval batch before training"):
        trainer.train()
    assert len([h for h in trainer.state.log_history if "eval_accuracy" in h]) == 2


def test_eval_dataset_names_reach_get_eval_dataloader(tmp_path, tokenizer, make_tiny_model, sst2_small):
    """As HF, evaluate() over a dict of eval sets asks get_eval_dataloader for each set by name."""
    _, dev = sst2_small
    seen = []

    class Named(Trainer):
        def get_eval_dataloader(self, eval_dataset=None):
            seen.append(eval_dataset)
            return super().get_eval_dataloader(eval_dataset)

    trainer = Named(make_tiny_model(), _args(tmp_path), eval_dataset={"a": dev.select(range(8)),
                                                                      "b": dev.select(range(8, 24))},
                    processing_class=tokenizer, compute_metrics=accuracy_metrics)
    metrics = trainer.evaluate()
    assert seen == ["a", "b"] and {"eval_a_accuracy", "eval_b_accuracy", "eval_b_loss"} <= set(metrics)
    with pytest.raises(ConfigError, match="no eval_dataset of that name"):
        trainer.get_eval_dataloader("c")
