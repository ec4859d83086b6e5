"""Distributed training under torchrun on the CPU (gloo, 2 processes): DDP and FSDP2 reach the weights of
one process with the same global batch, checkpoints resume (also at another world size), evaluate/predict
gather every row once in dataset order, two "machines" train together, and a failing rank ends the job.

The torchrun launches (tests/dist_scripts/*.py) all start together in one module fixture: the two
"machines" must run at the same time anyway, and the failure launches mostly wait. The single-process
references run in this process meanwhile.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT

SCRIPTS = Path(__file__).resolve().parent / "dist_scripts"
TORCHRUN = Path(sys.executable).parent / "torchrun"
sys.path.insert(0, str(SCRIPTS))
import common  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not TORCHRUN.exists(),
                                reason="needs torch.distributed and torchrun")


# ====================================================================== launching
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["OMP_NUM_THREADS"] = "1"
    env["HF_HUB_OFFLINE"] = env["HF_DATASETS_OFFLINE"] = env["TRANSFORMERS_OFFLINE"] = "1"
    return env


class Launch:
    def __init__(self, name, script, *args, nnodes=1, node_rank=0, nproc=2, endpoint=None, log_dir=None):
        endpoint = endpoint or f"127.0.0.1:{_free_port()}"
        cmd = [str(TORCHRUN), f"--nnodes={nnodes}", f"--node_rank={node_rank}", f"--nproc_per_node={nproc}",
               "--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}", f"--rdzv-id=job-{endpoint}",
               # which launch hosts the rendezvous store (both run on 127.0.0.1 here)
               f"--rdzv-conf=is_host={1 if node_rank == 0 else 0}",
               str(SCRIPTS / script), *map(str, args)]
        self.name = name
        self.log = open(Path(log_dir) / f"{name}.log", "w+")
        self.start = time.time()
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=_env(), cwd=str(ROOT))
        self.end = None  # wall-clock time the launch was seen to exit

    def poll(self):
        if self.end is None and self.proc.poll() is not None:
            self.end = time.time()
        return self.end is not None

    def wait(self, timeout=240):
        try:
            self.proc.wait(timeout=max(1.0, timeout - (time.time() - self.start)))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.poll()
        self.log.seek(0)
        self.output = self.log.read()
        return self

    def check(self):
        assert self.proc.returncode == 0, f"{self.name} failed (exit {self.proc.returncode}):\n{self.output[-6000:]}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    logs = out / "logs"
    logs.mkdir()
    endpoint = f"127.0.0.1:{_free_port()}"
    (out / "nodes").mkdir()
    launches = {
        "raise": Launch("raise", "failing_rank.py", out, "raise", log_dir=logs),
        "hang": Launch("hang", "failing_rank.py", out, "hang", log_dir=logs),
        "signal": Launch("signal", "failing_rank.py", out, "signal", log_dir=logs),
        "ddp": Launch("ddp", "ddp_checks.py", out, log_dir=logs),
        "fsdp": Launch("fsdp", "fsdp_checks.py", out, log_dir=logs),
        # two "machines": one process each, meeting at a c10d rendezvous on localhost
        "node0": Launch("node0", "ddp_checks.py", out / "nodes", "--train-only", nnodes=2, node_rank=0, nproc=1,
                        endpoint=endpoint, log_dir=logs),
        "node1": Launch("node1", "ddp_checks.py", out / "nodes", "--train-only", nnodes=2, node_rank=1, nproc=1,
                        endpoint=endpoint, log_dir=logs),
    }
    # the failure launches' exit times are polled while the single-process references run here
    pending = {"raise", "hang"}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the workers (OMP_NUM_THREADS=1): bit-identical matmuls
    try:
        single = _single_process_reference(out / "single", pending, launches)
    finally:
        torch.set_num_threads(threads)
    for launch in launches.values():
        launch.wait()
    yield {"out": out, "launches": launches, "single": single}


def _poll(pending, launches):
    for name in list(pending):
        if launches[name].poll():
            pending.discard(name)


def _single_process_reference(out, pending, launches):
    """One process, batch 16 (= 2 ranks x 8), same seed and data: the weights the launches must reach."""
    from trainwright import Trainer, TrainerCallback

    class Poll(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            _poll(pending, launches)

    tok = common.tokenizer()
    args = common.train_args(out, per_device_train_batch_size=16, save_strategy="steps", save_steps=common.STOP_AT)
    trainer = Trainer(common.make_model(tok), args, train_dataset=common.train_data(tok), processing_class=tok,
                      callbacks=[Poll()])
    trainer.train()
    evaluator = Trainer(common.make_model(tok, seed=3), common.train_args(out / "eval"), processing_class=tok,
                        compute_metrics=common.accuracy)
    record = common.evaluation_record(evaluator, tok)
    while pending and time.time() - min(launches[n].start for n in pending) < 120:
        _poll(pending, launches)
        time.sleep(0.2)
    return {"state": {k: v.detach().clone() for k, v in trainer.model.state_dict().items()},
            "logs": common.train_logs(trainer), "eval": record, "counts": common.train_counts(trainer),
            "metrics_lines": _metrics_lines(out)}


def _metrics_lines(out) -> int:
    path = Path(out) / "metrics.jsonl"
    return sum(1 for _ in open(path)) if path.exists() else 0


def _load(path):
    from safetensors.torch import load_file
    return load_file(str(Path(path) / "model.safetensors"))


def _assert_close_weights(saved: dict, reference: dict, atol=1e-5):
    assert saved.keys() <= reference.keys()
    worst = max((saved[k] - reference[k]).abs().max().item() for k in saved)
    assert worst < atol, f"largest weight difference {worst:.3g}"
    return worst


# ====================================================================== tests on the launches
@pytest.mark.torchrun
@pytest.mark.slow
def test_ddp_2x8_gives_the_weights_of_1x16(runs):
    runs["launches"]["ddp"].check()
    out = runs["out"] / "ddp"
    _assert_close_weights(_load(out), runs["single"]["state"])
    info = json.loads((out / "logs.json").read_text())
    assert info["world_size"] == 2 and info["wrapped"] == "DistributedDataParallel"
    # rank 0 logs the global batch's loss (not its own share), once: one metrics.jsonl writer
    ref = runs["single"]["logs"]
    assert [s for s, _ in info["logs"]] == [s for s, _ in ref]
    np.testing.assert_allclose([loss for _, loss in info["logs"]], [loss for _, loss in ref], atol=2e-4)
    assert _metrics_lines(out) == runs["single"]["metrics_lines"]
    # rows and tokens seen are summed over the ranks: the single process's figures, in the state and the logs
    assert info["counts"] == runs["single"]["counts"] and info["counts"]["samples_seen"] > 0
    assert "Running training" in runs["launches"]["ddp"].output
    assert runs["launches"]["ddp"].output.count("***** Running training *****") == 1  # rank 0 only


@pytest.mark.torchrun
@pytest.mark.slow
def test_evaluate_and_predict_gather_every_row_once_in_order(runs):
    runs["launches"]["ddp"].check()
    dist_eval = json.loads((runs["out"] / "eval.json").read_text())
    ref = runs["single"]["eval"]
    for name, rows in (("odd", common.EVAL_ROWS), ("tiny", common.TINY_EVAL_ROWS)):
        got, want = dist_eval[name], ref[name]
        assert got["metrics"] == want["metrics"], name  # exactly: the same batches, the same sums
        assert got["test_loss"] == want["test_loss"]
        assert len(got["predictions"]) == rows
        assert got["predictions"] == want["predictions"]  # bit-identical logits, dataset order
        assert got["label_ids"] == got["labels"]  # each row once, in dataset order


@pytest.mark.torchrun
@pytest.mark.slow
def test_batch_eval_metrics_and_gather_object_under_ddp(runs):
    """batch_eval_metrics: one call per step on the step's batches of both ranks (a padding batch adds no row),
    compute_result on the last; eval_use_gather_object: list outputs of every row once, in dataset order."""
    runs["launches"]["ddp"].check()
    got = json.loads((runs["out"] / "batch_eval.json").read_text())
    ref = runs["single"]["eval"]
    for name, rows in (("odd", common.EVAL_ROWS), ("tiny", common.TINY_EVAL_ROWS)):
        calls = got[name]["calls"]
        assert [c[0] for c in calls] == [False] * (len(calls) - 1) + [True], name
        assert len(calls) == (3 if name == "odd" else 1) and sum(c[1] for c in calls) == rows
        assert got[name]["accuracy"] == ref[name]["metrics"]["eval_accuracy"]
        assert got[name]["labels"] == ref[name]["labels"]
        assert got[name]["argmax"] == [int(max(range(2), key=p.__getitem__)) for p in ref[name]["predictions"]]


@pytest.mark.torchrun
@pytest.mark.slow
def test_per_batch_outputs_and_losses_under_ddp(runs, tmp_path):
    """eval_do_concat_batches=False: the single-process batches, in order (each rank's contiguous run gathered, a
    padding batch dropped); include_for_metrics=["loss"]: each batch's loss once per row."""
    runs["launches"]["ddp"].check()
    got = json.loads((runs["out"] / "per_batch.json").read_text())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the workers: bit-identical matmuls
    try:
        want = common.per_batch_record(common.tokenizer(), tmp_path)
    finally:
        torch.set_num_threads(threads)
    for name, rows in (("odd", common.EVAL_ROWS), ("tiny", common.TINY_EVAL_ROWS)):
        sizes = [len(b) for b in got[name]["label_ids"]]
        assert sizes == [8] * (rows // 8) + ([rows % 8] if rows % 8 else []), name  # 5 batches of 37 rows; 1 of 3
        assert got[name] == want[name], name
        assert [len(x) for x in got[name]["losses"]] == sizes
        assert sum(x for b in got[name]["losses"] for x in b) / rows == pytest.approx(got[name]["eval_loss"], abs=1e-6)


@pytest.mark.torchrun
@pytest.mark.slow
def test_fsdp2_trains_checkpoints_resumes_and_saves_a_loadable_model(runs):
    runs["launches"]["fsdp"].check()
    record = json.loads((runs["out"] / "fsdp_eval.json").read_text())
    assert record["layer_class"] == "FSDPBertLayer" and record["root_class"].startswith("FSDP")
    files = record["checkpoint_files"]
    assert "model.safetensors" in files and "optimizer.safetensors" in files
    assert not [f for f in files if f.endswith((".metadata", ".distcp", ".bin", ".pt", ".pth", ".pkl"))]
    out = runs["out"] / "fsdp"
    saved = _load(out)
    _assert_close_weights(saved, runs["single"]["state"])  # 2 x 8 sharded == 1 x 16, resume included
    np.testing.assert_allclose([loss for _, loss in record["logs"]], [loss for _, loss in runs["single"]["logs"]],
                               atol=2e-4)
    from transformers import AutoModelForSequenceClassification
    model = AutoModelForSequenceClassification.from_pretrained(str(out))
    assert type(model).__name__ == "BertForSequenceClassification"
    for k, v in model.state_dict().items():
        if k in saved:
            assert torch.equal(v, saved[k]), k
    # the sharded model's evaluation == one process's evaluation of the saved model
    from trainwright import Trainer
    tok = common.tokenizer()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = common.evaluation_record(Trainer(model, common.train_args(runs["out"] / "fsdp_single_eval"),
                                                  processing_class=tok, compute_metrics=common.accuracy), tok)
    finally:
        torch.set_num_threads(threads)
    for name in ("odd", "tiny"):
        got, want = record[name], single[name]
        # the training state's epoch and input tokens seen come with every log (as transformers), the fresh Trainer's
        # are 0: the evaluation itself must be equal
        state_keys = ("epoch", "num_input_tokens_seen")
        assert {k: v for k, v in got["metrics"].items() if k not in state_keys} == \
            {k: v for k, v in want["metrics"].items() if k not in state_keys}, name
        np.testing.assert_allclose(got["predictions"], want["predictions"], rtol=0, atol=1e-6)
        assert got["label_ids"] == got["labels"]


@pytest.mark.torchrun
@pytest.mark.slow
def test_two_machines_train_together(runs):
    for name in ("node0", "node1"):
        runs["launches"][name].check()
    out = runs["out"] / "nodes" / "ddp"
    info = json.loads((out / "logs.json").read_text())
    assert info["world_size"] == 2
    _assert_close_weights(_load(out), runs["single"]["state"])


@pytest.mark.torchrun
@pytest.mark.slow
@pytest.mark.parametrize("mode", ["raise", "hang"])
def test_a_failing_rank_ends_the_job_naming_the_rank(runs, mode):
    launch = runs["launches"][mode]
    assert launch.proc.returncode not in (0, None), launch.output[-4000:]
    failing_at = float(launch.output.split("FAILING_AT=")[1].split()[0])
    # raise: the others stop at once; hang: after ddp_timeout (5 s), then torchrun's SIGTERM, and SIGKILL 30 s
    # later for the stuck rank (measured: 12 s and 48 s on a 2-core machine under a load of 15)
    limit = 60 if mode == "raise" else 90
    assert launch.end - failing_at < limit, f"the job outlived the failure by {launch.end - failing_at:.0f} s"
    if mode == "raise":
        assert "[trainwright] rank 1 of 2" in launch.output and "simulated failure at step 3" in launch.output
        # torchrun's summary names the failing rank as the root cause
        summary = launch.output[launch.output.rfind("Root Cause"):]
        assert "rank      : 1" in summary or "rank: 1" in summary, summary[:2000]
    else:  # rank 1 is stuck: rank 0's collective times out after ddp_timeout and ends the job
        assert "[trainwright] rank 0 of 2" in launch.output


@pytest.mark.torchrun
@pytest.mark.slow
def test_a_signal_on_one_rank_stops_every_rank_at_the_same_step(runs):
    """SIGTERM reaches rank 1 only: the ranks agree on the stop, write one complete checkpoint together
    and exit 143 (a rank stopping alone would leave the other in a mismatched collective)."""
    from trainwright.checkpoint import checkpoint_status
    launch = runs["launches"]["signal"]
    assert launch.proc.returncode not in (0, None)
    assert "exitcode  : 143" in launch.output, launch.output[-4000:]
    path = runs["out"] / "signal" / "checkpoint-3"
    assert checkpoint_status(path) == (True, "")
    assert json.loads((path / "trainer_state.json").read_text())["global_step"] == 3
    assert launch.output.count("Checkpoint written to") == 1  # rank 0 says it


@pytest.mark.torchrun
@pytest.mark.slow
def test_resume_at_another_world_size_needs_the_same_global_batch(runs, tmp_path):
    """A 2 x 8 checkpoint is a full state dict: one process with batch 16 continues it exactly; with
    batch 8 (another global batch, another data order) it is refused with a clear error."""
    runs["launches"]["ddp"].check()
    from trainwright import CheckpointError, Trainer
    tok = common.tokenizer()
    data = common.train_data(tok)
    shutil.copytree(runs["out"] / "ddp" / f"checkpoint-{common.STOP_AT}", tmp_path / f"checkpoint-{common.STOP_AT}")
    trainer = Trainer(common.make_model(tok), common.train_args(tmp_path, per_device_train_batch_size=8),
                      train_dataset=data, processing_class=tok)
    with pytest.raises(CheckpointError,
                       match=r"global batch .*8 x 2 = 16, now 8 x 1 = 8.*per_device_train_batch_size=16"):
        trainer.train(resume_from_checkpoint=True)
    trainer = Trainer(common.make_model(tok), common.train_args(tmp_path, per_device_train_batch_size=16),
                      train_dataset=data, processing_class=tok)
    trainer.train(resume_from_checkpoint=True)
    assert trainer.state.global_step == common.MAX_STEPS
    _assert_close_weights({k: v for k, v in trainer.model.state_dict().items()}, runs["single"]["state"])


# ====================================================================== pieces, without torchrun
def test_eval_sampler_shards_are_the_single_process_batches():
    from trainwright.data.samplers import EvalBatchSampler
    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 5, 7, 16, 17, 37, 64):
        lengths = rng.integers(1, 50, size=n)
        for bs in (1, 3, 8):
            for sort in (False, True):
                single = list(EvalBatchSampler(n, bs, lengths=lengths if sort else None))
                for ws in (2, 3, 4):
                    samplers = [EvalBatchSampler(n, bs, ws, r, lengths=lengths if sort else None) for r in range(ws)]
                    real = [b for s in samplers for b in list(s)[:s.num_real_batches]]
                    assert real == single  # the same batches, in rank order
                    assert len({len(s) for s in samplers}) == 1  # every rank runs as many forward passes
                    assert all(len(b) > 0 for s in samplers for b in s)
                    assert samplers[0].num_padding_batches == 0  # rank 0 holds the most
                    inv = samplers[0].inverse_order
                    flat = np.array([i for b in real for i in b])
                    np.testing.assert_array_equal(flat[inv] if inv is not None else flat, np.arange(n))


def test_train_sampler_never_gives_a_rank_an_empty_batch():
    from trainwright.data.samplers import ResumableBatchSampler
    for n in (5, 9, 17, 33):
        for ws in (2, 3, 4):
            for bs in (1, 2, 8):
                samplers = [ResumableBatchSampler(n, bs, seed=1, world_size=ws, rank=r) for r in range(ws)]
                single = ResumableBatchSampler(n, bs * ws, seed=1)
                per_rank = [list(s) for s in samplers]
                assert len({len(p) for p in per_rank}) == 1 and len(per_rank[0]) == len(samplers[0])
                for step, batch in enumerate(single):
                    if step >= len(per_rank[0]):  # dropped: fewer rows than ranks
                        assert len(batch) < ws
                        continue
                    parts = [p[step] for p in per_rank]
                    assert all(parts) and sum(parts, []) == batch


def test_fsdp_settings_accept_transformers_forms(tmp_path):
    from trainwright import ConfigError
    from trainwright.distributed import FSDPPlan
    assert not FSDPPlan(None).enabled and not FSDPPlan("").enabled and not FSDPPlan([]).enabled
    for form in ("full_shard", "full_shard auto_wrap", ["full_shard", "auto_wrap"], True, "auto_wrap"):
        plan = FSDPPlan(form)
        assert plan.enabled and plan.strategy == "full_shard" and plan.reshard_after_forward
    assert not FSDPPlan("shard_grad_op").reshard_after_forward
    assert FSDPPlan("hybrid_shard").hybrid
    assert FSDPPlan("full_shard offload").offload
    assert not FSDPPlan("no_shard").enabled  # plain DDP
    path = tmp_path / "fsdp.json"
    path.write_text(json.dumps({"fsdp_transformer_layer_cls_to_wrap": "BertLayer",
                                "fsdp_reshard_after_forward": "false",
                                "fsdp_backward_prefetch": "backward_pre", "fsdp_version": 2}))
    plan = FSDPPlan("full_shard", str(path))
    assert plan.layer_classes == ["BertLayer"] and not plan.reshard_after_forward
    assert plan.ignored == ["backward_prefetch"]
    with pytest.raises(ConfigError, match="unknown option"):
        FSDPPlan("full_shard zero3")
    with pytest.raises(ConfigError, match="several sharding strategies"):
        FSDPPlan("full_shard shard_grad_op")
    with pytest.raises(ConfigError, match="version"):
        FSDPPlan("full_shard", {"version": 3})
    with pytest.warns(UserWarning, match="not used"):
        FSDPPlan("full_shard", {"no_such_key": 1})


def test_resume_mismatches_allow_another_world_size_with_the_same_global_batch():
    from trainwright.checkpoint.resume import resume_mismatches
    args = common.train_args("/tmp/unused", per_device_train_batch_size=16)
    saved = {"per_device_train_batch_size": 8, "gradient_accumulation_steps": 1}
    assert resume_mismatches(saved, 2, args, 1, 301) == []
    assert resume_mismatches(saved, 2, args, 1, 289) != []  # 289 % 16 == 1 row: dropped on 2 ranks, kept on 1
    assert "global batch" in resume_mismatches(saved, 4, args, 1, 301)[0]
    assert resume_mismatches({**saved, "per_device_train_batch_size": 16}, 1, args, 1) == []
    assert "per_device_train_batch_size" in resume_mismatches(saved, 1, args, 1)[0]


def test_full_optimizer_state_converts_between_names_and_indices():
    from trainwright.distributed.fsdp import _optimizer_state_by_index, _param_names
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    opt = torch.optim.AdamW([{"params": [model[0].weight, model[1].weight]},
                             {"params": [model[0].bias, model[1].bias], "weight_decay": 0.0}], lr=0.1)
    model(torch.randn(2, 3)).sum().backward()
    opt.step()
    names = _param_names(opt, model)
    assert names == ["0.weight", "1.weight", "0.bias", "1.bias"]
    plain = opt.state_dict()
    by_name = {"state": {names[i]: v for i, v in plain["state"].items()},
               "param_groups": [{**g, "params": [names[i] for i in g["params"]]} for g in plain["param_groups"]]}
    back = _optimizer_state_by_index(by_name)
    assert back["param_groups"] == plain["param_groups"]
    assert back["state"].keys() == plain["state"].keys()
    for i in plain["state"]:
        for k in plain["state"][i]:
            assert torch.equal(back["state"][i][k], plain["state"][i][k])


def test_iterable_training_set_is_shared_out_by_global_batch():
    from trainwright.distributed import IterableShard

    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            yield from range(21)

    for ws, bs in ((2, 4), (3, 2), (4, 5)):
        shares = [list(IterableShard(Stream(), bs, ws, r)) for r in range(ws)]
        loaders = [list(torch.utils.data.DataLoader(IterableShard(Stream(), bs, ws, r), batch_size=bs))
                   for r in range(ws)]
        assert len({len(b) for b in loaders}) == 1  # every rank as many batches, none empty
        assert all(len(b) for batches in loaders for b in batches)
        rows = sorted(x for s in shares for x in s)
        assert len(rows) == len(set(rows)) and 21 - len(rows) < ws  # each row once; only a tail < ws dropped
        for step in range(len(loaders[0])):  # the ranks' batches of a step are one global batch, in order
            glob = [int(x) for r in range(ws) for x in loaders[r][step]]
            assert glob == list(range(step * bs * ws, step * bs * ws + len(glob)))
