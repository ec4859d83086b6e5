"""torchrun --nproc_per_node=2 api_rank0_save.py OUT

A client script that saves from rank 0 only, the way many transformers scripts do, then the way run_glue.py does
(every rank calls, rank 0 writes):

1. DDP: train, then ``if trainer.is_world_process_zero(): save_model / save_state / log_metrics / save_metrics``
   (no deadlock: nothing in them waits for the other ranks), then the same calls on every rank, then
   ``evaluate()`` (collective) to show the ranks are still in step. Writes OUT/rank0/..., OUT/every_rank/...
2. FSDP2 (``fsdp="full_shard"``): ``save_model`` gathers the full model from every rank, so the rank-0-only call
   is refused with a clear error after ``ddp_timeout`` (5 s here) instead of hanging; after the ranks meet again,
   ``save_model`` on every rank works. Writes OUT/fsdp_error.txt and OUT/fsdp_model.

Rank 0 writes OUT/done.json at the end.
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # tests/: the local SST-2 reader and the tiny BERT config

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from transformers import AutoTokenizer, BertForSequenceClassification  # noqa: E402

from conftest import minilm_path, sst2_dataset, tiny_bert_config  # noqa: E402
from trainwright import ConfigError, Trainer, TrainingArguments  # noqa: E402


def build(out, tokenizer, data, **kw):
    torch.manual_seed(0)
    model = BertForSequenceClassification(tiny_bert_config(tokenizer))
    args = TrainingArguments(output_dir=out, per_device_train_batch_size=4, per_device_eval_batch_size=4,
                             max_steps=3, learning_rate=1e-3, save_strategy="no", report_to="none",
                             disable_tqdm=True, write_report=False, logging_steps=1, **kw)
    return Trainer(model=model, args=args, train_dataset=data, eval_dataset=data, processing_class=tokenizer)


def main():
    out = sys.argv[1]
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    data = sst2_dataset("train", 32).map(lambda b: tokenizer(b["sentence"], truncation=True, max_length=32),
                                         batched=True)

    # ---------------------------------------------------------------- 1. DDP
    trainer = build(os.path.join(out, "run"), tokenizer, data)
    metrics = trainer.train().metrics
    if trainer.is_world_process_zero():
        trainer.args.output_dir = os.path.join(out, "rank0")
        trainer.save_model()
        trainer.save_state()
        trainer.log_metrics("train", metrics)
        trainer.save_metrics("train", metrics)
    trainer.args.output_dir = os.path.join(out, "every_rank")
    trainer.save_model()
    trainer.save_state()
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    eval_metrics = trainer.evaluate()
    trainer.save_metrics("eval", eval_metrics)

    # ---------------------------------------------------------------- 2. FSDP2
    fsdp = build(os.path.join(out, "fsdp_run"), tokenizer, data, fsdp="full_shard", ddp_timeout=5)
    fsdp.train()
    if fsdp.is_world_process_zero():
        try:
            fsdp.save_model(os.path.join(out, "fsdp_rank0_model"))
            error = "no error"
        except ConfigError as e:
            error = str(e)
        with open(os.path.join(out, "fsdp_error.txt"), "w") as f:
            f.write(error)
    dist.barrier()  # the other rank went on meanwhile; the script brings them together again
    fsdp.save_model(os.path.join(out, "fsdp_model"))
    if fsdp.is_world_process_zero():
        with open(os.path.join(out, "done.json"), "w") as f:
            json.dump({"world_size": dist.get_world_size(), "train": metrics, "eval": eval_metrics}, f)


if __name__ == "__main__":
    main()
