"""Database engine and sessions, built once per process (never shared across fork)."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import DeclarativeBase, sessionmaker


class Base(DeclarativeBase):
    """Declarative base of every Triage table."""


def make_engine(database_url: str, *, pool_size: int = 5, autocommit: bool = False) -> Engine:
    """An engine that works behind a transaction-mode pooler (no session state kept).

    `autocommit`: connections created in AUTOCOMMIT, for single-statement reads (no BEGIN and
    ROLLBACK round trips, and no switching of the isolation level at every checkout and return).
    """
    return create_engine(
        database_url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_recycle=1800,
        hide_parameters=True,  # bound values may hold PHI: keep them out of errors and logs
        **({"isolation_level": "AUTOCOMMIT"} if autocommit else {}),
    )


def make_sessionmaker(engine: Engine) -> sessionmaker:  # type: ignore[type-arg]
    """Sessions that keep loaded attributes after commit, for reading results past a boundary."""
    return sessionmaker(engine, expire_on_commit=False)
