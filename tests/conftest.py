"""Shared fixtures: a migrated test database, a test Redis db, worker processes, waiting helpers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psutil
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from app.config import Settings
from app.migrate import upgrade
from app.runtime import Runtime

ROOT = Path(__file__).resolve().parent.parent
TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/triage_test")
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
T = TypeVar("T")
#: Every table a test may fill, emptied around each test.
TABLES = ("privacy_requests", "immunization_exemptions", "immunizations", "immunization_requirements", "appointments", "reports", "report_schedules", "hl7_outbound", "fhir_resources", "hl7_messages", "alert_notifications", "alerts", "alert_channels", "webhook_attempts", "webhook_deliveries", "webhook_endpoints", "events", "safety_events", "record_conflicts", "administration_revisions", "administrations",
          "inventory_lots", "prescriptions", "allergies", "medications", "patients", "job_attempts", "jobs",
          "idempotency_keys", "api_clients", "organisations", "test_effects")
#: The audit log's tables, emptied too, with their append-only triggers bypassed (superuser only).
AUDIT_TABLES = ("audit_events", "audit_chain_heads", "audit_archives", "legal_holds")

#: Environment of every process a test starts (workers, scheduler, CLI).
WORKER_ENV = {
    "DATABASE_URL": TEST_DATABASE_URL,
    "REDIS_URL": TEST_REDIS_URL,
    "TRIAGE_JOB_MODULES": "tests.support.kinds",
    "TRIAGE_LEASE_SECONDS": "3",
    "TRIAGE_RECONCILE_INTERVAL": "1",
    "TRIAGE_RECONCILE_GRACE": "2",
    "TRIAGE_HARD_KILL_GRACE": "2",
    "TRIAGE_LOG_LEVEL": "INFO",
    "TRIAGE_SECRET_KEY": "test-only-secret-key-0123456789abcdef",
    # A key for tests only (it protects nothing real); receivers run on loopback.
    "TRIAGE_ENCRYPTION_KEYS": "dGVzdC1vbmx5LWVuY3J5cHRpb24ta2V5LTAxMjM0NTY=",
    "TRIAGE_EGRESS_ALLOW_LOOPBACK": "1",
}


def wait_for(condition: Callable[[], T], timeout: float = 30.0, what: str = "condition") -> T:
    """Poll until condition() is truthy; fail the test with `what` after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def _create_database(url: str) -> None:
    parsed = make_url(Settings.from_env({"DATABASE_URL": url, "REDIS_URL": "x"}).database_url)
    admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": parsed.database}).first()
        if not exists:
            conn.execute(text(f'CREATE DATABASE "{parsed.database}"'))
    admin.dispose()


@pytest.fixture(scope="session")
def settings() -> Settings:
    """Settings pointing at the test database and the test Redis db."""
    env = {**os.environ, **WORKER_ENV}
    return Settings.from_env(env)


@pytest.fixture(scope="session")
def runtime(settings: Settings) -> Iterator[Runtime]:
    """A migrated, empty test database and the runtime to reach it (and the test Redis db)."""
    _create_database(TEST_DATABASE_URL)
    engine = create_engine(settings.database_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    upgrade(settings.database_url)
    built = Runtime.build(settings).use()
    with built.engine.begin() as conn:
        conn.execute(
            text(
                "CREATE TABLE test_effects (id bigserial PRIMARY KEY, token text NOT NULL, event text NOT NULL,"
                " pid int NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())"
            )
        )
    yield built
    built.redis.flushdb()
    built.close()


@pytest.fixture()
def clean(runtime: Runtime) -> Iterator[Runtime]:
    """Empty tables and an empty Redis db before and after the test."""

    def wipe() -> None:
        with runtime.engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY"))
            conn.execute(text("SET LOCAL session_replication_role = replica"))  # audit triggers refuse TRUNCATE
            conn.execute(text(f"TRUNCATE {', '.join(AUDIT_TABLES)} RESTART IDENTITY"))
        runtime.redis.flushdb()

    wipe()
    yield runtime
    wipe()


@pytest.fixture()
def org_id(clean: Runtime) -> int:
    """A fresh organisation's id."""
    from app.services.organisations import ensure_organisation

    with clean.sessions.begin() as session:
        return ensure_organisation(session, "test-org").id


def orphans() -> list[psutil.Process]:
    """Processes of this test run (by their REDIS_URL) whose parent died and init adopted them."""
    found = []
    for proc in psutil.process_iter(["ppid", "cmdline"]):
        try:
            if proc.info["ppid"] == 1 and "app.cli" in (proc.info["cmdline"] or []) \
                    and proc.environ().get("REDIS_URL") == TEST_REDIS_URL:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def effects(runtime: Runtime, token: str | None = None, event: str = "run") -> list[Any]:
    """Rows of test_effects (optionally for one token), in the order they happened."""
    query = "SELECT token, event, pid FROM test_effects WHERE event = :e"
    params: dict[str, Any] = {"e": event}
    if token is not None:
        query += " AND token = :t"
        params["t"] = token
    with runtime.engine.connect() as conn:
        return list(conn.execute(text(query + " ORDER BY id"), params).all())


def ledger(runtime: Runtime, job_id: int) -> Any:
    """The ledger row of a job."""
    with runtime.engine.connect() as conn:
        return conn.execute(text("SELECT * FROM jobs WHERE id = :id"), {"id": job_id}).one()


def outcomes(runtime: Runtime, job_id: int) -> list[str]:
    """The outcome of every attempt of a job, in order."""
    with runtime.engine.connect() as conn:
        rows = conn.execute(text("SELECT outcome FROM job_attempts WHERE job_id = :id ORDER BY id"), {"id": job_id})
        return [r.outcome for r in rows]


class Processes:
    """Starts `triage` subprocesses for a test and always stops them afterwards."""

    def __init__(self, log_dir: Path) -> None:
        self._log_dir = log_dir
        self.started: list[subprocess.Popen[bytes]] = []
        self._strays: list[psutil.Process] = []

    def start(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Run `python -m app.cli ARGS` with the test environment."""
        log = open(self._log_dir / f"proc-{len(self.started)}.log", "wb")  # noqa: SIM115 - open for the process life
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", *args],
            cwd=ROOT,
            env={**os.environ, **WORKER_ENV, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.started.append(proc)
        return proc

    def run(self, *args: str, expect_code: int = 0, env: dict[str, str] | None = None) -> str:
        """Run a `triage` command to completion; return its output."""
        done = subprocess.run(
            [sys.executable, "-m", "app.cli", *args],
            cwd=ROOT,
            env={**os.environ, **WORKER_ENV, **(env or {})},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == expect_code, done.stdout + done.stderr
        return done.stdout + done.stderr

    def log(self, proc: subprocess.Popen[bytes]) -> bytes:
        """What a started process has printed so far."""
        return (self._log_dir / f"proc-{self.started.index(proc)}.log").read_bytes()

    def worker(self, *queues: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """One unsupervised worker process (signals reach it directly)."""
        return self.start("worker", "--child", *queues, env=env)

    def kill(self, proc: subprocess.Popen[bytes], sig: signal.Signals = signal.SIGKILL) -> None:
        """Signal one process, remembering its children (RQ's forked scheduler) for clean-up."""
        self._strays.extend(psutil.Process(proc.pid).children(recursive=True))
        proc.send_signal(sig)

    def stop_all(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                self._strays.extend(psutil.Process(proc.pid).children(recursive=True))
                proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        for stray in self._strays:
            try:
                stray.kill()
            except psutil.NoSuchProcess:
                pass


@pytest.fixture()
def procs(clean: Runtime, tmp_path: Path) -> Iterator[Processes]:
    """Subprocess starter; every process is killed when the test ends."""
    processes = Processes(tmp_path)
    yield processes
    processes.stop_all()
