"""Job kinds used only by the benchmarks; load them with TRIAGE_JOB_MODULES=bench.kinds."""

from __future__ import annotations

import time

from jobs.spec import job_kind


@job_kind("bench.sleep", queue="reports", timeout=120, max_attempts=3)
def sleep(seconds: float) -> None:
    """Sleep for `seconds` (a job that is still running when a drain deadline passes)."""
    time.sleep(seconds)


@job_kind("bench.noop", queue="maintenance", timeout=10, max_attempts=1)
def noop() -> None:
    """Do nothing (like maintenance.ping, kept here so benchmarks don't depend on probes)."""


@job_kind("bench.busy", queue="maintenance", timeout=60, max_attempts=1)
def busy(seconds: float) -> None:
    """Occupy a worker for `seconds` (low-priority flood work; submit with queue= to move it)."""
    time.sleep(seconds)
