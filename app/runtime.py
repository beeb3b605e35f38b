"""Per-process resources: settings, database engine, sessions and the Redis client."""

from __future__ import annotations

from dataclasses import dataclass

from redis import Redis
from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker

from app.config import Settings
from app.db import make_engine, make_sessionmaker
from app.outbox import install_outbox
from app.redis_client import connect
from jobs.spec import load_job_modules


@dataclass(frozen=True)
class Runtime:
    """Everything a process talks to; build one per process, after any fork."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker  # type: ignore[type-arg]
    redis: Redis
    reads: Engine  # its own AUTOCOMMIT pool: one round trip per read (no BEGIN), e.g. authentication

    @classmethod
    def build(cls, settings: Settings, *, pool_size: int = 5) -> Runtime:
        """Connect (lazily) to PostgreSQL and Redis and register the job kinds."""
        load_job_modules(settings.job_modules)
        engine = make_engine(settings.database_url, pool_size=pool_size)
        redis = connect(settings.redis_url)
        sessions = make_sessionmaker(engine)
        install_outbox(sessions, redis, engine, failure_ttl=settings.failure_ttl)
        reads = make_engine(settings.database_url, pool_size=pool_size, autocommit=True)
        return cls(settings=settings, engine=engine, sessions=sessions, redis=redis, reads=reads)

    def use(self) -> Runtime:
        """Make this the process's runtime, which job functions reach through `current()`."""
        global _CURRENT
        _CURRENT = self
        return self

    def close(self) -> None:
        """Release connections (before exit or fork)."""
        self.engine.dispose()
        self.reads.dispose()
        self.redis.close()


_CURRENT: Runtime | None = None


def current() -> Runtime:
    """The runtime of this worker process (set at worker start); job functions use it."""
    if _CURRENT is None:
        raise RuntimeError("no runtime in this process: build one and call .use() at process start")
    return _CURRENT
