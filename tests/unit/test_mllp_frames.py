"""MLLP framing over arbitrary chunking: split, merged, stray bytes, resynchronisation, oversize."""

from __future__ import annotations

import pytest

from app.mllp_frames import FrameReader, frame

MESSAGES = [b"MSH|^~\\&|A|" + bytes([65 + i]) * (i * 37 + 5) for i in range(5)]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 10_000])
def test_frames_survive_any_chunking(size: int) -> None:
    stream = b"".join(frame(m) for m in MESSAGES)
    reader = FrameReader(limit=1_000_000)
    got = [f.data for i in range(0, len(stream), size) for f in reader.feed(stream[i : i + size])]
    assert got == MESSAGES and reader.stray_bytes == 0


def test_stray_bytes_between_frames_are_dropped_and_counted() -> None:
    reader = FrameReader(limit=1000)
    got = reader.feed(b"\n" + frame(b"one") + b"\r\n junk " + frame(b"two"))
    assert [f.data for f in got] == [b"one", b"two"] and reader.stray_bytes == 9


def test_a_start_byte_inside_a_frame_resynchronises() -> None:
    reader = FrameReader(limit=1000)
    got = reader.feed(b"\x0bbroken mess" + frame(b"whole"))
    assert [f.data for f in got] == [b"whole"] and reader.broken_frames == 1


def test_a_lone_fs_inside_content_is_kept() -> None:
    reader = FrameReader(limit=1000)
    assert reader.feed(b"\x0bab\x1c") == []
    assert [f.data for f in reader.feed(b"cd\x1c\r")] == [b"ab\x1ccd"]


def test_an_oversize_frame_is_read_to_its_end_and_cut() -> None:
    reader = FrameReader(limit=10)
    big = b"x" * 100
    got = reader.feed(frame(big)[:50]) + reader.feed(frame(big)[50:] + frame(b"small"))
    assert [(f.data, f.size, f.truncated) for f in got] == [(b"x" * 10, 100, True), (b"small", 5, False)]
