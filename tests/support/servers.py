"""Throwaway servers a test may stop and start: never the machine's shared ones."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def answers(port: int) -> bool:
    """Whether a Redis server answers PING on this port."""
    try:
        return bool(Redis(port=port, socket_timeout=0.5).ping())
    except RedisConnectionError:
        return False


def start_redis(port: int, *extra: str, config: Path | None = None) -> subprocess.Popen[bytes]:
    """A redis-server (or sentinel, with a config) on 127.0.0.1:port that keeps nothing on disk."""
    args = [str(config), *extra] if config else ["--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                                 "--appendonly", "no", *extra]
    return subprocess.Popen(["redis-server", *args], stdout=subprocess.DEVNULL)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a throwaway server and wait for it."""
    if proc.poll() is None:
        proc.terminate()
    proc.wait(timeout=10)
