"""Chaos test: SIGKILL a training run at random moments, restart it until it finishes, and check that the final
weights equal those of one uninterrupted run, bit for bit.

    python bench/chaos.py --kills 50 [--seed 0] [--slow 0.03] [--modes step,save,background] [--workdir DIR]
                          [--json results.json]

The subject is tests/chaos_train.py (a tiny BERT, dropout on, gradient accumulation, 30 steps over 6 epochs, a
checkpoint every 3 steps, save_total_limit=3, resume_from_checkpoint from the newest complete checkpoint).
Checkpoint writes are slowed down with TRAINWRIGHT_TEST_SLOW_CHECKPOINT_SECONDS so that many kills land in the
middle of one. Each kill is one of:

* ``step``:  at a random moment (0-150 ms) after a random one of the next ``3 * save_steps`` optimizer steps
  (anywhere: loading the checkpoint, the step, logging, saving, rotating old checkpoints, the final weights);
* ``save``:  at a random moment while the temporary directory of one of the next three checkpoints exists
  (mid-write);
* ``background``: while a checkpoint is written in the background (``save_in_background``, the default) and
  training has already gone on past its step: at a random moment once the temporary directory of checkpoint-N
  exists and a step after N has ended (the kill lands in the write and in the following training steps at once).

The kinds take turns in a random order (each of them once in every three kills).

Each round kills one fresh run ``--kills-per-round`` times, lets it finish, and compares its final weights.

After every kill the output directory is inspected: every ``checkpoint-N`` directory must be complete (a valid
manifest with every file at its listed size); temporary directories may be left behind (the next run removes
them). At the end the log of the subject tells which checkpoint each restart resumed from; each of those must
have been complete when it was picked, and ``load_checkpoint`` verifies every file's sha256 before loading.
Every optimizer step's weights hash is compared with the uninterrupted run, so a divergence is reported with
the first step at which it appears.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tests" / "chaos_train.py"
sys.path.insert(0, str(ROOT / "src"))

EVENTS = "chaos_events.log"
FINAL = "final.safetensors"


def _env(slow: float) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env["OMP_NUM_THREADS"] = "1"
    env.pop("TRAINWRIGHT_TEST_FAIL_CHECKPOINT_WRITE", None)
    if slow > 0:
        env["TRAINWRIGHT_TEST_SLOW_CHECKPOINT_SECONDS"] = str(slow)
    else:
        env.pop("TRAINWRIGHT_TEST_SLOW_CHECKPOINT_SECONDS", None)
    return env


def read_events(output_dir: Path) -> list[list[str]]:
    path = Path(output_dir) / EVENTS
    if not path.exists():
        return []
    return [line.split() for line in path.read_text().splitlines() if line.strip()]


def _steps_done(output_dir: Path, pid: int) -> int:
    """The last step reported by process ``pid``, or -1 if it has not started training."""
    step, started = -1, False
    for ev in read_events(output_dir):
        if ev[0] == "start" and ev[1] == str(pid):
            resumed = ev[2].split("=", 1)[1]
            started, step = True, (int(resumed.rsplit("-", 1)[1]) if resumed != "-" else 0)
        elif started and ev[0] == "step":
            step = int(ev[1])
        elif ev[0] == "start":
            started = False
    return step


MODES = ("step", "save", "background")


def _temp_dirs(output_dir: Path) -> list[str]:
    try:
        return [n for n in os.listdir(output_dir) if n.startswith(".checkpoint-") and "-tmp-" in n]
    except FileNotFoundError:
        return []


def _writes_behind(output_dir: Path, pid: int) -> list[int]:
    """Steps of the checkpoints that process ``pid`` is writing (its temporary directory exists) and that training
    has gone past (temporary directories of killed processes are left out)."""
    done = _steps_done(output_dir, pid)
    steps = []
    for name in _temp_dirs(output_dir):
        head = name[len(".checkpoint-"):].split(".", 1)[0]
        owner = name.rsplit("-", 2)[-2]
        if head.isdigit() and owner == str(pid) and int(head) < done:
            steps.append(int(head))
    return steps


def _checkpoint_dirs(output_dir: Path) -> dict[str, tuple[bool, str]]:
    from trainwright.checkpoint import checkpoint_status, list_checkpoints
    return {os.path.basename(p): checkpoint_status(p) for p in list_checkpoints(output_dir)}


def _launch(output_dir: Path, slow: float, args) -> subprocess.Popen:
    out = open(Path(output_dir).parent / f"{Path(output_dir).name}.stdout.log", "ab")
    cmd = [sys.executable, str(SCRIPT), str(output_dir), "--max-steps", str(args.max_steps),
           "--save-steps", str(args.save_steps)]
    return subprocess.Popen(cmd, env=_env(slow), stdout=out, stderr=subprocess.STDOUT, cwd=str(ROOT))


def _stdout_tail(output_dir: Path, n: int = 3000) -> str:
    path = Path(output_dir).parent / f"{Path(output_dir).name}.stdout.log"
    return path.read_text(errors="replace")[-n:] if path.exists() else ""


def run_reference(workdir: Path, args) -> Path:
    ref = Path(workdir) / "reference"
    shutil.rmtree(ref, ignore_errors=True)
    ref.mkdir(parents=True)
    proc = _launch(ref, 0.0, args)
    rc = proc.wait(timeout=args.timeout)
    if rc != 0 or not (ref / FINAL).exists():
        raise RuntimeError(f"the uninterrupted reference run failed (exit {rc}):\n{_stdout_tail(ref)}")
    return ref


def compare_weights(a: Path, b: Path) -> list[str]:
    """Names of the tensors that differ (or are missing on one side); empty when bit-identical."""
    import torch
    from safetensors.torch import load_file
    ta, tb = load_file(str(a)), load_file(str(b))
    diff = sorted(set(ta) ^ set(tb))
    diff += [k for k in sorted(set(ta) & set(tb)) if ta[k].dtype != tb[k].dtype or not torch.equal(ta[k], tb[k])]
    return diff


def trajectory(output_dir: Path) -> dict[int, set[str]]:
    steps: dict[int, set[str]] = {}
    for ev in read_events(output_dir):
        if ev[0] == "step":
            steps.setdefault(int(ev[1]), set()).add(ev[2])
    return steps


def first_divergence(reference: Path, chaos: Path) -> int | None:
    ref, got = trajectory(reference), trajectory(chaos)
    for step in sorted(got):
        if got[step] != ref.get(step):
            return step
    return None


def run_chaos(workdir, kills: int, *, seed: int = 0, slow: float = 0.03, max_steps: int = 30, save_steps: int = 3,
              kills_per_round: int = 5, timeout: float = 600.0, modes: tuple = MODES, log=print) -> dict:
    """Runs the reference, then rounds of chaos under ``workdir``: in each round a fresh run is killed
    ``kills_per_round`` times (fewer in the last round) and then left to finish, and its final weights are compared
    with the reference. Returns a summary dict."""
    args = argparse.Namespace(max_steps=max_steps, save_steps=save_steps, timeout=timeout)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    t0 = time.time()
    reference = run_reference(workdir, args)
    log(f"reference run done in {time.time() - t0:.1f}s")

    result = {"kills_requested": kills, "kills": 0, "kills_during_write": 0, "kills_during_background_write": 0,
              "kills_by_mode": {mode: 0 for mode in modes},
              "launches": 0, "rounds": 0, "resumed_from": [], "incomplete_visible": [], "crashes": [],
              "bit_identical": True, "mismatched_tensors": [], "first_divergent_step": None}
    round_no = 0
    turn: list[str] = []
    while True:
        round_no += 1
        chaos = workdir / f"chaos-{round_no}"
        shutil.rmtree(chaos, ignore_errors=True)
        chaos.mkdir(parents=True)
        complete_at_kill: set[str] = set()
        finished = False
        round_kills = 0
        while not finished:
            proc = _launch(chaos, slow, args)
            result["launches"] += 1
            killed = False
            if result["kills"] < kills and round_kills < kills_per_round:
                if not turn:
                    turn = rng.sample(list(modes), len(modes))
                mode = turn.pop()
                killed, during_write, behind = _kill_at_random(proc, chaos, mode, rng, slow, max_steps, save_steps,
                                                               timeout)
                if killed:
                    round_kills += 1
                    result["kills"] += 1
                    result["kills_by_mode"][mode] += 1
                    result["kills_during_write"] += during_write
                    result["kills_during_background_write"] += bool(behind)
                    status = _checkpoint_dirs(chaos)
                    bad = {k: why for k, (ok, why) in status.items() if not ok}
                    if bad:
                        result["incomplete_visible"].append(bad)
                    complete_at_kill |= {k for k, (ok, _) in status.items() if ok}
                    where = f", writing checkpoint-{behind[0]} in the background" if behind else \
                        (", mid-write" if during_write else "")
                    log(f"kill {result['kills']}/{kills} ({mode}{where}) at step "
                        f"{_steps_done(chaos, proc.pid)}; checkpoints: {sorted(status)}")
            if not killed:
                rc = proc.wait(timeout=timeout)
                if rc != 0:
                    result["crashes"].append({"exit": rc, "output": _stdout_tail(chaos)})
                    log(f"run crashed with exit {rc}:\n{_stdout_tail(chaos)}")
                    break
                finished = True
        for ev in read_events(chaos):
            if ev[0] == "start":
                resumed = ev[2].split("=", 1)[1]
                if resumed != "-":
                    name = os.path.basename(resumed)
                    result["resumed_from"].append(name)
                    if name not in complete_at_kill:
                        result["incomplete_visible"].append({name: "resumed from a checkpoint not complete at kill"})
        result["rounds"] = round_no
        result.setdefault("round_resumes", []).append(
            [os.path.basename(ev[2].split("=", 1)[1]) for ev in read_events(chaos) if ev[0] == "start"])
        if result["crashes"]:
            result["bit_identical"] = False
            break
        diff = compare_weights(reference / FINAL, chaos / FINAL)
        if diff:
            result["bit_identical"] = False
            result["mismatched_tensors"] += diff
            result["first_divergent_step"] = first_divergence(reference, chaos)
            log(f"round {round_no}: final weights differ in {len(diff)} tensors; first divergent step "
                f"{result['first_divergent_step']}")
        log(f"round {round_no}: {round_kills} kills, final weights "
            f"{'bit-identical' if not diff else 'DIFFERENT'}")
        if result["kills"] >= kills:
            break
        if not result["bit_identical"]:
            break
    result["seconds"] = round(time.time() - t0, 1)
    return result


def _kill_at_random(proc, output_dir: Path, mode: str, rng: random.Random, slow: float, max_steps: int,
                    save_steps: int, timeout: float) -> tuple[bool, bool, list[int]]:
    """Waits for the chosen moment and SIGKILLs ``proc``. Returns (killed, a checkpoint write was in progress, the
    steps of the checkpoints being written in the background while training had gone past them)."""
    deadline = time.time() + timeout
    while _steps_done(output_dir, proc.pid) < 0:  # importing torch & co.: not interesting to kill
        if proc.poll() is not None or time.time() > deadline:
            return False, False, []
        time.sleep(0.02)
    current = _steps_done(output_dir, proc.pid)
    if mode == "background":
        while not _writes_behind(output_dir, proc.pid):
            if proc.poll() is not None or time.time() > deadline:
                return False, False, []
            time.sleep(0.003)
        time.sleep(rng.uniform(0, slow * 4))
    elif mode == "save":
        saves = sorted({s for s in range(save_steps, max_steps + 1, save_steps) if s > current} | {max_steps})
        target = f".checkpoint-{rng.choice(saves[:3])}."  # one of the next three saves
        while True:
            if any(d.startswith(target) for d in _temp_dirs(output_dir)):
                time.sleep(rng.uniform(0, slow * 8))
                break
            if proc.poll() is not None or time.time() > deadline:
                return False, False, []
            time.sleep(0.003)
    else:
        target = rng.randint(current, min(max_steps - 1, current + 3 * save_steps))  # soon: kills spread over the run
        while _steps_done(output_dir, proc.pid) < target:
            if proc.poll() is not None or time.time() > deadline:
                return False, False, []
            time.sleep(0.003)
        time.sleep(rng.uniform(0, 0.15))
    if proc.poll() is not None:
        return False, False, []
    behind = _writes_behind(output_dir, proc.pid)
    during_write = any(name.rsplit("-", 2)[-2] == str(proc.pid) for name in _temp_dirs(output_dir))  # its own
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return True, during_write, behind


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="SIGKILL/resume chaos test of trainwright checkpoints.")
    p.add_argument("--kills", type=int, default=10)
    p.add_argument("--kills-per-round", type=int, default=5,
                   help="kills in one run before it is left to finish and compared; then a fresh run starts")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--slow", type=float, default=0.03, help="seconds of sleep after each checkpoint file")
    p.add_argument("--modes", default=",".join(MODES), help="the kill kinds, comma-separated")
    p.add_argument("--max-steps", type=int, default=30)
    p.add_argument("--save-steps", type=int, default=3)
    p.add_argument("--workdir", default=None, help="default: a fresh temporary directory (removed on success)")
    p.add_argument("--json", default=None, help="write the summary here")
    a = p.parse_args(argv)
    workdir = Path(a.workdir) if a.workdir else Path(tempfile.mkdtemp(prefix="trainwright-chaos-"))
    result = run_chaos(workdir, a.kills, seed=a.seed, slow=a.slow, max_steps=a.max_steps, save_steps=a.save_steps,
                       kills_per_round=a.kills_per_round, modes=tuple(a.modes.split(",")),
                       log=lambda m: print(m, flush=True))
    ok = result["bit_identical"] and not result["incomplete_visible"] and not result["crashes"] \
        and result["kills"] == a.kills
    summary = {k: v for k, v in result.items() if k != "crashes"} | {"crashes": len(result["crashes"]), "ok": ok}
    print(json.dumps(summary, indent=2))
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2) + "\n")
    if ok and not a.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
