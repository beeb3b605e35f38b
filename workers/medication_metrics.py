"""Medication administration metrics (names as in the reference documents), multiprocess-safe.

Like the job metrics in workers/metrics.py they are written by whichever process decides an
administration (a worker) or refuses a record (the API), and /metrics adds them up.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from app.services.administrations import Decision

SUCCESS = Counter("medication_admin_success_total", "Administrations recorded on the MAR.")
FAILURE = Counter(
    "medication_admin_failure_total",
    "Administrations not recorded, by reason: a safety block, a rejection or a conflicting resend.",
    ["error_type"],
)
DUPLICATE_PREVENTED = Counter("medication_duplicate_prevented_total", "Second doses blocked within the window.")
ALLERGY_PREVENTED = Counter(
    "medication_allergy_conflict_prevented_total", "Doses blocked for an allergy, by severity.", ["severity"]
)
LATENCY = Histogram(
    "medication_admin_latency_seconds",
    "From the request that delivered a record to its decision (recorded, blocked or rejected).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 3, 5, 10, 30, 60),
)


def record_decision(decision: Decision) -> None:
    """Count a fresh decision (a repeat run of a decided record counts nothing)."""
    if decision.already_decided:
        return
    LATENCY.observe(decision.latency_seconds)
    if decision.status == "recorded":
        SUCCESS.inc()
        return
    FAILURE.labels(decision.reason or "unknown").inc()
    if decision.reason == "duplicate_prevented":
        DUPLICATE_PREVENTED.inc()
    elif decision.reason == "allergy_blocked":
        ALLERGY_PREVENTED.labels(decision.severity or "unknown").inc()


def record_conflict() -> None:
    """Count a record id that arrived again with other content (refused, flagged)."""
    FAILURE.labels("record_conflict").inc()
