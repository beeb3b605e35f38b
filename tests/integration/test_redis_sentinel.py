"""A Sentinel URL reaches the monitored primary (throwaway redis-server and sentinel)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from app.redis_client import connect
from tests.conftest import wait_for
from tests.support.servers import answers, free_port, start_redis, stop

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")


@pytest.fixture()
def sentinel(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """A throwaway primary and a sentinel monitoring it as `triage-primary`."""
    primary, sentinel_port = free_port(), free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {sentinel_port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor triage-primary 127.0.0.1 {primary} 1\n"
    )
    procs = [start_redis(primary), start_redis(sentinel_port, "--sentinel", config=conf)]
    try:
        wait_for(lambda: answers(primary) and answers(sentinel_port), timeout=10, what="throwaway redis")
        yield primary, sentinel_port
    finally:
        for proc in procs:
            stop(proc)


def test_sentinel_url_connects_to_the_primary(sentinel: tuple[int, int]) -> None:
    primary, sentinel_port = sentinel
    client = connect(f"redis+sentinel://127.0.0.1:{sentinel_port}/triage-primary/2")
    client.set("triage:sentinel-check", "yes")
    assert Redis(port=primary, db=2).get("triage:sentinel-check") == b"yes"
