#!/usr/bin/env bash
# The one command of a GPU lease (device tool: run with carry [".gpu"], timeout_s 600):
#   bash scripts/gpu_lease.sh MINUTES [BATCH] [WORKERS]
# Installs the carried wheels, trains from the pack for MINUTES at batch BATCH (default 64) with WORKERS data
# workers (default 12) and publishes the state shards and the log to $OUT every 2 minutes and at the end.
# If the first try fails before it published anything (data workers refused, say), it says so and tries
# once more in the main process for what is left of MINUTES. Prepared and tested on the CPU path:
# docs/training.md, "GPU".
set -uo pipefail
minutes=${1:?minutes}
batch=${2:-64}
workers=${3:-12}
start=$(date +%s)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl \
  || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
# GPU busy % and memory every 20 s: says whether the data workers or the GPU set the pace
(nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 20 > "$OUT/gpu-util.csv" 2>&1 &) || true
# Batches cross from the workers through /dev/shm: each worker keeps 4 batches of BATCH 1 MiB crops in
# flight, so fit the workers to half of what /dev/shm has (a small /dev/shm would kill them all).
shm_mb=$(df -Pm /dev/shm 2>/dev/null | awk 'NR==2 {print $4}')
fit=$(( ${shm_mb:-0} / 2 / (4 * batch * 11 / 10 + 1) ))
if [ "$fit" -lt "$workers" ]; then
  echo "/dev/shm has ${shm_mb:-no} MiB free: $fit data workers instead of $workers"
  workers=$fit
fi
python3 scripts/gpu_run.py train --pack .gpu --minutes "$minutes" --batch-size "$batch" --workers "$workers" \
  --out "$OUT" 2>&1 | tee "$OUT/train.txt"
rc=${PIPESTATUS[0]}
if [ "$rc" -ne 0 ] && ! ls "$OUT"/state-*.safetensors >/dev/null 2>&1; then
  left=$(python3 -c "print(max(0.0, $minutes - ($(date +%s) - $start) / 60 - 0.5))")
  echo "first try failed (rc $rc) with nothing saved: again with 0 workers for $left minutes" | tee -a "$OUT/train.txt"
  python3 scripts/gpu_run.py train --pack .gpu --minutes "$left" --batch-size "$batch" --workers 0 \
    --work /tmp/m2l-gpu-retry --out "$OUT" 2>&1 | tee -a "$OUT/train.txt"
  rc=${PIPESTATUS[0]}
fi
exit "$rc"
