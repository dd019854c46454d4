"""The bench's parts: the chained parts against the same parts measured one at a time."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from edged.bench import parts
from edged.config.model import WorkerConfig
from edged.worker.scheduling import opencv_in_caller_thread


def test_the_chained_parts_do_every_part_for_every_frame(assets: Path, model_path: Path) -> None:
    opencv_in_caller_thread()  # as the bench and the worker run OpenCV
    worker = WorkerConfig(name="bench", model=str(model_path))
    video = str(assets / "media" / "traffic-720p.mp4")
    decode, samples = parts.measure_decode(video, 60, 1)
    alone = parts.measure_infer(worker, samples, 20)
    chained = parts.measure_chain(worker, [video], 1, 1.5)

    assert chained.threads == 1 and chained.videos == (video,)
    assert chained.frames > 0
    # Every frame was decoded, letterboxed, inferred and had its boxes decoded: chaining cannot
    # make that cheaper than the parts cost one at a time (a little slack for a noisy box).
    work = decode.cpu_ms + alone.cpu_ms
    assert chained.cpu_ms > 0.85 * work, (chained, work)
    # One thread runs the parts one after another: at most as fast as they add up.
    assert chained.fps < 1.15 * 1000.0 / work, (chained, work)
    # The rate and the frames agree with the window it counted.
    assert 0.5 < chained.frames / (chained.fps * 1.5) < 1.5, chained


def test_a_chain_that_cannot_decode_its_video_says_which(
    tmp_path: Path, model_path: Path
) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all" * 100)
    worker = WorkerConfig(name="bench", model=str(model_path))
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="the chained parts failed") as failed:
        parts.measure_chain(worker, [str(broken)], 1, 5.0)
    assert "broken.mp4" in str(failed.value)
    # It stops at the failure, not after the warm-up deadline or the counting window.
    assert time.monotonic() - started < 5.0
