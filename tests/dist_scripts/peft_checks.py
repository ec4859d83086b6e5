"""torchrun --nproc_per_node=2 peft_checks.py OUT

A LoRA adapter (tiny Llama, ``modules_to_save=["lm_head"]``) under DDP and under FSDP2, 2 ranks x 4 rows, 6 steps
saving every 3: for each mode, OUT/<mode>/full trains straight through; OUT/<mode>/cut stops after step 3 (its
checkpoint) and resumes from it in a second Trainer. Both end with save_model(). The test
(tests/test_peft.py) compares the two runs' final checkpoints (bit-identical adapter and optimizer state), the
adapter-only checkpoint files, and the adapter with one process training batch 8.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (sets up sys.path and the offline environment)

ROWS, LENGTH, VOCAB, STEPS, SAVE = 48, 16, 256, 6, 3
MODES = {"ddp": {}, "fsdp": {"fsdp": "full_shard auto_wrap"}}


def data():
    import torch
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(0, VOCAB, (ROWS, LENGTH), generator=g)
    return [{"input_ids": i, "labels": i.clone()} for i in ids]


def model():
    import peft
    import torch

    from memory_support import tiny_causal_lm
    base = tiny_causal_lm("llama", vocab_size=VOCAB)
    torch.manual_seed(1)  # the adapter's initialisation
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], modules_to_save=["lm_head"],
                             task_type="CAUSAL_LM")
    return peft.get_peft_model(base, config)


def args(out, **kw):
    from trainwright import TrainingArguments
    base = dict(output_dir=out, per_device_train_batch_size=4, max_steps=STEPS, learning_rate=1e-2, seed=3,
                logging_steps=1, save_strategy="steps", save_steps=SAVE, report_to="none", disable_tqdm=True,
                write_report=False, train_sampling_strategy="sequential", optim="adamw_torch")
    base.update(kw)
    return TrainingArguments(**base)


def main():
    from trainwright import Trainer
    out = sys.argv[1]
    modes = sys.argv[2:] or list(MODES)
    for mode in modes:
        for run, callbacks, resume in (("full", None, None), ("cut", [common.StopAt(SAVE)], None),
                                       ("cut", None, True)):
            path = os.path.join(out, mode, run)
            trainer = Trainer(model(), args(path, **MODES[mode]), train_dataset=data(), callbacks=callbacks)
            trainer.train(resume_from_checkpoint=resume)
            trainer.save_model()
            if common.rank() == 0:
                common.dump(os.path.join(path, "logs.json"), {"logs": common.train_logs(trainer),
                                                              "wrapped": type(trainer.model_wrapped).__name__})


if __name__ == "__main__":
    main()
