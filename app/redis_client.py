"""Redis clients from a URL: redis://, rediss:// (TLS), or redis+sentinel:// for failover."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from redis import Redis
from redis.sentinel import Sentinel

SENTINEL_SCHEME = "redis+sentinel"


@dataclass(frozen=True)
class SentinelTarget:
    """Where the sentinels are and which monitored primary (service) to use."""

    hosts: tuple[tuple[str, int], ...]
    service: str
    db: int
    password: str | None


def parse_sentinel_url(url: str) -> SentinelTarget:
    """Parse `redis+sentinel://[:password@]host:port[,host:port…]/service[/db]`."""
    parts = urlsplit(url)
    if parts.scheme != SENTINEL_SCHEME:
        raise ValueError(f"not a {SENTINEL_SCHEME}:// URL")
    credentials, _, hostlist = parts.netloc.rpartition("@")
    password = unquote(credentials.partition(":")[2]) or None if credentials else None
    hosts = []
    for item in hostlist.split(","):
        host, _, port = item.rpartition(":")
        hosts.append((host or item, int(port) if host else 26379))
    path = [p for p in parts.path.split("/") if p]
    if not path:
        raise ValueError("a sentinel URL needs the service name: redis+sentinel://host:26379/mymaster")
    return SentinelTarget(tuple(hosts), path[0], int(path[1]) if len(path) > 1 else 0, password)


def connect(url: str) -> Redis:
    """A client for the URL; with Sentinel, one that follows the current primary after failover."""
    if not url.startswith(SENTINEL_SCHEME + "://"):
        return Redis.from_url(url, health_check_interval=30)
    target = parse_sentinel_url(url)
    sentinel = Sentinel(list(target.hosts), socket_timeout=5, password=target.password)  # type: ignore[no-untyped-call]
    primary: Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
        target.service, db=target.db, password=target.password, health_check_interval=30
    )
    return primary
