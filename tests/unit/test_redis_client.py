"""Redis URLs: plain, TLS and Sentinel."""

from __future__ import annotations

import pytest

from app.redis_client import SentinelTarget, parse_sentinel_url


def test_sentinel_url_with_several_hosts_password_and_db() -> None:
    assert parse_sentinel_url("redis+sentinel://:s%40cret@10.0.0.1:26379,10.0.0.2:26380/primary/3") == SentinelTarget(
        hosts=(("10.0.0.1", 26379), ("10.0.0.2", 26380)), service="primary", db=3, password="s@cret"
    )


def test_sentinel_url_defaults_port_and_db() -> None:
    target = parse_sentinel_url("redis+sentinel://sentinel-a/mymaster")
    assert (target.hosts, target.db, target.password) == ((("sentinel-a", 26379),), 0, None)


def test_sentinel_url_without_service_is_rejected() -> None:
    with pytest.raises(ValueError, match="service name"):
        parse_sentinel_url("redis+sentinel://host:26379")
