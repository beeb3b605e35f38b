"""A real MLLP server for outbound tests: records what arrives, answers from a script."""

from __future__ import annotations

import socketserver
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

from app.mllp_frames import FrameReader, frame


def ack_for(message: bytes, code: str) -> bytes:
    """An ACK with MSA-1 = code and MSA-2 = the message's MSH-10."""
    fields = message.split(b"\r", 1)[0].split(b"|")
    control = fields[9] if len(fields) > 9 else b""
    return b"MSH|^~\\&|LAB|LAB|TRIAGE|TRIAGE|20260101||ACK|A1|P|2.5\rMSA|" + code.encode() + b"|" + control


class MllpServer:
    """Answers each message with the next scripted code (AA by default; None: no answer at all)."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.script: deque[str | None] = deque()
        self.open_connections = 0
        self.most_connections = 0
        self._lock = threading.Lock()
        server = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                with server._lock:
                    server.open_connections += 1
                    server.most_connections = max(server.most_connections, server.open_connections)
                try:
                    server._serve(self.request)
                finally:
                    with server._lock:
                        server.open_connections -= 1

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])

    def _serve(self, sock: object) -> None:
        reader = FrameReader(10_000_000)
        while True:
            chunk = sock.recv(65536)  # type: ignore[attr-defined]
            if not chunk:
                return
            for received in reader.feed(chunk):
                with self._lock:
                    self.received.append(received.data)
                    code = self.script.popleft() if self.script else "AA"
                if code is None:
                    return  # silence: the sender times out
                sock.sendall(frame(ack_for(received.data, code)))  # type: ignore[attr-defined]

    def control_ids(self) -> list[str]:
        """MSH-10 of every message received, in arrival order."""
        with self._lock:
            return [m.split(b"\r", 1)[0].split(b"|")[9].decode() for m in self.received]


@contextmanager
def mllp_server() -> Iterator[MllpServer]:
    """A server on a free port for the block."""
    server = MllpServer()
    thread = threading.Thread(target=server._server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server._server.shutdown()
        server._server.server_close()
