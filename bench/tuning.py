"""Worker tunings as monkeypatches, so `bench/profile_worker.py` can measure them before they land.

Each patch is a function named in PATCHES; `apply("a,b")` applies several; nothing here is
imported by the application. heartbeats, idle-in-cleanup, pause-cache, rss-every, ledger-engine
and claim-async are in the code since commit 0f3475b (docs/benchmarks.md has their before/after):
`apply` skips them, with a note on stderr, when the code already has them. The others are
still experiments.

- quiet-rq:     rq's per-job INFO lines off (RQ logs ~3 lines per job at INFO)
- ledger-engine: the ledger gets its own engine created AUTOCOMMIT, without pool_pre_ping (its
                 calls already retry OperationalError, and SQLAlchemy drops a dead connection)
- async-commit: the ledger's connections use synchronous_commit=off (durability trade-off!)
- heartbeats:   worker heartbeats at most every HEARTBEAT_EVERY s and in one pipeline; no
                 repeated `state` writes; no job heartbeat right after a job without callbacks
- claim-async:  only the claim commits with synchronous_commit=off (the finish flushes it)
- ledger-conn:  the ledger holds one AUTOCOMMIT connection for the worker's life
- rss-every:    the recycle check reads /proc/self/statm at most once a second
- idle-in-cleanup: the worker's `idle` state goes in the job's final pipeline (with heartbeats)
- pause-cache:  the paused-queue set is re-read at most once a second, not after every dequeue
- hiredis:      redis-py with the hiredis reply parser (bench: BENCH_HIREDIS_PATH on PYTHONPATH)
- no-scheduler: `work(with_scheduler=False)` (run `rq`'s scheduler elsewhere)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

HEARTBEAT_EVERY = 5.0


def _ledger_engine(options: str | None = None) -> None:
    from sqlalchemy import create_engine

    from workers import ledger

    connect_args = {"options": options} if options else {}
    if hasattr(ledger.Ledger, "dedicated"):  # since 0f3475b: the worker builds Ledger.dedicated(url)
        def dedicated(cls: Any, url: Any) -> Any:
            engine = create_engine(url, isolation_level="AUTOCOMMIT", pool_size=1, max_overflow=0,
                                   pool_recycle=1800, hide_parameters=True, connect_args=connect_args)
            return cls(engine, autocommit=True)

        ledger.Ledger.dedicated = classmethod(dedicated)  # type: ignore[assignment]
        return

    def __init__(self: Any, engine: Any) -> None:
        self._engine = create_engine(engine.url, isolation_level="AUTOCOMMIT", pool_size=1, max_overflow=1,
                                     pool_recycle=1800, connect_args=connect_args)

    ledger.Ledger.__init__ = __init__  # type: ignore[method-assign,assignment]


def ledger_engine() -> None:
    """Dedicated AUTOCOMMIT engine for the ledger, no pre-ping."""
    _ledger_engine()


def async_commit() -> None:
    """Dedicated ledger engine whose commits don't wait for the WAL flush."""
    _ledger_engine("-c synchronous_commit=off")


def claim_async() -> None:
    """The claim commits without waiting for the WAL flush; the finish (synchronous) flushes it.

    Safe with the reconciler: a claim lost in a PostgreSQL crash leaves the job `queued` in the
    ledger while Redis says finished/started, and the loss sweep enqueues it again (at least once).
    """
    from sqlalchemy import text

    from workers import ledger

    ledger._CLAIM = text("SET LOCAL synchronous_commit TO off; " + ledger._CLAIM.text)


def ledger_conn() -> None:
    """The ledger keeps one AUTOCOMMIT connection for the worker's life (no pool checkout per call)."""
    from sqlalchemy import create_engine
    from sqlalchemy.exc import OperationalError

    from workers import ledger

    class _Conn:
        def __init__(self, engine: Any) -> None:
            self._engine = create_engine(engine.url, isolation_level="AUTOCOMMIT", pool_size=1, max_overflow=0,
                                         pool_recycle=1800)
            self._conn: Any = None

        def connect(self) -> Any:
            return self

        def __enter__(self) -> Any:
            if self._conn is None or self._conn.invalidated or self._conn.closed:
                self._conn = self._engine.connect()
            return self

        def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
            if isinstance(exc, OperationalError) and self._conn is not None:
                self._conn.close()  # invalidated by SQLAlchemy on a disconnect; the retry reconnects
                self._conn = None

        def execute(self, *args: Any, **kwargs: Any) -> Any:
            return self._conn.execute(*args, **kwargs)

    def __init__(self: Any, engine: Any, *, autocommit: bool = False) -> None:
        self._engine = _Conn(engine)

    ledger.Ledger.__init__ = __init__  # type: ignore[method-assign]


def rss_every() -> None:
    """Read /proc/self/statm for the recycle check at most once a second, not after every job."""
    import time

    from workers import worker

    original = worker._rss_mb
    cache = {"at": 0.0, "mb": 0.0}

    def _rss_mb() -> float:
        now = time.monotonic()
        if now - cache["at"] >= 1.0:
            cache["at"], cache["mb"] = now, original()
        return cache["mb"]

    worker._rss_mb = _rss_mb


def hiredis() -> None:
    """redis-py parses replies with hiredis (C); the package must be importable (PYTHONPATH, or a dependency)."""
    from redis.utils import HIREDIS_AVAILABLE

    if not HIREDIS_AVAILABLE:
        raise SystemExit("hiredis is not importable: pip install hiredis (or set BENCH_HIREDIS_PATH)")


def heartbeats() -> None:
    """Fewer RQ bookkeeping round trips per job (see module docstring)."""
    from rq.utils import now
    from rq.worker import BaseWorker

    from workers.worker import TriageWorker

    def heartbeat(self: Any, timeout: int | None = None, pipeline: Any = None) -> None:
        if pipeline is not None or timeout is not None:
            BaseWorker.heartbeat(self, timeout, pipeline=pipeline)
            return
        if self.last_heartbeat is not None and (now() - self.last_heartbeat).total_seconds() < HEARTBEAT_EVERY:
            return
        with self.connection.pipeline() as pipe:
            BaseWorker.heartbeat(self, None, pipeline=pipe)
            pipe.execute()

    def set_state(self: Any, state: str, pipeline: Any = None) -> None:
        if pipeline is None and state == getattr(self, "_state", None):
            return
        BaseWorker.set_state(self, state, pipeline)

    def handle_execution_ended(self: Any, job: Any, queue: Any, heartbeat_ttl: int) -> None:
        job.ended_at = now()
        if job.success_callback or job.failure_callback:
            job.heartbeat(now(), heartbeat_ttl)

    TriageWorker.heartbeat = heartbeat  # type: ignore[method-assign]
    TriageWorker.set_state = set_state  # type: ignore[method-assign]
    TriageWorker.handle_execution_ended = handle_execution_ended  # type: ignore[method-assign]


def idle_in_cleanup() -> None:
    """Write the worker's `idle` state in the job's final pipeline instead of its own round trip.

    Needs `heartbeats` (which skips the then-redundant `set_state(idle)` after the job).
    """
    from rq.worker import BaseWorker, WorkerStatus

    from workers.worker import TriageWorker

    def cleanup_execution(self: Any, job: Any, pipeline: Any, execution: Any = None) -> None:
        BaseWorker.cleanup_execution(self, job, pipeline=pipeline, execution=execution)
        BaseWorker.set_state(self, WorkerStatus.IDLE, pipeline=pipeline)

    TriageWorker.cleanup_execution = cleanup_execution  # type: ignore[method-assign]


def pause_cache() -> None:
    """Re-read the paused queues at most once a second also right after a dequeue (not per job).

    A job dequeued after a long blocking wait still gets a fresh read: the cache is then older
    than a second. Pauses keep taking effect within a second (plus the job in hand).
    """
    from workers.worker import TriageWorker

    original = TriageWorker._paused

    def _paused(self: Any, *, fresh: bool = False) -> set[str]:
        return original(self)

    TriageWorker._paused = _paused  # type: ignore[method-assign]


def quiet_rq() -> None:
    """RQ's own per-job INFO lines off; Triage's warnings and errors stay."""
    from workers import worker

    original = worker.TriageWorker.work

    def work(self: Any, *args: Any, **kwargs: Any) -> bool:
        kwargs["logging_level"] = "WARNING"
        return bool(original(self, *args, **kwargs))

    worker.TriageWorker.work = work  # type: ignore[method-assign]


def no_scheduler() -> None:
    """Workers don't run RQ's scheduler (another process must, for delayed retries)."""
    from workers import worker

    original = worker.TriageWorker.work

    def work(self: Any, *args: Any, **kwargs: Any) -> bool:
        kwargs["with_scheduler"] = False
        return bool(original(self, *args, **kwargs))

    worker.TriageWorker.work = work  # type: ignore[method-assign]


PATCHES: dict[str, Callable[[], None]] = {
    "quiet-rq": quiet_rq,
    "ledger-engine": ledger_engine,
    "async-commit": async_commit,
    "heartbeats": heartbeats,
    "claim-async": claim_async,
    "ledger-conn": ledger_conn,
    "rss-every": rss_every,
    "hiredis": hiredis,
    "idle-in-cleanup": idle_in_cleanup,
    "pause-cache": pause_cache,
    "no-scheduler": no_scheduler,
}


def worker_command(patches: str, queues: list[str], *, burst: bool = True) -> list[str]:
    """The command for one `triage worker --child` process with these patches applied first."""
    return [sys.executable, "-m", "bench.tuning", "--patches", patches, *(["--burst"] if burst else []), *queues]


def landed(name: str) -> bool:
    """Whether the code already does what patch `name` does (it landed in 0f3475b)."""
    import inspect

    from workers import ledger, worker

    checks: dict[str, Callable[[], bool]] = {
        "heartbeats": lambda: hasattr(worker, "HEARTBEAT_EVERY"),
        "idle-in-cleanup": lambda: "cleanup_execution" in vars(worker.TriageWorker),
        "pause-cache": lambda: "fresh=True" not in inspect.getsource(worker.TriageWorker),
        "rss-every": lambda: hasattr(worker.TriageWorker, "_over_memory"),
        "ledger-engine": lambda: hasattr(ledger.Ledger, "dedicated"),
        "claim-async": lambda: "synchronous_commit" in ledger._CLAIM.text,
    }
    return name in checks and checks[name]()


def apply(names: str) -> list[str]:
    """Apply a comma-separated list of patches (the order given); return the names applied."""
    applied = []
    for name in (n.strip() for n in names.split(",") if n.strip()):
        if name not in PATCHES:
            raise SystemExit(f"unknown patch {name!r}; known: {', '.join(PATCHES)}")
        if landed(name):
            print(f"bench.tuning: {name} is in the code already; not patched", file=sys.stderr)
            continue
        PATCHES[name]()
        applied.append(name)
    return applied


def main() -> None:
    """`python -m bench.tuning --patches a,b [--burst] QUEUE...`: a patched `triage worker --child`."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--patches", default="")
    parser.add_argument("--burst", action="store_true")
    parser.add_argument("--cprofile", default=None, help="dump cProfile stats of the worker to this file")
    parser.add_argument("queues", nargs="+")
    args = parser.parse_args()
    import app.runtime  # noqa: F401  (import order: app before jobs, see docs/benchmarks.md)

    apply(args.patches)
    from app.cli import main as triage

    argv = ["worker", "--child", *(["--burst"] if args.burst else []), *args.queues]
    if not args.cprofile:
        triage(argv)
        return
    import cProfile

    profiler = cProfile.Profile()
    try:
        profiler.runcall(triage, argv)
    except SystemExit:
        pass
    finally:
        profiler.dump_stats(args.cprofile)


if __name__ == "__main__":
    main()
