"""Job kinds for the tests; workers import them through TRIAGE_JOB_MODULES."""

from __future__ import annotations

import os
import time

from sqlalchemy import text

from app.runtime import current
from jobs.backoff import Exponential
from jobs.errors import PermanentError, Postpone, TransientError
from jobs.spec import job_kind

FAST = Exponential(base=0.5, cap=1)


def record(token: str, event: str = "run") -> int:
    """Note an effect in test_effects; return how many times this token/event happened before."""
    with current().engine.begin() as conn:
        before = conn.execute(
            text("SELECT count(*) FROM test_effects WHERE token = :t AND event = :e"), {"t": token, "e": event}
        ).scalar_one()
        conn.execute(
            text("INSERT INTO test_effects (token, event, pid) VALUES (:t, :e, :p)"),
            {"t": token, "e": event, "p": os.getpid()},
        )
    return int(before)


@job_kind("tests.effect", queue="critical")
def effect(token: str) -> None:
    """Record one effect."""
    record(token)


@job_kind("tests.report_effect", queue="reports")
def report_effect(token: str) -> None:
    """Record one effect from the low-priority reports queue."""
    record(token)


@job_kind("tests.flaky", queue="critical", max_attempts=3, backoff=FAST)
def flaky(token: str, failures: int, permanent: bool = False) -> None:
    """Fail the first `failures` runs (transiently, or permanently), then succeed."""
    if record(token) < failures:
        raise (PermanentError if permanent else TransientError)("simulated failure")


@job_kind("tests.crash_prone", queue="critical", max_attempts=2, backoff=FAST)
def crash_prone(token: str) -> None:
    """Raise a plain exception (unclassified, so transient) every time."""
    record(token)
    raise RuntimeError("unclassified failure")


@job_kind("tests.slow", queue="reports", timeout=120, max_attempts=2, backoff=FAST)
def slow(token: str, seconds: float) -> None:
    """Sleep `seconds` on the first run only; later runs finish at once."""
    first = record(token, "start") == 0
    if first:
        time.sleep(seconds)
    record(token, "end")


@job_kind("tests.stubborn", queue="reports", timeout=2, max_attempts=1)
def stubborn(token: str) -> None:
    """Ignore the timeout exception and keep running: only the watchdog can stop it."""
    record(token, "start")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            time.sleep(0.1)
        except BaseException:  # noqa: BLE001, S110 - the point of this job is to misbehave
            pass


@job_kind("tests.breaker", queue="critical", max_attempts=1)
def breaker(token: str, postpones: int) -> None:
    """Postpone (as an open circuit breaker would) the first `postpones` runs, then succeed."""
    if record(token) < postpones:
        raise Postpone(1, "breaker open")
