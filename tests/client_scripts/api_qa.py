"""python api_qa.py OUT -- extractive question answering as transformers' run_qa.py does it, with trainwright.

The pieces a run_qa.py user writes: a ``QuestionAnsweringTrainer(Trainer)`` in the pattern of transformers'
``trainer_qa.py`` (``evaluate``/``predict`` overridden: ``compute_metrics`` switched off around
``evaluation_loop``, the start/end logits post-processed into answer texts, ``metric_key_prefix`` on the keys,
``self.log`` and ``callback_handler.on_evaluate`` called by hand, ``speed_metrics`` from transformers), features
made with overflowing windows and offset mappings, ``metrics.load("squad")``, the best model by ``f1``, and
``create_model_card()`` at the end.

The data: a small QA set made from local SST-2 sentences. Each sentence is a context; the question asks for its
first or its last word (a run of three letters or more, not "the"), and the answer is that word's character span in
the sentence. The answer position depends on the question, so a tiny BERT built from a config learns it in a few epochs.

Writes the model, all_results.json, predictions.json and README.md into OUT, and OUT/summary.json.
"""
import collections
import json
import os
import re
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # tests/: the local SST-2 reader and the tiny BERT config

import numpy as np  # noqa: E402
import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import AutoTokenizer, BertForQuestionAnswering  # noqa: E402
from transformers.trainer_utils import speed_metrics  # noqa: E402

from conftest import minilm_path, sst2_dataset, tiny_bert_config  # noqa: E402
from trainwright import EvalPrediction, PredictionOutput, Trainer, TrainingArguments, default_data_collator, metrics  # noqa: E402

MAX_LENGTH, STRIDE, MAX_ANSWER_TOKENS, N_BEST = 48, 16, 8, 10


# ====================================================================== the trainer subclass (trainer_qa.py pattern)
class QuestionAnsweringTrainer(Trainer):
    def __init__(self, *args, eval_examples=None, post_process_function=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.eval_examples = eval_examples
        self.post_process_function = post_process_function

    def evaluate(self, eval_dataset=None, eval_examples=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        eval_dataset = self.eval_dataset if eval_dataset is None else eval_dataset
        eval_dataloader = self.get_eval_dataloader(eval_dataset)
        eval_examples = self.eval_examples if eval_examples is None else eval_examples

        # metrics are computed here, on the post-processed predictions, not by evaluation_loop
        compute_metrics = self.compute_metrics
        self.compute_metrics = None
        start_time = time.time()
        try:
            output = self.evaluation_loop(
                eval_dataloader, description="Evaluation",
                prediction_loss_only=True if compute_metrics is None else None,
                ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
        finally:
            self.compute_metrics = compute_metrics
        total_batch_size = self.args.eval_batch_size * self.args.world_size
        output.metrics.update(speed_metrics(metric_key_prefix, start_time, num_samples=output.num_samples,
                                            num_steps=int(np.ceil(output.num_samples / total_batch_size))))
        if self.post_process_function is not None and self.compute_metrics is not None and self.args.should_save:
            eval_preds = self.post_process_function(eval_examples, eval_dataset, output.predictions)
            metrics = self.compute_metrics(eval_preds)
            for key in list(metrics.keys()):
                if not key.startswith(f"{metric_key_prefix}_"):
                    metrics[f"{metric_key_prefix}_{key}"] = metrics.pop(key)
            metrics.update(output.metrics)
        else:
            metrics = output.metrics
        if self.args.should_log:
            self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    def predict(self, predict_dataset, predict_examples, ignore_keys=None, metric_key_prefix: str = "test"):
        predict_dataloader = self.get_test_dataloader(predict_dataset)
        compute_metrics = self.compute_metrics
        self.compute_metrics = None
        start_time = time.time()
        try:
            output = self.evaluation_loop(predict_dataloader, description="Prediction",
                                          prediction_loss_only=True if compute_metrics is None else None,
                                          ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
        finally:
            self.compute_metrics = compute_metrics
        output.metrics.update(speed_metrics(metric_key_prefix, start_time, num_samples=output.num_samples))
        if self.post_process_function is None or self.compute_metrics is None:
            return output
        predictions = self.post_process_function(predict_examples, predict_dataset, output.predictions, "predict")
        metrics = self.compute_metrics(predictions)
        for key in list(metrics.keys()):
            if not key.startswith(f"{metric_key_prefix}_"):
                metrics[f"{metric_key_prefix}_{key}"] = metrics.pop(key)
        metrics.update(output.metrics)
        return PredictionOutput(predictions=predictions.predictions, label_ids=predictions.label_ids, metrics=metrics)


# ====================================================================== data
def make_examples(split, n):
    """SST-2 sentences as contexts; "what is the first/last word ?" with that word's character span (words of three
    letters or more: "a"/"the" normalise to nothing under the SQuAD rules)."""
    rows = {"id": [], "question": [], "context": [], "answers": []}
    for i, sentence in enumerate(sst2_dataset(split, n)["sentence"]):
        words = list(re.finditer(r"[A-Za-z]{3,}", sentence))
        words = [w for w in words if w.group().lower() != "the"]
        if len(words) < 2:
            continue
        which = "first" if i % 2 == 0 else "last"
        word = words[0] if which == "first" else words[-1]
        rows["id"].append(f"{split}-{i}")
        rows["question"].append(f"what is the {which} word ?")
        rows["context"].append(sentence)
        rows["answers"].append({"text": [word.group()], "answer_start": [word.start()]})
    return Dataset.from_dict(rows)


def prepare_train_features(examples, tokenizer):
    enc = tokenizer(examples["question"], examples["context"], truncation="only_second", max_length=MAX_LENGTH,
                    stride=STRIDE, return_overflowing_tokens=True, return_offsets_mapping=True, padding="max_length")
    sample_map = enc.pop("overflow_to_sample_mapping")
    offsets_all = enc.pop("offset_mapping")
    enc["start_positions"], enc["end_positions"] = [], []
    for i, offsets in enumerate(offsets_all):
        cls_index = enc["input_ids"][i].index(tokenizer.cls_token_id)
        sequence_ids = enc.sequence_ids(i)
        answer = examples["answers"][sample_map[i]]
        start_char = answer["answer_start"][0]
        end_char = start_char + len(answer["text"][0])
        context = [k for k, s in enumerate(sequence_ids) if s == 1]
        first, last = context[0], context[-1]
        if not (offsets[first][0] <= start_char and offsets[last][1] >= end_char):
            enc["start_positions"].append(cls_index)  # the answer is not in this window
            enc["end_positions"].append(cls_index)
            continue
        start = first
        while start <= last and offsets[start][0] <= start_char:
            start += 1
        end = last
        while end >= first and offsets[end][1] >= end_char:
            end -= 1
        enc["start_positions"].append(start - 1)
        enc["end_positions"].append(end + 1)
    return enc


def prepare_validation_features(examples, tokenizer):
    enc = tokenizer(examples["question"], examples["context"], truncation="only_second", max_length=MAX_LENGTH,
                    stride=STRIDE, return_overflowing_tokens=True, return_offsets_mapping=True, padding="max_length")
    sample_map = enc.pop("overflow_to_sample_mapping")
    enc["example_id"] = []
    for i in range(len(enc["input_ids"])):
        sequence_ids = enc.sequence_ids(i)
        enc["example_id"].append(examples["id"][sample_map[i]])
        enc["offset_mapping"][i] = [o if sequence_ids[k] == 1 else None for k, o in enumerate(enc["offset_mapping"][i])]
    return enc


def post_processing_function(examples, features, predictions, stage="eval"):
    """Start/end logits of every window -> the best-scoring valid span of each example, as text."""
    start_logits, end_logits = predictions
    windows = collections.defaultdict(list)
    for i, example_id in enumerate(features["example_id"]):
        windows[example_id].append(i)
    formatted, references = [], []
    for example in examples:
        best_text, best_score = "", -np.inf
        for i in windows[example["id"]]:
            offsets = features[i]["offset_mapping"]
            starts = np.argsort(start_logits[i])[-N_BEST:][::-1]
            ends = np.argsort(end_logits[i])[-N_BEST:][::-1]
            for s in starts:
                for e in ends:
                    if s >= len(offsets) or e >= len(offsets) or offsets[s] is None or offsets[e] is None:
                        continue
                    if e < s or e - s + 1 > MAX_ANSWER_TOKENS:
                        continue
                    score = start_logits[i][s] + end_logits[i][e]
                    if score > best_score:
                        best_score = score
                        best_text = example["context"][offsets[s][0]:offsets[e][1]]
        formatted.append({"id": example["id"], "prediction_text": best_text})
        references.append({"id": example["id"], "answers": example["answers"]})
    return EvalPrediction(predictions=formatted, label_ids=references)


# ====================================================================== main
def main():
    out = sys.argv[1]
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    train_examples = make_examples("train", 512)
    eval_examples = make_examples("dev", 64)
    train_dataset = train_examples.map(lambda b: prepare_train_features(b, tokenizer), batched=True,
                                       remove_columns=train_examples.column_names)
    eval_dataset = eval_examples.map(lambda b: prepare_validation_features(b, tokenizer), batched=True,
                                     remove_columns=eval_examples.column_names)
    torch.manual_seed(0)
    model = BertForQuestionAnswering(tiny_bert_config(tokenizer, max_position_embeddings=64))

    squad = metrics.load("squad")

    def compute_metrics(p: EvalPrediction):
        return squad.compute(predictions=p.predictions, references=p.label_ids)

    args = TrainingArguments(output_dir=out, num_train_epochs=4, per_device_train_batch_size=16,
                             per_device_eval_batch_size=32, learning_rate=3e-3, warmup_steps=0.1, seed=1,
                             eval_strategy="epoch", save_strategy="epoch", metric_for_best_model="f1",
                             load_best_model_at_end=True, save_total_limit=2, logging_steps=10,
                             report_to="none", disable_tqdm=True)
    trainer = QuestionAnsweringTrainer(model=model, args=args, train_dataset=train_dataset,
                                       eval_dataset=eval_dataset, eval_examples=eval_examples,
                                       processing_class=tokenizer, data_collator=default_data_collator,
                                       post_process_function=post_processing_function,
                                       compute_metrics=compute_metrics)
    train_result = trainer.train()
    trainer.save_model()
    trainer.log_metrics("train", train_result.metrics)
    trainer.save_metrics("train", train_result.metrics)
    trainer.save_state()

    eval_metrics = trainer.evaluate()
    trainer.log_metrics("eval", eval_metrics)
    trainer.save_metrics("eval", eval_metrics)

    predict = trainer.predict(eval_dataset, eval_examples)
    trainer.log_metrics("predict", predict.metrics)
    trainer.save_metrics("predict", predict.metrics)
    with open(os.path.join(out, "predictions.json"), "w") as f:
        json.dump(predict.predictions, f)

    trainer.create_model_card(dataset_tags="sst2", dataset="SST-2 first/last word questions",
                              tasks="question-answering")
    evals = [h for h in trainer.state.log_history if "eval_f1" in h]
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump({"best_metric": trainer.state.best_metric,
                   "best_model_checkpoint": trainer.state.best_model_checkpoint,
                   "eval_f1_per_epoch": [e["eval_f1"] for e in evals], "final": eval_metrics,
                   "n_eval_examples": len(eval_examples), "n_eval_features": len(eval_dataset)}, f)


if __name__ == "__main__":
    main()
