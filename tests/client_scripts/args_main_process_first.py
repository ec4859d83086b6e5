"""torchrun client script (2 processes, CPU): TrainingArguments.main_process_first runs the block on the main
process first, the other waits and then runs it; the process group it starts is the one the Trainer then uses.

Each rank writes OUT/rank<r>.json with the times it entered and left the block, whether the group was
running before and after, and what the Trainer's Distributed made of it.
"""
import json
import os
import sys
import time

import torch
import torch.distributed as dist
from transformers import BertConfig, BertForSequenceClassification, HfArgumentParser

from trainwright import Trainer, TrainingArguments

out_dir = sys.argv[1]
(args,) = HfArgumentParser(TrainingArguments).parse_args_into_dataclasses(
    ["--output_dir", os.path.join(out_dir, "run"), "--report_to", "none", "--use_cpu", "--max_steps", "1"],
    look_for_args_file=False)
record = {"rank": args.process_index, "world_size": args.world_size, "local": args.local_process_index,
          "parallel_mode": args.parallel_mode.value, "group_before": dist.is_initialized()}

with args.main_process_first(desc="tokenizing"):
    record["entered"] = time.time()
    if args.process_index == 0:
        time.sleep(1.5)  # the other rank must not enter before this block ends
    record["left"] = time.time()

record["group_after"] = dist.is_initialized()
record["backend"] = dist.get_backend() if dist.is_initialized() else None
group = dist.group.WORLD
torch.manual_seed(0)
model = BertForSequenceClassification(BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1,
                                                 num_attention_heads=2, intermediate_size=32, num_labels=2))
trainer = Trainer(model=model, args=args)
record["trainer_same_group"] = dist.group.WORLD is group
record["trainer_owns_group"] = trainer.dist._created_group
record["trainer_world_size"] = trainer.dist.world_size
with args.main_process_first(local=False, desc="second block"):
    record["second"] = time.time()
with open(os.path.join(out_dir, f"rank{args.process_index}.json"), "w") as f:
    json.dump(record, f)
