"""Data-subject requests (GDPR Art. 15/17/20): requested (a ledger job on `reports`), fulfilled by that job.

Access and portability store the patient's FHIR Bundle (`patient_bundle`) on the request, audited
as `patient.export`. Erasure first checks exemptions: clinical records (the patient row, allergies,
prescriptions, administrations and their revisions and conflicts, safety events, immunizations
and exemptions, clinical FHIR resources from HL7) and audit records are under legal retention and
kept, with the reason in the outcome. The rest is removed or pseudonymised: raw HL7 copies (the
row, ids and ACK stay for the message ledger), the FHIR Patient's demographics (MR identifiers
kept, so kept records stay attributable), non-clinical FHIR resources (REMOVABLE_FHIR_TYPES),
appointments, reminder event payloads, cached report PDFs and earlier export bundles. Then
`privacy.erasure_completed` (ids and counts only) and a `patient.erase` audit record, in the same
transaction.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from dateutil.relativedelta import relativedelta  # type: ignore[import-untyped, unused-ignore]  # typed from 4.0
from sqlalchemy import Text, cast, delete, func, literal, or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql import Select

from app.fhir import er7
from app.fhir.errors import MappingError
from app.models import (
    Administration,
    AdministrationRevision,
    Allergy,
    Appointment,
    AuditEvent,
    Event,
    FhirResource,
    Hl7Message,
    Immunization,
    ImmunizationExemption,
    Job,
    OutboundMessage,
    Patient,
    Prescription,
    PrivacyRequest,
    RecordConflict,
    Report,
    SafetyEvent,
)
from app.services import audit, events, jobs, patient_bundle

log = logging.getLogger(__name__)
FULFIL_KIND = "privacy.fulfil"
CLINICAL = "clinical record under legal retention"
AUDIT = "audit record under legal retention (HIPAA 45 CFR 164.316)"
#: FHIR resources from HL7 that are not clinical records: deleted. Every other type about the patient is kept.
REMOVABLE_FHIR_TYPES = ("Appointment", "Coverage", "RelatedPerson")
#: What a pseudonymised FHIR Patient keeps besides its MR identifiers (no name, telecom, address, contact …).
_PATIENT_KEEPS = ("resourceType", "id", "meta", "gender", "birthDate", "managingOrganization", "active")
_ERASED_TAG = {"system": "urn:triage:codesystem:privacy", "code": "erased", "display": "Erased (GDPR Art. 17)"}


class PatientNotFoundError(LookupError):
    """No such patient in this organisation."""


class PrivacyRequestNotFoundError(LookupError):
    """No such privacy request in this organisation."""


def request(session: Session, *, organisation_id: int, patient_id: int, type: str, api_client_id: int | None,
            request_id: str | None = None) -> PrivacyRequest:
    """Record the request, due one month from now, and queue its fulfilment (after commit)."""
    patient = session.get(Patient, patient_id)
    if patient is None or patient.organisation_id != organisation_id:
        raise PatientNotFoundError(f"patient {patient_id} not found")
    now = datetime.now(UTC)
    row = PrivacyRequest(organisation_id=organisation_id, patient_id=patient_id, type=type, status="queued",
                         created_at=now, due_at=now + relativedelta(months=1), api_client_id=api_client_id)
    session.add(row)
    session.flush()
    row.job_id = jobs.submit(session, FULFIL_KIND, row.id, organisation_id=organisation_id,
                             request_id=request_id).id
    return row


def get(session: Session, privacy_request_id: int, *, organisation_id: int) -> PrivacyRequest:
    """One privacy request of the organisation."""
    row = session.get(PrivacyRequest, privacy_request_id)
    if row is None or row.organisation_id != organisation_id:
        raise PrivacyRequestNotFoundError(f"privacy request {privacy_request_id} not found")
    return row


def page(session: Session, *, organisation_id: int, status: str | None, type: str | None, before_id: int | None,
         limit: int) -> list[PrivacyRequest]:
    """The organisation's privacy requests, newest first."""
    query = select(PrivacyRequest).where(PrivacyRequest.organisation_id == organisation_id)
    if status:
        query = query.where(PrivacyRequest.status == status)
    if type:
        query = query.where(PrivacyRequest.type == type)
    if before_id is not None:
        query = query.where(PrivacyRequest.id < before_id)
    return list(session.scalars(query.order_by(PrivacyRequest.id.desc()).limit(limit)))


def fail_abandoned(session: Session) -> int:
    """Requests still queued or running whose job ended (dead after a crash, cancelled, purged): failed."""
    ended = select(Job.id).where(Job.status.in_(("dead", "cancelled")))
    result = session.execute(update(PrivacyRequest).where(
        PrivacyRequest.status.in_(("queued", "running")), PrivacyRequest.job_id.in_(ended))
        .values(status="failed", error="its job ended without fulfilling the request", finished_at=func.now()))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def prune_bundles(session: Session, before: datetime) -> int:
    """Drop exports completed before `before` (a download then answers 410): a copy of a patient's
    whole record is kept only as long as a generated report."""
    result = session.execute(update(PrivacyRequest).where(
        PrivacyRequest.bundle.is_not(None), PrivacyRequest.finished_at < before).values(bundle=None))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def fail(row: PrivacyRequest, reason: str) -> None:
    """The request cannot be fulfilled (reason names ids and error types, never PHI)."""
    row.status, row.error, row.finished_at = "failed", reason[:500], func.now()


def fulfil(session: Session, row: PrivacyRequest, *, job_id: int | None) -> None:
    """Export or erase, finish the request and audit it, all in the caller's transaction."""
    patient = session.get(Patient, row.patient_id)
    if patient is None or patient.organisation_id != row.organisation_id:
        raise PatientNotFoundError(f"patient {row.patient_id} no longer exists")
    job = session.get(Job, job_id) if job_id is not None else None
    if row.type == "erasure":
        row.outcome = erase(session, row, patient)
        events.emit(session, organisation_id=row.organisation_id, type="privacy.erasure_completed",
                    subject=str(row.id), payload=_counts(row.id, row.outcome))
    else:
        export = patient_bundle.build(session, patient, datetime.now(UTC))
        row.bundle, row.outcome = export.bundle, {"summary": export.summary()}
    row.status, row.error, row.finished_at = "completed", None, func.now()
    audit.record(session, audit.AuditEntry(
        action="patient.erase" if row.type == "erasure" else "patient.export", outcome="success",
        actor_type="system", actor_id=f"job:{job_id}", organisation_id=row.organisation_id,
        resource_type="PrivacyRequest", resource_id=str(row.id), patient_id=str(row.patient_id),
        request_id=job.request_id if job else None, job_id=job_id))
    log.info("Privacy request %s: %s completed", row.id, row.type)


def _counts(privacy_request_id: int, outcome: dict[str, Any]) -> dict[str, Any]:
    """The event payload: the request id and counts per kind of record, no PHI."""
    return {"privacy_request_id": privacy_request_id,
            "kept": {k["records"]: k["count"] for k in outcome["kept"]},
            "removed": {r["records"]: r["count"] for r in outcome["removed"]}}


def erase(session: Session, row: PrivacyRequest, patient: Patient) -> dict[str, Any]:
    """Remove or pseudonymise what is not under retention; the outcome: what was kept and removed, and why."""
    fhir_patients = patient_bundle.fhir_patients(session, patient)
    fhir_ids = [p.id for p in fhir_patients]
    kept = _kept(session, patient, fhir_ids)
    marker = f"[erased: privacy request {row.id} (GDPR Art. 17)]"
    removed = [_removed("hl7_messages.raw", _redact_messages(session, patient.organisation_id, fhir_ids, marker),
                        "raw HL7 copy replaced by a redaction marker; the row, ids and ACK stay for the message ledger")]
    removed.append(_removed("hl7_messages.raw (unprocessed)", _redact_unlinked(session, patient, marker),
                            "raw copy of failed, rejected or unprocessed messages whose PID-3 names the patient's "
                            "MRN replaced by the redaction marker"))
    removed.append(_removed("hl7_outbound.message", _redact_outbound(session, patient, marker),
                            "outbound message whose PID-3 names the patient's MRN replaced by the redaction marker; "
                            "the row and its delivery status stay"))
    removed.append(_removed("fhir_resources.Patient", _pseudonymise(session, fhir_patients, row.id),
                            "pseudonymised: name, telecom, address, contacts and non-MR identifiers removed; MR "
                            "identifier kept so the retained clinical records stay attributable"))
    refs = _delete_fhir(session, patient.organisation_id, fhir_ids)
    removed.append(_removed(f"fhir_resources.{'/'.join(REMOVABLE_FHIR_TYPES)}", len(refs),
                            "deleted: not clinical records"))
    appointments = list(session.scalars(delete(Appointment).where(
        Appointment.organisation_id == patient.organisation_id,
        or_(Appointment.patient_id == patient.id, Appointment.source_ref.in_(refs))).returning(Appointment.id)))
    removed.append(_removed("appointments", len(appointments), "deleted: scheduling, not a clinical record"))
    removed.append(_removed("events.reminder", _pseudonymise_reminders(session, patient, appointments, row.id),
                            "reminder payload replaced (patient and appointment ids removed); the event row "
                            "stays because webhook deliveries reference it"))
    removed.append(_removed("reports.pdf", _erase_reports(session, patient, marker),
                            "cached PDF deleted (report marked failed); regenerate from the kept records"))
    removed.append(_removed("privacy_requests.bundle", _erase_exports(session, row),
                            "earlier export bundles of this patient deleted"))
    return {"kept": kept, "removed": removed, "fhir_patients": len(fhir_ids),
            "completed_at": datetime.now(UTC).isoformat()}


def _removed(records: str, count: int, action: str) -> dict[str, Any]:
    return {"records": records, "count": count, "action": action}


def _count(session: Session, query: Select[Any]) -> int:
    return int(session.scalar(select(func.count()).select_from(query.subquery())) or 0)


def _kept(session: Session, patient: Patient, fhir_ids: list[str]) -> list[dict[str, Any]]:
    """The exemption check: what stays under legal retention, with how many and why."""
    pid = patient.id
    administrations = select(Administration.id).where(Administration.patient_id == pid)
    clinical: dict[str, Select[Any]] = {
        "patients": select(Patient.id).where(Patient.id == pid),
        "allergies": select(Allergy.id).where(Allergy.patient_id == pid),
        "prescriptions": select(Prescription.id).where(Prescription.patient_id == pid),
        "administrations": administrations,
        "administration_revisions": select(AdministrationRevision.id).where(
            AdministrationRevision.administration_id.in_(administrations)),
        "record_conflicts": select(RecordConflict.id).where(RecordConflict.administration_id.in_(administrations)),
        "safety_events": select(SafetyEvent.id).where(SafetyEvent.patient_id == pid),
        "immunizations": select(Immunization.id).where(Immunization.patient_id == pid),
        "immunization_exemptions": select(ImmunizationExemption.id).where(ImmunizationExemption.patient_id == pid),
        "fhir_resources.clinical": select(FhirResource.id).where(
            FhirResource.organisation_id == patient.organisation_id, FhirResource.patient_id.in_(fhir_ids),
            FhirResource.resource_type.notin_(("Patient", *REMOVABLE_FHIR_TYPES))),
    }
    kept = [{"records": name, "count": _count(session, query), "reason": CLINICAL} for name, query in clinical.items()]
    audited = select(AuditEvent.id).where(AuditEvent.organisation_id == patient.organisation_id,
                                          AuditEvent.patient_id.in_([str(pid), *fhir_ids]))
    kept.append({"records": "audit_events", "count": _count(session, audited), "reason": AUDIT})
    return kept


def _redact_messages(session: Session, organisation_id: int, fhir_ids: list[str], marker: str) -> int:
    """Replace the raw copy of every message that produced or updated a resource about those Patients."""
    if not fhir_ids:
        return 0
    produced = select(FhirResource.message_id).where(
        FhirResource.organisation_id == organisation_id, FhirResource.message_id.isnot(None),
        or_(FhirResource.patient_id.in_(fhir_ids),
            (FhirResource.resource_type == "Patient") & FhirResource.id.in_(fhir_ids)))
    listed = or_(*[Hl7Message.resources.contains([f"Patient/{fid}"]) for fid in fhir_ids])
    result = session.execute(update(Hl7Message).where(Hl7Message.organisation_id == organisation_id,
                                                      or_(listed, Hl7Message.id.in_(produced)))
                             .values(raw=marker.encode()))
    return int(result.rowcount)  # type: ignore[attr-defined]


def _names_mrn(text: str, mrn: str) -> bool:
    """Whether an ER7 message's PID-3 lists this MRN (any repetition, first component)."""
    try:
        pid = er7.parse(text).first("PID")
    except MappingError:  # not even an MSH: nothing names the patient
        return False
    return pid is not None and any(rep.text(1) == mrn for rep in pid.reps(3))


def _redact_unlinked(session: Session, patient: Patient, marker: str) -> int:
    """Messages that produced no resources (failed, rejected, unsupported, waiting) but name the MRN."""
    if not patient.mrn:
        return 0
    candidates = session.scalars(select(Hl7Message).where(
        Hl7Message.organisation_id == patient.organisation_id, Hl7Message.status != "processed",
        func.strpos(func.encode(Hl7Message.raw, "escape"), patient.mrn) > 0))
    count = 0
    for message in candidates:
        if _names_mrn(bytes(message.raw).decode("utf-8", "replace"), patient.mrn):
            message.raw, count = marker.encode(), count + 1
    return count


def _redact_outbound(session: Session, patient: Patient, marker: str) -> int:
    """Outbound messages (sent or waiting) whose PID-3 names the MRN."""
    if not patient.mrn:
        return 0
    count = 0
    for message in session.scalars(select(OutboundMessage).where(
            OutboundMessage.organisation_id == patient.organisation_id, OutboundMessage.message.contains(patient.mrn))):
        if _names_mrn(message.message, patient.mrn):
            message.message, count = marker, count + 1
    return count


def _pseudonymise(session: Session, fhir_patients: list[FhirResource], privacy_request_id: int) -> int:
    """Strip the FHIR Patients to MR identifiers and non-identifying fields, tagged as erased."""
    for row in fhir_patients:
        kept = {k: v for k, v in row.resource.items() if k in _PATIENT_KEEPS}
        kept["identifier"] = [i for i in row.resource.get("identifier", [])
                              if any(c.get("code") == "MR" for c in (i.get("type") or {}).get("coding", []))]
        meta = dict(kept.get("meta") or {})
        meta["versionId"] = str(row.version_id + 1)
        meta["tag"] = [*meta.get("tag", []), {**_ERASED_TAG, "version": str(privacy_request_id)}]
        kept["meta"] = meta
        row.resource, row.version_id, row.updated_at = kept, row.version_id + 1, func.now()
    return len(fhir_patients)


def _delete_fhir(session: Session, organisation_id: int, fhir_ids: list[str]) -> list[str]:
    """Delete the non-clinical resources about those Patients; their `Type/id` references."""
    if not fhir_ids:
        return []
    rows = session.execute(delete(FhirResource).where(
        FhirResource.organisation_id == organisation_id, FhirResource.patient_id.in_(fhir_ids),
        FhirResource.resource_type.in_(REMOVABLE_FHIR_TYPES)).returning(FhirResource.resource_type, FhirResource.id))
    return [f"{kind}/{rid}" for kind, rid in rows]


def _pseudonymise_reminders(session: Session, patient: Patient, appointment_ids: list[int],
                            privacy_request_id: int) -> int:
    """Reminder events about the patient (or a deleted appointment) keep only their type and a marker."""
    about = or_(Event.payload["patient_id"].astext == str(patient.id),
                Event.payload["appointment_id"].astext.in_([str(i) for i in appointment_ids]))
    result = session.execute(update(Event).where(Event.organisation_id == patient.organisation_id,
                                                 Event.type.like("reminder.%"), about)
                             .values(payload=func.jsonb_build_object("type", Event.type, "erased", literal(True),
                                                                     "privacy_request_id", privacy_request_id)))
    return int(result.rowcount)  # type: ignore[attr-defined]


def _erase_reports(session: Session, patient: Patient, marker: str) -> int:
    """Cached reports about the patient (alone, in a cohort, or an incident of theirs) lose their PDF."""
    incidents = select(cast(SafetyEvent.id, Text)).where(SafetyEvent.patient_id == patient.id)
    about = or_(Report.parameters["patient_id"].astext == str(patient.id),
                Report.parameters["patient_ids"].contains([patient.id]),
                Report.parameters["safety_event_id"].astext.in_(incidents))
    result = session.execute(update(Report).where(
        Report.organisation_id == patient.organisation_id, about,
        or_(Report.pdf.isnot(None), Report.status.in_(("queued", "running"))))
        .values(pdf=None, size=None, status="failed", error=marker, finished_at=func.now()))
    return int(result.rowcount)  # type: ignore[attr-defined]


def _erase_exports(session: Session, row: PrivacyRequest) -> int:
    """Bundles of earlier access or portability requests for the same patient are copies: deleted."""
    result = session.execute(update(PrivacyRequest).where(
        PrivacyRequest.organisation_id == row.organisation_id, PrivacyRequest.patient_id == row.patient_id,
        PrivacyRequest.id != row.id, PrivacyRequest.bundle.isnot(None)).values(bundle=None))
    return int(result.rowcount)  # type: ignore[attr-defined]
