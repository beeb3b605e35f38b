"""A trivial job function for the raw-RQ baselines: imports nothing from Triage."""

from __future__ import annotations


def noop() -> None:
    """Do nothing (the raw-RQ twin of `jobs.maintenance.ping`)."""
