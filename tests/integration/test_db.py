"""Pooled connections the server dropped are replaced before use, without a ping per checkout."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, text

from app import db
from app.config import Settings


@pytest.fixture()
def engines(settings: Settings) -> Iterator[tuple[Engine, Engine]]:
    first, second = db.make_engine(settings.database_url, pool_size=1), db.make_engine(settings.database_url,
                                                                                          pool_size=1)
    yield first, second
    first.dispose()
    second.dispose()


def _pooled_backend(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _terminate(engine: Engine, pid: int) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": pid})
        conn.commit()


def _count_pings(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    pings: list[int] = []
    ping = engine.dialect.do_ping

    def counted(dbapi_connection: Any) -> bool:
        pings.append(1)
        return ping(dbapi_connection)

    monkeypatch.setattr(engine.dialect, "do_ping", counted)
    return pings


def test_only_a_connection_idle_for_a_while_is_pinged(engines: tuple[Engine, Engine],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    engine, _ = engines
    pings = _count_pings(engine, monkeypatch)
    _pooled_backend(engine)
    _pooled_backend(engine)
    assert pings == []  # fresh from connect, then used a moment ago
    monkeypatch.setattr(db, "IDLE_PING_SECONDS", 0.0)
    _pooled_backend(engine)
    assert pings == [1]


def test_an_idle_connection_killed_by_the_server_is_replaced(engines: tuple[Engine, Engine],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    engine, other = engines
    dropped = _pooled_backend(engine)
    _terminate(other, dropped)
    monkeypatch.setattr(db, "IDLE_PING_SECONDS", 0.0)  # as if it had been idle for a while
    assert _pooled_backend(engine) != dropped


def test_a_drop_seen_by_one_engine_makes_the_others_check_their_connections(
    engines: tuple[Engine, Engine], settings: Settings,
) -> None:
    engine, other = engines
    watcher = db.make_engine(settings.database_url, pool_size=1)
    try:
        dropped_here, dropped_there = _pooled_backend(engine), _pooled_backend(watcher)
        _terminate(other, dropped_here)
        _terminate(other, dropped_there)
        with pytest.raises(Exception, match="terminat|closed"), engine.connect() as conn:
            conn.execute(text("SELECT 1"))  # recently used, not pinged: fails, and marks the drop
        assert _pooled_backend(watcher) != dropped_there  # pinged because of that drop, replaced
        assert _pooled_backend(engine) != dropped_here  # SQLAlchemy invalidated the pool that failed
    finally:
        watcher.dispose()
