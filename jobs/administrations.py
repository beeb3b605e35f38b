"""The administration job: decide a received dose record on the critical queue."""

from __future__ import annotations

from app.models import Administration
from app.runtime import current
from app.services.administrations import RECORD_KIND, decide
from jobs import auditing
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
        if not decision.already_decided:
            administration = session.get_one(Administration, administration_id)
            auditing.record(session, "administration.decide", organisation_id=administration.organisation_id,
                            resource_type="Administration", resource_id=administration_id,
                            patient_id=administration.patient_id, job_id=administration.job_id)
    record_decision(decision)
