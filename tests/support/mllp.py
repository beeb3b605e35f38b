"""A small MLLP client for tests: frames out, ACKs back (read to the end marker, with a timeout)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

from app.mllp_frames import FrameReader, frame


class MllpClient:
    """One connection to a listener."""

    def __init__(self, port: int, timeout: float = 15.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self._frames = FrameReader(limit=10_000_000)
        self._acks: list[bytes] = []

    def send(self, message: bytes) -> None:
        """Send one framed message."""
        self.sock.sendall(frame(message))

    def send_raw(self, data: bytes) -> None:
        """Send bytes as they are (partial frames, several frames, stray bytes)."""
        self.sock.sendall(data)

    def ack(self) -> str:
        """The next ACK (segments joined by CR)."""
        while not self._acks:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the listener closed the connection")
            self._acks.extend(f.data for f in self._frames.feed(chunk))
        return self._acks.pop(0).decode()

    def closed_by_peer(self, timeout: float) -> bool:
        """Whether the listener closes the connection within `timeout` seconds."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()


@contextmanager
def connected(port: int) -> Iterator[MllpClient]:
    """A client for the block."""
    client = MllpClient(port)
    try:
        yield client
    finally:
        client.close()


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    """Until something accepts connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(f"nothing listens on port {port} after {timeout}s") from None
            time.sleep(0.05)


def msa(ack: str) -> list[str]:
    """The MSA segment's fields."""
    return next(s for s in ack.split("\r") if s.startswith("MSA")).split("|")
