"""Privacy job kind: fulfil a data-subject request (export the patient's FHIR Bundle, or erase).

On the `reports` queue: an export is a user-requested document like a PDF report, with the same
size and time profile and retry policy, and it has a legal due date, so it must not wait behind
housekeeping on `maintenance` (served last). Idempotent: a completed or failed request is left as
it is; the whole fulfilment is one transaction, so a retry after a crash starts from scratch.
"""

from __future__ import annotations

import logging

from app.models import PrivacyRequest
from app.runtime import current
from app.services import privacy
from jobs.attempts import attempt_number
from jobs.errors import PermanentError
from jobs.spec import job_kind

log = logging.getLogger(__name__)
_FINAL = ("completed", "failed")


@job_kind(privacy.FULFIL_KIND, queue="reports")
def fulfil(privacy_request_id: int) -> None:
    """Run the request (skipped once completed or failed); the last failed attempt marks it failed."""
    runtime = current()
    with runtime.sessions.begin() as session:
        row = session.get(PrivacyRequest, privacy_request_id, with_for_update=True)
        if row is None or row.status in _FINAL:
            return
        row.status = "running"
        job_id = row.job_id
        _, last = attempt_number(session, job_id, 0)
    try:
        _fulfil(privacy_request_id, job_id)
    except privacy.PatientNotFoundError as exc:
        _fail(privacy_request_id, f"{type(exc).__name__}: patient no longer exists")
        raise PermanentError(f"privacy request {privacy_request_id}: its patient no longer exists") from exc
    except Exception as exc:  # a bug or an outage: retried; the last attempt leaves the request failed
        if last:
            _fail(privacy_request_id, f"fulfilment failed: {type(exc).__name__}")
        raise


def _fulfil(privacy_request_id: int, job_id: int | None) -> None:
    """Fulfil under the row lock, so two runs of the same job never both erase or export."""
    with current().sessions.begin() as session:
        row = session.get_one(PrivacyRequest, privacy_request_id, with_for_update=True)
        if row.status in _FINAL:
            return
        privacy.fulfil(session, row, job_id=job_id)


def _fail(privacy_request_id: int, reason: str) -> None:
    with current().sessions.begin() as session:
        row = session.get_one(PrivacyRequest, privacy_request_id, with_for_update=True)
        if row.status not in _FINAL:
            privacy.fail(row, reason)
    log.warning("Privacy request %s: failed (%s)", privacy_request_id, reason)
