#!/usr/bin/env bash
# Peak memory (max RSS) of `m2lcodec compress - out.m2l` fed by a pipe, for a short and a long input, so
# the streaming encode is checked to hold latents, not audio (issue 11: long <= 1.3 x short).
# Usage: bench/pipe_memory.sh [SHORT_MIN=1] [LONG_MIN=60]. Needs ffmpeg and /usr/bin/time. One thread.
set -euo pipefail
short=${1:-1}; long=${2:-60}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
export OMP_NUM_THREADS=1
for minutes in "$short" "$long"; do
  # pink-ish noise, stereo 44.1 kHz 16-bit WAV, streamed (unknown length in its header)
  ffmpeg -loglevel error -f lavfi -i "anoisesrc=color=pink:amplitude=0.2:duration=$((minutes * 60)):sample_rate=44100" \
    -ac 2 -f wav - \
    | /usr/bin/time -f "%M" -o "$tmp/rss" m2lcodec compress - "$tmp/out.m2l" --force 2>/dev/null
  rss=$(cat "$tmp/rss")
  printf "%4s min  peak RSS %7.1f MB  .m2l %s bytes\n" "$minutes" "$(echo "$rss / 1024" | bc -l)" "$(stat -c %s "$tmp/out.m2l")"
  echo "$rss" > "$tmp/rss-$minutes"
done
echo "long / short peak RSS: $(echo "$(cat "$tmp/rss-$long") / $(cat "$tmp/rss-$short")" | bc -l | cut -c1-5)"
