"""Webhook delivery metrics, written by the worker that makes each attempt (multiprocess-safe).

Breaker states are not here: /metrics reads them from Redis at scrape time (app/metrics.py).
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

ATTEMPTS = Counter(
    "webhook_delivery_attempts_total",
    "Webhook delivery attempts by outcome: delivered, retry, failed or disabled (410).",
    ["outcome"],
)
POSTPONED = Counter(
    "webhook_deliveries_postponed_total",
    "Deliveries held back without spending an attempt, by reason (breaker_open, rate_limited).",
    ["reason"],
)
LATENCY = Histogram(
    "webhook_delivery_latency_seconds",
    "From sending a delivery to its HTTP response (attempts that got one).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15),
)


def observe(outcome: str, latency_ms: float | None) -> None:
    """Count one attempt and, when a response came back, its latency."""
    ATTEMPTS.labels(outcome).inc()
    if latency_ms is not None:
        LATENCY.observe(latency_ms / 1000)
