"""Job metrics recorded where jobs are submitted and run; the web's /metrics exposes them.

Counters and the duration histogram live in this process. With PROMETHEUS_MULTIPROC_DIR set
before the process starts (prometheus_client reads it at import), every process on the host
writes them to its own file in that directory and the web's /metrics adds them up (see
app/metrics.py); without it they stay in this process's default registry (development, tests).

Attempts are counted, not jobs: a job that fails twice and then succeeds adds 3 to
`triage_jobs_started_total`, 1 to `triage_jobs_succeeded_total` and 2 to
`triage_jobs_failed_total{outcome="retrying"}`. Outcomes are the ledger's attempt outcomes:
succeeded, retrying, postponed (breaker open; no attempt spent), dead (dead-lettered) and
interrupted (drained during a stop; put back, no attempt spent). Every started attempt that
reaches a ledger outcome adds exactly one duration observation.
"""

from __future__ import annotations

import os
import time

from prometheus_client import Counter, Histogram, multiprocess

#: The environment variable prometheus_client reads (at import) to enable multiprocess mode.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: 1 ms .. 5 min: fast ledger jobs through report rendering and the longest queue timeout (300 s).
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

SUBMITTED = Counter(
    "triage_jobs_submitted_total", "Jobs committed to the ledger (requeued dead letters excluded).", ["queue", "kind"]
)
STARTED = Counter("triage_jobs_started_total", "Attempts a worker claimed and started.", ["queue", "kind"])
SUCCEEDED = Counter("triage_jobs_succeeded_total", "Attempts that succeeded.", ["queue", "kind"])
FAILED = Counter(
    "triage_jobs_failed_total",
    "Attempts that failed, by what happens next: retrying, postponed, dead or interrupted.",
    ["queue", "kind", "outcome"],
)
DURATION = Histogram(
    "triage_job_duration_seconds",
    "Wall time of one attempt, from claim to ledger outcome.",
    ["queue", "kind", "outcome"],
    buckets=DURATION_BUCKETS,
)
#: Every metric above (tests clear their children when switching registry mode).
JOB_METRICS = (SUBMITTED, STARTED, SUCCEEDED, FAILED, DURATION)


def record_submitted(queue: str, kind: str, n: int = 1) -> None:
    """Count `n` jobs of a kind committed to the ledger for a queue."""
    SUBMITTED.labels(queue, kind).inc(n)


def record_started(queue: str, kind: str) -> float:
    """Count an attempt as started; return its start time for `record_finished`."""
    STARTED.labels(queue, kind).inc()
    return time.perf_counter()


def record_finished(queue: str, kind: str, outcome: str, seconds: float) -> None:
    """Count an attempt's ledger outcome and observe its duration in seconds."""
    if outcome == "succeeded":
        SUCCEEDED.labels(queue, kind).inc()
    else:
        FAILED.labels(queue, kind, outcome).inc()
    DURATION.labels(queue, kind, outcome).observe(seconds)


def elapsed(started: float) -> float:
    """Seconds since a `record_started` return value."""
    return time.perf_counter() - started


def mark_process_dead(pid: int) -> None:
    """After a child process exited: drop its live-gauge files (multiprocess mode only).

    Counter and histogram files stay: their totals must survive the process that wrote them.
    """
    directory = os.environ.get(MULTIPROC_ENV)
    if directory:
        multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
