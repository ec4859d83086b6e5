"""torchrun --nproc_per_node=2 ddp_checks.py OUT [--train-only]

1. DDP, 2 ranks x 8 rows, 20 steps (a checkpoint at step 10): writes OUT/ddp/model.safetensors,
   OUT/ddp/logs.json (rank 0's logged losses) and OUT/ddp/checkpoint-10.
2. evaluate/predict with a fresh seeded model (identical on every side) on an odd-sized set and on a
   set with fewer batches than ranks: OUT/eval.json.
3. the same with batch_eval_metrics (per-step gathered batches) and eval_use_gather_object (list outputs
   gathered as rows): OUT/batch_eval.json.
4. predict()/evaluate() with eval_do_concat_batches=False and include_for_metrics=["loss"] (per-batch lists,
   gathered per batch in the single-process order): OUT/per_batch.json.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def main():
    out = sys.argv[1]
    train_only = "--train-only" in sys.argv
    from trainwright import Trainer
    tok = common.tokenizer()
    args = common.train_args(os.path.join(out, "ddp"), save_strategy="steps", save_steps=common.STOP_AT,
                             log_level="info")  # the training block: shown once, by rank 0 (replicas: warning)
    trainer = Trainer(common.make_model(tok), args, train_dataset=common.train_data(tok), processing_class=tok)
    trainer.train()
    trainer.save_model()
    if common.rank() == 0:
        common.dump(os.path.join(out, "ddp", "logs.json"),
                    {"logs": common.train_logs(trainer), "world_size": trainer.dist.world_size,
                     "wrapped": type(trainer.model_wrapped).__name__, "counts": common.train_counts(trainer)})
    if train_only:
        return
    evaluator = Trainer(common.make_model(tok, seed=3), common.train_args(os.path.join(out, "eval")),
                        processing_class=tok, compute_metrics=common.accuracy)
    record = common.evaluation_record(evaluator, tok)
    if common.rank() == 0:
        common.dump(os.path.join(out, "eval.json"), record)
    record = common.batch_metrics_record(tok, out)
    if common.rank() == 0:
        common.dump(os.path.join(out, "batch_eval.json"), record)
    record = common.per_batch_record(tok, out)
    if common.rank() == 0:
        common.dump(os.path.join(out, "per_batch.json"), record)


if __name__ == "__main__":
    main()
