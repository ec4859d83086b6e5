"""torchrun --nproc_per_node=2 failing_rank.py OUT MODE

MODE=raise: rank 1 raises at step 3; MODE=hang: rank 1 stops responding at step 3 (ddp_timeout=5 s).
Either way the whole job must end, non-zero, naming the failing rank.
MODE=signal: only rank 1 gets SIGTERM at step 3: both ranks must stop at the same step and write one
complete checkpoint together (exit code 143)."""
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def main():
    out, mode = sys.argv[1], sys.argv[2]
    from trainwright import Trainer, TrainerCallback

    class Fail(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3 and common.rank() == 1:
                if mode == "signal":
                    os.kill(os.getpid(), signal.SIGTERM)
                    return
                print(f"FAILING_AT={time.time():.3f}", flush=True)  # the test measures how long the job outlives it
                if mode == "raise":
                    raise RuntimeError("simulated failure at step 3")
                time.sleep(600)  # stuck: the others wait in the next collective until ddp_timeout

    tok = common.tokenizer()
    args = common.train_args(os.path.join(out, mode), ddp_timeout=5)
    trainer = Trainer(common.make_model(tok), args, train_dataset=common.train_data(tok), processing_class=tok,
                      callbacks=[Fail()])
    trainer.train()


if __name__ == "__main__":
    main()
