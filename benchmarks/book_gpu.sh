#!/usr/bin/env bash
# The book's own run on a GPU machine: `--preset book` (224x224, 10 epochs, Xavier init, plain SGD at
# lr 0.1, batch 128, float32), per backend and seed, one run after the other, each stopped after
# NIN_BOOK_SECONDS (default 270: SIGTERM keeps the finished epochs, `--resume` goes on).
#
#   benchmarks/book_gpu.sh DATA RUNS SEEDS BACKEND...    e.g. benchmarks/book_gpu.sh data runs/book-gpu "0 1 2" torch jax
#
# Each run goes to RUNS/BACKEND-book-seedS (metrics.json, curves.png, checkpoint.safetensors, and the
# wall.json of benchmarks/accuracy.py), and RUNS/env.txt names the GPU and versions. Then, anywhere:
#   python benchmarks/accuracy.py --preset book --report-only --runs RUNS --backends torch,jax --machine "..." \
#       --json benchmarks/results/accuracy/book_gpu.json --md benchmarks/results/accuracy/book_gpu.md \
#       --png benchmarks/results/accuracy/book_gpu.png
set -u
data=$1 runs=$2 seeds=$3
shift 3
mkdir -p "$runs"
{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    python3 -c "import sys, numpy; print('python', sys.version.split()[0], 'numpy', numpy.__version__)"
    python3 -m pip list 2>/dev/null | grep -iE "^(torch|jax|jaxlib|flax|optax|tensorflow|keras|mxnet|paddlepaddle) "
} > "$runs/env.txt" 2>&1
for seed in $seeds; do
    for b in "$@"; do
        out="$runs/$b-book-seed$seed"
        command="python3 -m nin train --backend $b --preset book --seed $seed --data $data --out $out --quiet"
        start=$(date +%s)
        timeout "${NIN_BOOK_SECONDS:-270}" $command
        status=$?
        printf '{"seconds": %d, "commands": [{"command": "%s", "status": %d}], "finished": %s}\n' \
            $(($(date +%s) - start)) "$command" $status "$([ $status = 0 ] && echo true || echo false)" > "$out/wall.json"
    done
done
