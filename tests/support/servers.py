"""Throwaway servers a test may stop and start: never the machine's shared ones."""

from __future__ import annotations

import os
import shutil
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


class Postgres:
    """A throwaway PostgreSQL cluster (initdb + pg_ctl) on 127.0.0.1:port, run as the postgres user."""

    def __init__(self, directory: Path, port: int) -> None:
        self.directory = directory
        self.port = port
        self.url = f"postgresql://postgres@127.0.0.1:{port}/postgres"

    def _as_postgres(self, *command: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, *command], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def init(self) -> Postgres:
        """Create the cluster (trust auth; nothing shared with the machine's server)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.directory.parent, "postgres", "postgres")
            shutil.chown(self.directory, "postgres", "postgres")
        self._as_postgres("initdb", "-D", str(self.directory), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        return self

    def start(self) -> None:
        """Start and wait until it accepts connections."""
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_postgres("pg_ctl", "-D", str(self.directory), "-o", options, "-w", "-l",
                          str(self.directory / "server.log"), "start")

    def stop(self) -> None:
        """Stop at once (fast shutdown); safe to call when already stopped."""
        try:
            self._as_postgres("pg_ctl", "-D", str(self.directory), "-m", "fast", "-w", "stop")
        except subprocess.CalledProcessError:
            pass


def postgres_available() -> bool:
    """Whether initdb/pg_ctl exist (and, as root, a postgres user to run them)."""
    tools = shutil.which("initdb") and shutil.which("pg_ctl")
    if os.geteuid() != 0:
        return bool(tools)
    try:
        import pwd

        pwd.getpwnam("postgres")
    except KeyError:
        return False
    return bool(tools and shutil.which("runuser"))
