#!/usr/bin/env bash
# The one command of a GPU lease (device tool: run with carry [".gpu"], timeout_s 600):
#   bash scripts/gpu_lease.sh MINUTES [BATCH]
# Installs the carried wheels, trains from the pack for MINUTES at batch BATCH (default 64) and leaves the
# state shards and the log in $OUT. Prepared and tested on the CPU path: docs/training.md, "GPU".
set -euo pipefail
minutes=${1:?minutes}
batch=${2:-64}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python3 scripts/gpu_run.py train --pack .gpu --minutes "$minutes" --batch-size "$batch" --workers 12 --out "$OUT" 2>&1 \
  | tee "$OUT/train.txt"
