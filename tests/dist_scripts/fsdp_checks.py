"""torchrun --nproc_per_node=2 fsdp_checks.py OUT

FSDP2 (fsdp="full_shard auto_wrap"), 2 ranks x 4 rows x 2 accumulation steps (no gradient sync on
the first micro-step; a global batch of 16 rows, as the reference): trains to step 10 and stops with a
checkpoint, resumes from it to step 20, saves the final model (OUT/fsdp), then evaluates the sharded model on an
odd-sized set and on a set with fewer batches than ranks (OUT/fsdp_eval.json; every rank must run as
many forward passes, or FSDP2's parameter all-gathers would hang).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def main():
    out = os.path.join(sys.argv[1], "fsdp")
    from trainwright import Trainer
    tok = common.tokenizer()
    data = common.train_data(tok)

    def run(resume=None, callbacks=None):
        args = common.train_args(out, fsdp="full_shard auto_wrap", per_device_train_batch_size=4,
                                 gradient_accumulation_steps=2,
                                 fsdp_config={"fsdp_transformer_layer_cls_to_wrap": ["BertLayer"]},
                                 save_strategy="steps", save_steps=common.STOP_AT)
        trainer = Trainer(common.make_model(tok), args, train_dataset=data, processing_class=tok,
                          callbacks=callbacks, compute_metrics=common.accuracy)
        trainer.train(resume_from_checkpoint=resume)
        return trainer

    first = run(callbacks=[common.StopAt(common.STOP_AT)])
    assert first.state.global_step == common.STOP_AT
    sharded = type(first.model.bert.encoder.layer[0]).__name__
    trainer = run(resume=True)
    assert trainer.state.global_step == common.MAX_STEPS
    trainer.save_model()
    record = common.evaluation_record(trainer, tok)
    if common.rank() == 0:
        record["logs"] = common.train_logs(trainer)
        record["layer_class"] = sharded
        record["root_class"] = type(trainer.model).__name__
        record["checkpoint_files"] = sorted(os.listdir(os.path.join(out, f"checkpoint-{common.STOP_AT}")))
        common.dump(os.path.join(sys.argv[1], "fsdp_eval.json"), record)


if __name__ == "__main__":
    main()
