"""Shared plumbing for the benchmarks: targets, reset, submission, worker processes, waiting.

Targets come from flags or BENCH_DATABASE_URL / BENCH_REDIS_URL (deliberately not DATABASE_URL /
REDIS_URL: a benchmark truncates the ledger and flushes its Redis db, and must never pick up a
developer's own database by accident). `reset` refuses a database whose name lacks "bench" and
Redis db 0.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from sqlalchemy import text

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1/triage_bench"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/9"


@dataclass(frozen=True)
class Target:
    """Where a benchmark runs: its own PostgreSQL database and Redis db number."""

    database_url: str
    redis_url: str

    def env(self, *, log_level: str = "WARNING", **extra: str) -> dict[str, str]:
        """Environment for a Triage or RQ child process."""
        env = dict(os.environ)
        env.update(
            DATABASE_URL=self.database_url,
            REDIS_URL=self.redis_url,
            TRIAGE_LOG_LEVEL=log_level,
            TRIAGE_JOB_MODULES="bench.kinds",
            PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
            PYTHONUNBUFFERED="1",
        )
        env.update(extra)
        return env


def add_target_args(parser: argparse.ArgumentParser) -> None:
    """--database-url / --redis-url, defaulting to BENCH_* env or the bench defaults."""
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL))
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL))


def target_from(args: argparse.Namespace) -> Target:
    """The Target named by parsed arguments."""
    return Target(args.database_url, args.redis_url)


#: Connections of this benchmark process carry this name, so `reset` can tell others' apart.
CLIENT_NAME = f"triage-bench-{os.getpid()}"


def _named(url: str, key: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{key}={CLIENT_NAME}"


def runtime(target: Target, **env: str) -> Any:
    """A Triage Runtime for the benchmark process itself (submits jobs, reads the ledger)."""
    from app.config import Settings
    from app.runtime import Runtime

    named = {"DATABASE_URL": _named(target.database_url, "application_name"),
             "REDIS_URL": _named(target.redis_url, "client_name")}
    settings = Settings.from_env({**target.env(), **named, **env})
    return Runtime.build(settings)


def foreign_clients(rt: Any) -> list[str]:
    """Connections to our database or Redis db that are not this process's (others' runs, strays)."""
    db = rt.redis.connection_pool.connection_kwargs.get("db", 0)
    found = [f"redis {c.get('addr')} name={c.get('name')!r} cmd={c.get('cmd')}"
             for c in rt.redis.client_list() if int(c.get("db", -1)) == db and c.get("name") != CLIENT_NAME]
    with rt.engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT pid, application_name, state FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name <> :me"), {"me": CLIENT_NAME}).all()
    found += [f"postgres pid {r.pid} application_name={r.application_name!r} {r.state}" for r in rows]
    return found


def wait_exclusive(rt: Any, *, timeout: float = 300.0) -> None:
    """Wait until nobody else uses the benchmark's database and Redis db (a shared machine)."""
    deadline = time.monotonic() + timeout
    warned = False
    while others := foreign_clients(rt):
        if time.monotonic() > deadline:
            raise SystemExit("other clients keep using the benchmark targets:\n  " + "\n  ".join(others))
        if not warned:
            print(f"waiting for {len(others)} other client(s) of the benchmark targets to leave, e.g. {others[0]}",
                  file=sys.stderr)
            warned = True
        time.sleep(1)


def _check_safe(target: Target) -> None:
    db_name = urlparse(target.database_url).path.lstrip("/")
    if "bench" not in db_name:
        raise SystemExit(f"refusing to truncate database {db_name!r}: its name must contain 'bench'")
    redis_db = urlparse(target.redis_url).path.lstrip("/") or "0"
    if redis_db == "0":
        raise SystemExit("refusing to flush Redis db 0: give the benchmark its own db number")


def reset(rt: Any, target: Target) -> int:
    """Empty the ledger and this Redis db (once nobody else uses them); return a benchmark organisation's id."""
    _check_safe(target)
    wait_exclusive(rt)
    rt.redis.flushdb()
    with rt.engine.begin() as conn:
        conn.execute(text("TRUNCATE job_attempts, jobs RESTART IDENTITY CASCADE"))
        conn.execute(text("INSERT INTO organisations (name) VALUES ('bench') ON CONFLICT (name) DO NOTHING"))
        return int(conn.execute(text("SELECT id FROM organisations WHERE name = 'bench'")).scalar_one())


def submit_durable(rt: Any, func: Callable[..., Any], n: int, *, organisation_id: int, batch: int = 100,
                   args: Sequence[Any] = (), queue: str | None = None) -> float:
    """Submit n jobs through the ledger + outbox, `batch` per transaction; return seconds taken."""
    from app.services.jobs import submit

    started = time.perf_counter()
    done = 0
    while done < n:
        size = min(batch, n - done)
        with rt.sessions.begin() as session:
            for _ in range(size):
                submit(session, func, *args, organisation_id=organisation_id, queue=queue)
        done += size
    return time.perf_counter() - started


def count_status(rt: Any, status: str) -> int:
    """How many ledger jobs have this status."""
    with rt.engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM jobs WHERE status = :s"), {"s": status}).scalar_one())


def job_row(rt: Any, job_id: int) -> Any:
    """One ledger row (status, attempts, worker)."""
    with rt.engine.connect() as conn:
        return conn.execute(text("SELECT status, attempts, worker FROM jobs WHERE id = :id"), {"id": job_id}).one()


def ledger_span(rt: Any) -> float:
    """Seconds from the first attempt's start to the last attempt's end (excludes process start-up)."""
    with rt.engine.connect() as conn:
        span = conn.execute(
            text("SELECT extract(epoch FROM max(finished_at) - min(started_at)) FROM job_attempts")
        ).scalar_one()
    return float(span or 0.0)


def wait_until(predicate: Callable[[], bool], *, timeout: float, interval: float = 0.05) -> float:
    """Poll until predicate() is true; return the seconds waited (TimeoutError past timeout)."""
    started = time.perf_counter()
    while not predicate():
        if time.perf_counter() - started > timeout:
            raise TimeoutError(f"condition not met within {timeout}s")
        time.sleep(interval)
    return time.perf_counter() - started


def triage_worker(target: Target, queues: Iterable[str], *, burst: bool = False, log_level: str = "WARNING",
                  extra_env: dict[str, str] | None = None, stdout: Any = None) -> subprocess.Popen[bytes]:
    """Start one `triage worker --child` process (what the supervisor runs per slot)."""
    command = [sys.executable, "-m", "app.cli", "worker", "--child", *(["--burst"] if burst else []), *queues]
    return subprocess.Popen(command, cwd=ROOT, env=target.env(log_level=log_level, **(extra_env or {})),
                            stdout=stdout, stderr=subprocess.STDOUT if stdout is not None else None)


def triage_scheduler(target: Target, *, log_level: str = "WARNING", extra_env: dict[str, str] | None = None,
                     stdout: Any = None) -> subprocess.Popen[bytes]:
    """Start `triage scheduler` (cron + reconciler loop)."""
    command = [sys.executable, "-m", "app.cli", "scheduler"]
    return subprocess.Popen(command, cwd=ROOT, env=target.env(log_level=log_level, **(extra_env or {})),
                            stdout=stdout, stderr=subprocess.STDOUT if stdout is not None else None)


def rq_worker(target: Target, queue: str, *, worker_class: str | None = None, burst: bool = True,
              log_level: str = "WARNING") -> subprocess.Popen[bytes]:
    """Start one plain `rq worker` process (JSON serializer, like Triage's queues)."""
    command = [sys.executable, "-m", "rq.cli", "worker", "-u", target.redis_url, "-S", "json",
               "--logging_level", log_level, *(["--burst"] if burst else [])]
    if worker_class:
        command += ["-w", worker_class]
    return subprocess.Popen([*command, queue], cwd=ROOT, env=target.env(log_level=log_level))


def stop(processes: Iterable[subprocess.Popen[bytes]], *, timeout: float = 15.0) -> None:
    """SIGTERM each still-running process we started, then SIGKILL what has not exited."""
    processes = list(processes)
    for proc in processes:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in processes:
        try:
            proc.wait(max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_all(processes: Iterable[subprocess.Popen[bytes]], *, timeout: float) -> None:
    """Wait for processes to exit by themselves (burst workers); kill them past timeout."""
    processes = list(processes)
    deadline = time.monotonic() + timeout
    try:
        for proc in processes:
            proc.wait(max(deadline - time.monotonic(), 0.1))
    except subprocess.TimeoutExpired:
        stop(processes, timeout=2)
        raise


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """A plain-text table, right-aligned numbers."""
    def fmt(cell: Any) -> str:
        if isinstance(cell, float):
            return f"{cell:,.0f}" if abs(cell) >= 10 else f"{cell:.2f}"
        return str(cell)

    cells = [[str(h) for h in headers]] + [[fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def enqueue_raw(redis: Any, queue_name: str, n: int, *, chunk: int = 1000) -> tuple[float, list[str]]:
    """Enqueue n `bench.noop.noop` jobs on a plain RQ queue with enqueue_many; return (seconds, ids)."""
    from rq import Queue
    from rq.serializers import JSONSerializer

    from bench.noop import noop

    queue = Queue(queue_name, connection=redis, serializer=JSONSerializer)
    ids: list[str] = []
    started = time.perf_counter()
    for offset in range(0, n, chunk):
        data = [Queue.prepare_data(noop, result_ttl=600) for _ in range(min(chunk, n - offset))]
        with redis.pipeline() as pipeline:
            jobs = queue.enqueue_many(data, pipeline=pipeline)
            pipeline.execute()
        ids.extend(job.id for job in jobs)
    return time.perf_counter() - started, ids


def rq_span(redis: Any, ids: Sequence[str]) -> tuple[int, float]:
    """(finished jobs, seconds from the first start to the last end) read from RQ's job hashes."""
    from rq.utils import utcparse

    with redis.pipeline(transaction=False) as pipeline:
        for job_id in ids:
            pipeline.hmget(f"rq:job:{job_id}", "status", "started_at", "ended_at")
        rows = pipeline.execute()
    done = [r for r in rows if r[0] == b"finished"]
    if not done:
        return 0, 0.0
    first = min(utcparse(r[1].decode()) for r in done)
    last = max(utcparse(r[2].decode()) for r in done)
    return len(done), (last - first).total_seconds()


def load_note() -> str:
    """The 1-minute load average and core count, printed beside figures (other work skews them)."""
    return f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"


def percentile_ms(ordered: Sequence[float], p: float) -> float:
    """The p-th percentile (nearest rank) of sorted seconds, in milliseconds."""
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000
