"""python compat_rerun_and_hf_resume.py OUT

Two things a transformers user does with a Trainer, written as such a user writes them:

1. A run started with ``transformers.Trainer`` (checkpoints every 3 steps) is continued after switching the import to
   trainwright: ``trainer.train(resume_from_checkpoint=".../checkpoint-3")`` reads transformers' checkpoint (weights
   from safetensors, optimizer/scheduler state without unpickling anything) and trains on to step 6.
2. ``train()`` called twice on one Trainer built with ``model_init``: the second call starts a new run (a new seeded
   model, optimizer and schedule), so both give the same weights.

Writes OUT/summary.json.
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # tests/: the local SST-2 reader and the tiny BERT config

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoTokenizer, BertForSequenceClassification  # noqa: E402

import trainwright  # noqa: E402
from conftest import minilm_path, sst2_dataset, tiny_bert_config  # noqa: E402


def main(out):
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    train = sst2_dataset("train", 96).map(lambda b: tokenizer(b["sentence"], truncation=True, max_length=32),
                                          batched=True)
    config = tiny_bert_config(tokenizer)

    def model_init():
        torch.manual_seed(0)
        return BertForSequenceClassification(config)

    common = dict(per_device_train_batch_size=16, learning_rate=1e-3, max_steps=6, save_steps=3,
                  logging_steps=3, report_to="none", disable_tqdm=True, use_cpu=True)
    # 1. transformers wrote the checkpoints; trainwright continues from checkpoint-3
    hf_dir = os.path.join(out, "hf_run")
    hf_args = transformers.TrainingArguments(hf_dir, **common)
    transformers.Trainer(model=model_init(), args=hf_args, train_dataset=train,
                         data_collator=transformers.DataCollatorWithPadding(tokenizer)).train()
    tw_args = trainwright.TrainingArguments(os.path.join(out, "tw_run"), **common)
    resumed = trainwright.Trainer(model=model_init(), args=tw_args, train_dataset=train, processing_class=tokenizer)
    result = resumed.train(resume_from_checkpoint=os.path.join(hf_dir, "checkpoint-3"))

    # 2. train() twice with model_init
    twice_args = trainwright.TrainingArguments(os.path.join(out, "twice"), **{**common, "save_steps": 100})
    trainer = trainwright.Trainer(model_init=model_init, args=twice_args, train_dataset=train,
                                  processing_class=tokenizer)
    first = trainer.train()
    first_weights = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    second = trainer.train()
    same = all(torch.equal(first_weights[k], v) for k, v in trainer.model.state_dict().items())
    summary = {"resumed_global_step": result.global_step, "resumed_from_step": 3,
               "resumed_train_loss": result.training_loss,
               "twice_steps": [first.global_step, second.global_step], "twice_same_weights": same,
               "twice_losses": [first.training_loss, second.training_loss],
               "twice_log_history_steps": [r["step"] for r in trainer.state.log_history]}
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f)


if __name__ == "__main__":
    main(sys.argv[1])
