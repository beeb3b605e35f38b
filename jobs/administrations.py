"""The administration job: decide a received dose record on the critical queue."""

from __future__ import annotations

from app.runtime import current
from app.services.administrations import RECORD_KIND, decide
from jobs.spec import job_kind
from workers.medication_metrics import record_decision


@job_kind(RECORD_KIND, queue="critical")
def record_administration(administration_id: int) -> None:
    """Run the safety rules and record, block or reject the dose, in one transaction."""
    runtime = current()
    settings = runtime.settings
    with runtime.sessions.begin() as session:
        decision = decide(session, administration_id, tolerance=settings.dose_tolerance,
                          window_minutes=settings.duplicate_window_minutes)
    record_decision(decision)
