"""MLLP framing: `0x0B message 0x1C 0x0D`, read from a byte stream in arbitrary chunks.

Frames may be split across reads or several may arrive in one; bytes outside a frame (a stray
newline between frames) are counted and dropped; a new start byte inside an unfinished frame
drops the broken part and starts over (resynchronisation). A frame larger than the limit is
still read to its end (so the stream stays in step) but only its first `limit` bytes are kept.
"""

from __future__ import annotations

from dataclasses import dataclass

START = b"\x0b"
END = b"\x1c\r"


@dataclass(frozen=True)
class Frame:
    """One message: its bytes (cut at the limit) and its full size."""

    data: bytes
    size: int

    @property
    def truncated(self) -> bool:
        """Whether the message was larger than the limit."""
        return self.size > len(self.data)


def frame(message: bytes) -> bytes:
    """Wrap a message (or an ACK) for sending."""
    return START + message + END


class FrameReader:
    """Feed it chunks; it returns the complete frames so far."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.stray_bytes = 0  # bytes seen outside any frame (whitespace included)
        self.broken_frames = 0  # frames dropped by a resynchronisation
        self._buffer = bytearray()
        self._in_frame = False
        self._size = 0  # bytes of the current frame so far (kept or not)
        self._pending_fs = False  # the last chunk ended with FS, which may start the end marker

    def feed(self, chunk: bytes) -> list[Frame]:
        """Take a chunk; every frame it completes."""
        frames: list[Frame] = []
        while chunk:
            if not self._in_frame:
                start = chunk.find(START)
                if start < 0:
                    self.stray_bytes += len(chunk)
                    break
                self.stray_bytes += start
                chunk = chunk[start + 1 :]
                self._in_frame, self._size, self._pending_fs = True, 0, False
                self._buffer.clear()
            else:
                chunk = self._consume(chunk, frames)
        return frames

    def _consume(self, chunk: bytes, frames: list[Frame]) -> bytes:
        """Read frame content from the chunk; what is left of it."""
        if self._pending_fs:  # the previous chunk ended with FS: is this CR its end marker?
            self._pending_fs = False
            if chunk[:1] == b"\r":
                return self._finish(frames, chunk[1:])
            self._keep(b"\x1c")
        end, restart = chunk.find(END), chunk.find(START)
        if restart >= 0 and (end < 0 or restart < end):  # a new frame began: the current one is broken
            self.broken_frames += 1
            self._in_frame = False
            return chunk[restart:]
        if end >= 0:
            self._keep(chunk[:end])
            return self._finish(frames, chunk[end + len(END) :])
        if chunk.endswith(b"\x1c"):
            self._keep(chunk[:-1])
            self._pending_fs = True
        else:
            self._keep(chunk)
        return b""

    def _finish(self, frames: list[Frame], rest: bytes) -> bytes:
        frames.append(Frame(bytes(self._buffer), self._size))
        self._in_frame = False
        self._buffer.clear()
        return rest

    def _keep(self, part: bytes) -> None:
        room = self.limit - len(self._buffer)
        if room > 0:
            self._buffer += part[:room]
        self._size += len(part)
