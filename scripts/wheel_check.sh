#!/usr/bin/env bash
# Builds the wheel, installs it into a fresh virtual environment outside the source tree and runs the
# bundled example round trip and `m2lcodec verify` from that install: a wheel that lost its weights or its
# example clip fails here (CI runs it; issue 11).
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python -m pip install -q build
python -m build --wheel --outdir "$work/dist" . >/dev/null
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q --upgrade pip
"$work/venv/bin/pip" install -q torch==2.13.0
"$work/venv/bin/pip" install -q "$work"/dist/m2lcodec-*.whl
cd "$work"  # nothing from the source tree can be imported from here
clip=$("$work/venv/bin/python" -c "import m2lcodec, pathlib; print(pathlib.Path(m2lcodec.__file__).parent / 'examples' / 'arctic_breeze_excerpt.flac')")
"$work/venv/bin/python" -c "import m2lcodec, sys; assert 'site-packages' in m2lcodec.__file__, m2lcodec.__file__"
"$work/venv/bin/m2lcodec" --version
"$work/venv/bin/m2lcodec" compress "$clip" "$work/example.m2l"
"$work/venv/bin/m2lcodec" verify "$work/example.m2l"
"$work/venv/bin/m2lcodec" decompress "$work/example.m2l" "$work/example.wav"
"$work/venv/bin/python" -c "
import soundfile as sf, sys
a, b = sf.info(sys.argv[1]), sf.info(sys.argv[2])
assert (a.frames, a.samplerate, a.channels) == (b.frames, b.samplerate, b.channels), (a, b)
print('wheel round trip ok:', b.frames, 'samples,', b.samplerate, 'Hz,', b.channels, 'channels')" "$clip" "$work/example.wav"
