"""torchrun --nproc_per_node=2 chunked_checks.py OUT

chunked_cross_entropy under DDP and under FSDP2 (fsdp="full_shard auto_wrap", tied GPT-2 embeddings), 2 ranks x 4
rows, 4 steps each: rank 0 writes OUT/<mode>/model.safetensors and OUT/<mode>/logs.json. The test compares them
with one process training batch 8 with the plain loss (tests/test_chunked_loss.py).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402,F401  (sets up sys.path and the offline environment)

ROWS, LENGTH, VOCAB, STEPS = 32, 20, 256, 4


def data():
    import torch
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(0, VOCAB, (ROWS, LENGTH), generator=g)
    labels = ids.clone()
    labels[::3, :6] = -100  # prompts without labels: ranks get different label counts
    return [{"input_ids": i, "labels": lab} for i, lab in zip(ids, labels)]


def model(arch):
    from memory_support import tiny_causal_lm
    return tiny_causal_lm(arch, vocab_size=VOCAB)


def args(out, **kw):
    from trainwright import TrainingArguments
    base = dict(output_dir=out, per_device_train_batch_size=4, max_steps=STEPS, learning_rate=1e-3, seed=3,
                logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True, write_report=False,
                train_sampling_strategy="sequential", optim="adamw_torch")
    base.update(kw)
    return TrainingArguments(**base)


def main():
    from trainwright import Trainer
    out = sys.argv[1]
    for mode, arch, extra in (("ddp", "llama", {}),
                              ("fsdp", "gpt2", {"fsdp": "full_shard auto_wrap",
                                                "fsdp_config": {"fsdp_transformer_layer_cls_to_wrap": ["GPT2Block"]}})):
        trainer = Trainer(model(arch), args(os.path.join(out, mode), chunked_cross_entropy=5, **extra),
                          train_dataset=data())
        trainer.train()
        trainer.save_model()
        if common.rank() == 0:
            common.dump(os.path.join(out, mode, "logs.json"), {"logs": common.train_logs(trainer),
                                                               "wrapped": type(trainer.model_wrapped).__name__})


if __name__ == "__main__":
    main()
