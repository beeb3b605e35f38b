"""Sending one HL7 message over MLLP and reading its ACK: framed, timed out, checked.

Unlike python-hl7's client (a single `send` and `recv(4096)` with no timeout), this sends all
bytes, reads until the end marker within the timeout, and checks MSA-2 against the sent MSH-10.
"""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass

from app.mllp_frames import FrameReader, frame

_ACK_LIMIT = 1024 * 1024


class MllpSendError(ConnectionError):
    """No ACK: refused, reset, timed out, or the peer closed the connection."""


@dataclass(frozen=True)
class Destination:
    """A named MLLP peer."""

    name: str
    host: str
    port: int
    tls: bool = False

    @classmethod
    def parse(cls, name: str, address: str) -> Destination:
        """`host:port` or `tls://host:port`."""
        tls = address.startswith("tls://")
        host, _, port = address.removeprefix("tls://").rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"HL7 destination {name!r}: {address!r} is not host:port")
        return cls(name, host, int(port), tls)


@dataclass(frozen=True)
class Acknowledgement:
    """The peer's answer: MSA-1, MSA-2 and the whole ACK."""

    code: str
    control_id: str
    text: str


def _msa(ack: str) -> tuple[str, str]:
    for segment in ack.replace("\n", "\r").split("\r"):
        if segment.startswith("MSA") and len(segment) > 4:
            fields = segment.split(segment[3])
            return (fields[1] if len(fields) > 1 else ""), (fields[2] if len(fields) > 2 else "")
    return "", ""


def send(destination: Destination, message: bytes, *, timeout: float) -> Acknowledgement:
    """Deliver one message and wait (at most `timeout` seconds in all) for its ACK."""
    deadline = time.monotonic() + timeout

    def remaining() -> float:
        return max(0.01, deadline - time.monotonic())

    try:
        raw = socket.create_connection((destination.host, destination.port), timeout=remaining())
        raw.settimeout(remaining())  # the TLS handshake and the send share the same deadline
        sock = ssl.create_default_context().wrap_socket(raw, server_hostname=destination.host) \
            if destination.tls else raw
        with sock:
            sock.sendall(frame(message))
            reader = FrameReader(_ACK_LIMIT)
            while True:
                sock.settimeout(remaining())
                chunk = sock.recv(65536)
                if not chunk:
                    raise MllpSendError("the destination closed the connection before answering")
                frames = reader.feed(chunk)
                if frames:
                    text = frames[0].data.decode("utf-8", "replace")
                    code, control_id = _msa(text)
                    return Acknowledgement(code, control_id, text)
    except TimeoutError:
        raise MllpSendError(f"no ACK within {timeout:.0f} s") from None
    except (OSError, ssl.SSLError) as exc:
        raise MllpSendError(f"{type(exc).__name__}: {exc.strerror or 'connection failed'}") from None
