#!/usr/bin/env bash
# The book's own run, on a GPU machine: `--preset book` (224x224, 10 epochs, Xavier init, plain SGD at
# lr 0.1, batch 128, float32) with seed 0, one backend after the other, each stopped (SIGTERM: the
# finished epochs are kept, and `--resume` goes on) after NIN_BOOK_SECONDS (default 270).
#
#   benchmarks/book_gpu.sh DATA OUT BACKEND...      e.g. benchmarks/book_gpu.sh data/fashion-mnist runs torch jax
#
# Writes OUT/env.txt (GPU, versions), OUT/log.txt and, per backend, the run directory OUT/BACKEND
# (metrics.json, curves.png, checkpoint.safetensors). `python benchmarks/book_gpu.py OUT` makes the table.
set -u
data=$1 out=$2
shift 2
mkdir -p "$out"
{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    python3 -c "import sys, numpy; print('python', sys.version.split()[0], 'numpy', numpy.__version__)"
    python3 -m pip list 2>/dev/null | grep -iE "^(torch|jax|jaxlib|flax|optax|tensorflow|keras|mxnet|paddlepaddle) "
} > "$out/env.txt" 2>&1
for b in "$@"; do
    start=$(date +%s)
    timeout "${NIN_BOOK_SECONDS:-270}" python3 -m nin train --backend "$b" --preset book --seed 0 --data "$data" \
        --out "$out/$b" --quiet >> "$out/log.txt" 2>&1
    echo "$b: exit $? after $(($(date +%s) - start)) s" >> "$out/log.txt"
done
