"""Database engine and sessions, built once per process (never shared across fork)."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Engine, create_engine, event, exc, text
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry

#: A connection idle longer than this is pinged before use (a PostgreSQL restart or an idle-timeout
#: firewall may have closed it); a busy pool's connections are used without the extra round trip.
IDLE_PING_SECONDS = 1.0
#: Transaction-level advisory locks on several keys, taken one after another in array order.
_ADVISORY_LOCKS = text("SELECT pg_advisory_xact_lock(hashtextextended(key, CAST(:seed AS bigint))) "
                       "FROM unnest(CAST(:keys AS text[])) WITH ORDINALITY AS k(key, n) ORDER BY n")


class Base(DeclarativeBase):
    """Declarative base of every Triage table."""


def make_engine(database_url: str, *, pool_size: int = 5, autocommit: bool = False) -> Engine:
    """An engine that works behind a transaction-mode pooler (no session state kept).

    `autocommit`: connections created in AUTOCOMMIT, for single-statement reads (no BEGIN and
    ROLLBACK round trips, and no switching of the isolation level at every checkout and return).
    """
    engine = create_engine(
        database_url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_recycle=1800,
        hide_parameters=True,  # bound values may hold PHI: keep them out of errors and logs
        **({"isolation_level": "AUTOCOMMIT"} if autocommit else {}),
    )
    _ping_when_stale(engine)
    return engine


#: When this process last saw a connection drop (any engine): older idle connections are suspect.
_last_disconnect = 0.0


def _ping_when_stale(engine: Engine) -> None:
    """Like `pool_pre_ping`, but only for connections idle > IDLE_PING_SECONDS or older than a drop.

    A ping on every checkout costs a round trip per request (~9% of an API worker's time at
    200 requests/s, docs/benchmarks.md). A failed ping or any disconnect error marks the moment,
    so every engine of the process checks its older connections before trusting them again.
    """

    @event.listens_for(engine, "checkin")
    def _checked_in(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: ConnectionPoolEntry, proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or (time.monotonic() - idle_since < IDLE_PING_SECONDS and idle_since > _last_disconnect):
            return  # fresh from connect, or recently used with no drop seen since
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as error:
            _disconnected()
            raise exc.DisconnectionError("stale connection") from error

    @event.listens_for(engine, "handle_error")
    def _failed(context: ExceptionContext) -> None:
        if context.is_disconnect:
            _disconnected()


def _disconnected() -> None:
    global _last_disconnect
    _last_disconnect = time.monotonic()


def make_sessionmaker(engine: Engine) -> sessionmaker:  # type: ignore[type-arg]
    """Sessions that keep loaded attributes after commit, for reading results past a boundary."""
    return sessionmaker(engine, expire_on_commit=False)


def advisory_locks(session: Session, keys: list[str], *, seed: int) -> None:
    """Hold advisory locks on these keys until the transaction ends, taken in one statement and in
    sorted order: everyone takes shared keys in the same order, so two holders queue, never deadlock.
    `seed` keeps one module's key space apart from another's."""
    if keys:
        session.execute(_ADVISORY_LOCKS, {"keys": sorted(set(keys)), "seed": seed})
