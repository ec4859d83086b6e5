"""A run_glue-style client script, written as a transformers user writes one, with only the Trainer-side
imports taken from trainwright. Arguments come from the command line, from a single .json path or from a
single .yaml path, parsed by transformers' HfArgumentParser into the script's own dataclasses and
trainwright's TrainingArguments.

Trains a tiny BERT (built from a config, with the tokenizer given by --tokenizer_name) on a few hundred MRPC
rows from --data_dir for a few steps, evaluates, and prints one line "RESULT {json}" for the test to read.
"""
import csv
import json
import logging
import os
import sys
from dataclasses import dataclass, field

import datasets
import numpy as np
import transformers
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, HfArgumentParser

from trainwright import DataCollatorWithPadding, Trainer, TrainingArguments, metrics, set_seed

logger = logging.getLogger(__name__)


@dataclass
class ModelArguments:
    tokenizer_name: str = field(metadata={"help": "Path of a local tokenizer."})
    hidden_size: int = field(default=32, metadata={"help": "Width of the tiny BERT built from a config."})
    num_hidden_layers: int = field(default=2, metadata={"help": "Layers of the tiny BERT."})


@dataclass
class DataTrainingArguments:
    data_dir: str = field(metadata={"help": "Directory holding mrpc/train.tsv and mrpc/dev.tsv."})
    task_name: str = field(default="mrpc", metadata={"help": "GLUE task name."})
    max_seq_length: int = field(default=64, metadata={"help": "Longest tokenized pair."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep this many training rows."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep this many evaluation rows."})
    overwrite_cache: bool = field(default=False, metadata={"help": "Unused: kept as in the GLUE script."})

    def __post_init__(self):
        self.task_name = self.task_name.lower()
        if self.task_name != "mrpc":
            raise ValueError("this script reads MRPC only")


def read_mrpc(path, limit):
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
    rows = rows[:limit] if limit else rows
    return datasets.Dataset.from_dict({"sentence1": [r[3] for r in rows], "sentence2": [r[4] for r in rows],
                                       "label": [int(r[0]) for r in rows]})


def main():
    parser = HfArgumentParser((ModelArguments, DataTrainingArguments, TrainingArguments))
    if len(sys.argv) == 2 and sys.argv[1].endswith(".json"):
        model_args, data_args, training_args = parser.parse_json_file(json_file=os.path.abspath(sys.argv[1]))
    elif len(sys.argv) == 2 and sys.argv[1].endswith((".yaml", ".yml")):
        model_args, data_args, training_args = parser.parse_yaml_file(yaml_file=os.path.abspath(sys.argv[1]))
    else:
        model_args, data_args, training_args = parser.parse_args_into_dataclasses()

    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
                        handlers=[logging.StreamHandler(sys.stdout)])
    if training_args.should_log:
        transformers.utils.logging.set_verbosity_info()
    log_level = training_args.get_process_log_level()
    logger.setLevel(log_level)
    datasets.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    logger.warning(f"Process rank: {training_args.local_rank}, device: {training_args.device}, "
                   f"n_gpu: {training_args.n_gpu}, distributed training: "
                   f"{training_args.parallel_mode.value == 'distributed'}, 16-bits training: {training_args.fp16}")
    logger.info(f"Training/evaluation parameters {training_args}")
    print(f"parallel_mode={training_args.parallel_mode.value}", flush=True)

    set_seed(training_args.seed)
    tokenizer = AutoTokenizer.from_pretrained(model_args.tokenizer_name)
    raw = {"train": read_mrpc(os.path.join(data_args.data_dir, "mrpc", "train.tsv"), data_args.max_train_samples),
           "validation": read_mrpc(os.path.join(data_args.data_dir, "mrpc", "dev.tsv"), data_args.max_eval_samples)}

    def preprocess(examples):
        return tokenizer(examples["sentence1"], examples["sentence2"], truncation=True,
                         max_length=data_args.max_seq_length)

    with training_args.main_process_first(desc="dataset map pre-processing"):
        tokenized = {split: ds.map(preprocess, batched=True) for split, ds in raw.items()}

    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=model_args.hidden_size,
                        num_hidden_layers=model_args.num_hidden_layers, num_attention_heads=2,
                        intermediate_size=2 * model_args.hidden_size, max_position_embeddings=128, num_labels=2,
                        finetuning_task=data_args.task_name)
    model = BertForSequenceClassification(config)
    metric = metrics.load("glue", data_args.task_name)

    def compute_metrics(p):
        preds = np.argmax(p.predictions, axis=1)
        return metric.compute(predictions=preds, references=p.label_ids)

    trainer = Trainer(model=model, args=training_args,
                      train_dataset=tokenized["train"] if training_args.do_train else None,
                      eval_dataset=tokenized["validation"] if training_args.do_eval else None,
                      compute_metrics=compute_metrics, processing_class=tokenizer,
                      data_collator=DataCollatorWithPadding(tokenizer))
    result = {"parsed": {"learning_rate": training_args.learning_rate,
                         "lr_scheduler_type": str(training_args.lr_scheduler_type),
                         "lr_scheduler_kwargs": training_args.lr_scheduler_kwargs,
                         "eval_strategy": str(training_args.eval_strategy),
                         "report_to": training_args.report_to, "do_eval": training_args.do_eval,
                         "label_names": training_args.label_names, "max_steps": training_args.max_steps}}
    if training_args.do_train:
        train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
        trainer.save_model()
        trainer.log_metrics("train", train_result.metrics)
        trainer.save_metrics("train", train_result.metrics)
        trainer.save_state()
        result["train_loss"] = train_result.metrics["train_loss"]
        result["global_step"] = train_result.global_step
    if training_args.do_eval:
        eval_metrics = trainer.evaluate(eval_dataset=tokenized["validation"])
        trainer.log_metrics("eval", eval_metrics)
        trainer.save_metrics("eval", eval_metrics)
        result["eval"] = eval_metrics
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
