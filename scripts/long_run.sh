#!/usr/bin/env bash
# Starts or resumes the long training run of issue 10 in the background (nohup, log to RUN_DIR/train.out).
# Usage: scripts/long_run.sh RUN_DIR [CONFIG] [INIT_WEIGHTS]
#   RUN_DIR/checkpoint.pt exists -> resume it (CONFIG and INIT are ignored: the checkpoint holds them).
#   otherwise                    -> a fine-tune of INIT_WEIGHTS with CONFIG; defaults: the current recipe
#                                   (docs/runs/long-run-cfg.json) from docs/runs/long-run-last.safetensors
#                                   when it exists (the run's raw weights, exported into the repo at the
#                                   end of each session so a wiped machine goes on from them), else the
#                                   shipped weights.
# Env: THREADS (torch threads, default 2 = the machine), CORPUS (default ~/m2l-corpus, from
# ../shared/data/corpus.sh), CACHE (default ~/m2l-cache). Stop with SIGTERM to the main process: it saves.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
run_dir="$(mkdir -p "$1" && cd "$1" && pwd)"
config="${2:-$repo/docs/runs/long-run-cfg.json}"
init="${3:-}"
if [ -z "$init" ]; then
  init="$repo/docs/runs/long-run-last.safetensors"
  [ -f "$init" ] || init="$repo/m2lcodec/weights/default.safetensors"
fi
corpus="${CORPUS:-$HOME/m2l-corpus}"
[ -f "$corpus/train.txt" ] || { echo "no $corpus/train.txt: run ../shared/data/corpus.sh first" >&2; exit 1; }
args=(train --data "$corpus/train.txt" --val-data "$corpus/val.txt" --run-dir "$run_dir"
      --cache-dir "${CACHE:-$HOME/m2l-cache}")
if [ -f "$run_dir/checkpoint.pt" ]; then
  args+=(--resume)
else
  args+=(--config "$config" --init "$init")
fi
OMP_NUM_THREADS="${THREADS:-2}" nohup nice -n 5 "$repo/.venv/bin/m2lcodec" "${args[@]}" \
  >> "$run_dir/train.out" 2>&1 &
echo "training in the background (pid $!): $run_dir/train.out"
