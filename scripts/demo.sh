#!/usr/bin/env bash
# Fresh machine -> installed codec -> the bundled example clip compressed and decompressed with the
# bundled default model, with the summary printed. Outputs go to ./demo-out/.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d .venv ] || python3 -m venv .venv
. .venv/bin/activate
python -c "import torch" 2>/dev/null || pip install -q torch==2.13.0
pip install -q -e .
mkdir -p demo-out
clip=m2lcodec/examples/arctic_breeze_excerpt.flac
m2lcodec compress "$clip" demo-out/example.m2l --force
m2lcodec decompress demo-out/example.m2l demo-out/example.wav --force
m2lcodec info demo-out/example.m2l
