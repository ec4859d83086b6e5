"""python accept_multiple_choice.py OUT

A multiple-choice client script in the shape of transformers' run_swag.py: each row holds one tokenized pair per
choice (``input_ids`` is a list of lists), a collator of its own flattens the choices, pads them with the tokenizer
and folds them back to (batch, choices, length), and an ``AutoModelForMultipleChoice``-style model scores them.
Trains a few steps, evaluates with an accuracy of its own, predicts, and writes OUT/summary.json.
"""
import json
import os
import sys
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # tests/: the local SST-2 reader and the tiny BERT config

import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import AutoTokenizer, BertForMultipleChoice  # noqa: E402

from conftest import minilm_path, sst2_dataset, tiny_bert_config  # noqa: E402
from trainwright import Trainer, TrainingArguments  # noqa: E402

N_CHOICES = 4


def to_choices(rows):
    """Context = first half of a sentence; the right ending is its second half, the others are openings of other
    sentences. The answer's position rotates with the row."""
    contexts, endings, labels = [], [], []
    sentences = rows["sentence"]
    for i, sentence in enumerate(sentences):
        words = sentence.split()
        half = max(1, len(words) // 2)
        wrong = [" ".join(sentences[(i + k) % len(sentences)].split()[:3]) for k in (1, 2, 3)]
        answer = i % N_CHOICES
        options = wrong[:answer] + [" ".join(words[half:]) or "."] + wrong[answer:]
        contexts.append(" ".join(words[:half]))
        endings.append(options)
        labels.append(answer)
    return contexts, endings, labels


@dataclass
class ChoicesCollator:
    tokenizer: object

    def __call__(self, rows):
        labels = torch.tensor([row.pop("label") for row in rows])
        flat = [{key: row[key][c] for key in row} for row in rows for c in range(N_CHOICES)]
        batch = self.tokenizer.pad(flat, padding=True, return_tensors="pt")
        batch = {key: value.view(len(rows), N_CHOICES, -1) for key, value in batch.items()}
        batch["labels"] = labels
        return batch


def main():
    out = sys.argv[1]
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())

    def encode(rows):
        contexts, endings, labels = to_choices(rows)
        firsts = [c for c in contexts for _ in range(N_CHOICES)]
        seconds = [e for options in endings for e in options]
        enc = tokenizer(firsts, seconds, truncation=True, max_length=40)
        grouped = {k: [v[i:i + N_CHOICES] for i in range(0, len(v), N_CHOICES)] for k, v in enc.items()}
        grouped["label"] = labels
        return grouped

    train = sst2_dataset("train", 48)
    train = train.map(encode, batched=True, remove_columns=train.column_names)
    dev = sst2_dataset("dev", 20)
    dev = dev.map(encode, batched=True, remove_columns=dev.column_names)

    torch.manual_seed(0)
    model = BertForMultipleChoice(tiny_bert_config(tokenizer, num_labels=1))

    def accuracy(p):
        return {"accuracy": float((np.argmax(p.predictions, axis=1) == p.label_ids).mean())}

    args = TrainingArguments(output_dir=out, per_device_train_batch_size=8, per_device_eval_batch_size=8,
                             max_steps=4, learning_rate=1e-3, eval_strategy="steps", eval_steps=2,
                             save_strategy="no", report_to="none", disable_tqdm=True, write_report=False)
    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=dev, processing_class=tokenizer,
                      data_collator=ChoicesCollator(tokenizer), compute_metrics=accuracy)
    train_metrics = trainer.train().metrics
    eval_metrics = trainer.evaluate()
    prediction = trainer.predict(dev)
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump({"train_loss": train_metrics["train_loss"], "eval": eval_metrics,
                   "predictions_shape": list(prediction.predictions.shape),
                   "label_ids": prediction.label_ids.tolist()}, f)


if __name__ == "__main__":
    main()
