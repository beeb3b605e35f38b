"""Audit records written by jobs that change or disclose patient data: the job is the actor.

Each record goes into the job's own transaction, beside the change it describes, so a rolled back
attempt leaves no record and a committed change never lacks one.
"""

from __future__ import annotations

from rq import get_current_job
from sqlalchemy.orm import Session

from app.services import audit


def entry(action: str, *, organisation_id: int | None, resource_type: str, resource_id: object,
          patient_id: object = None, job_id: int | None = None, outcome: str = "success") -> audit.AuditEntry:
    """The audit record of this job's action (actor `job:<ledger id>`)."""
    this = get_current_job()
    running = int(this.id) if this is not None and this.id.isdigit() else job_id
    return audit.AuditEntry(
        action=action, outcome=outcome, actor_type="system", actor_id=f"job:{running}" if running else "system",
        organisation_id=organisation_id, resource_type=resource_type, resource_id=str(resource_id),
        patient_id=str(patient_id) if patient_id is not None else None, job_id=running)


def record(session: Session, action: str, *, organisation_id: int | None, resource_type: str, resource_id: object,
           patient_id: object = None, job_id: int | None = None, outcome: str = "success") -> None:
    """One audit record of this job's action (actor `job:<ledger id>`), in `session`'s transaction."""
    audit.record(session, entry(action, organisation_id=organisation_id, resource_type=resource_type,
                                resource_id=resource_id, patient_id=patient_id, job_id=job_id, outcome=outcome))
