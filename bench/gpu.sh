#!/usr/bin/env bash
# trainwright vs transformers.Trainer on one GPU, in alternating processes (see bench/bench_gpu.py).
#
#   bench/gpu.sh            # estimated 4-6 minutes on one H200 (no new repeat after 7): writes the GPU section of docs/benchmarks.md,
#                           # and gpu_bench.md + gpu_bench.jsonl (+ benchmarks.md) to $OUT when it is set
#   bench/gpu.sh --smoke    # the same code on the CPU with tiny sizes (under a minute); writes nothing in the repo
#
# Needs torch, transformers and tokenizers; not datasets (the workers make `import datasets` fail).
# PYTHON picks the interpreter (default: python3).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false TRANSFORMERS_VERBOSITY=error DISABLE_TQDM=1
if [[ " $* " == *" --smoke "* ]]; then
  export CUDA_VISIBLE_DEVICES="" OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
fi
exec "${PYTHON:-python3}" bench/bench_gpu.py "$@"
