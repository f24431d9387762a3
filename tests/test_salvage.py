"""The timeline of a salvaging decode (m2lcodec.salvage), without any model: where silence for lost chunks
begins and ends, and how the pieces tile the output. Decoding with lost chunks is in tests/test_codec.py."""

from __future__ import annotations

import pytest

from m2lcodec import spectral
from m2lcodec.salvage import gap_sample, restart_sample, salvage_plan


def test_salvage_plan_tiles_the_output():
    """Lost [a, b) is silent from where chunk a's frames begin to overlap the audio to the first sample
    chunk b covers alone; the pieces tile the output in order; touching ranges merge."""
    n, T, C, P = 300000, 10, spectral.CHUNK_SAMPLES, spectral.PAD_LEFT
    plan = salvage_plan([(6, 7), (2, 4), (4, 5)], T, n, 44100)
    assert [(p.first_sample, p.stop_sample, p.start_chunk, p.stop_chunk, p.lost) for p in plan] == [
        (0, 2 * C - P, 0, 2, False), (2 * C - P, 5 * C, 2, 5, True), (5 * C, 6 * C - P, 5, 6, False),
        (6 * C - P, 7 * C, 6, 7, True), (7 * C, n, 7, 10, False)]
    n48 = 340000  # 10 chunks at 48 kHz
    plan = salvage_plan([(0, 1), (9, 10)], T, n48, 48000)  # lost at both ends, another rate
    assert [(p.first_sample, p.stop_sample, p.lost) for p in plan] == [
        (0, restart_sample(1, 48000)[1], True), (restart_sample(1, 48000)[1], gap_sample(9, 48000), False),
        (gap_sample(9, 48000), n48, True)]
    m, o = restart_sample(1, 48000)  # on the grid where 44.1 and 48 kHz sample positions coincide
    assert m >= C and m % 147 == 0 and o * 44100 == m * 48000
    assert salvage_plan([], T, n, 44100)[0].stop_sample == n
    with pytest.raises(ValueError, match="outside"):
        salvage_plan([(3, 11)], T, n, 44100)
