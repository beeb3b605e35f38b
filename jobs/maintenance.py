"""Maintenance job kinds: the pipeline's own probes and housekeeping."""

from __future__ import annotations

from jobs.spec import job_kind


@job_kind("maintenance.ping", queue="maintenance", timeout=10, max_attempts=1)
def ping() -> None:
    """Do nothing: proves a job can travel ledger → Redis → worker → ledger (probes, benchmarks)."""
