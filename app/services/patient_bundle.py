"""Everything Triage holds about one clinical patient, as a FHIR R4 Bundle (type `collection`).

Clinical rows become FHIR resources with ids of the form `<kind>-<row id>` (patient-12,
administration-7 …); the resources stored from HL7 for the FHIR Patient(s) matched to the patient
by MRN (the rule `hl7_administrations.clinical_patient` applies to incoming messages) are included
as stored. A Composition lists every entry per resource type with counts: the export's summary.
Entries get deterministic `urn:uuid:` fullUrls, so two HL7 and clinical resources never collide.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import (
    Administration,
    AdministrationRevision,
    Allergy,
    Appointment,
    FhirResource,
    Immunization,
    ImmunizationExemption,
    ImmunizationRequirement,
    Medication,
    Patient,
    Prescription,
    SafetyEvent,
)
from app.services.fhir_store import IDENTIFIERS
from app.services.hl7_administrations import clinical_patient

Json = dict[str, Any]
_NAMESPACE = uuid.UUID("6b1f2c8e-4d3a-4e7b-9c1d-2f0a8e5b7c31")
_V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
_ABSENT = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"
_EXTENSION = "urn:triage:fhir:extension:"
_ADMINISTRATION_STATUS = {"received": "in-progress", "recorded": "completed", "blocked": "not-done",
                          "rejected": "unknown"}  # rejected: not validated, so whether it was given is unknown
_ALLERGY_CRITICALITY = {"mild": "low", "moderate": "low", "severe": "high", "life-threatening": "high"}
_REACTION_SEVERITY = {"mild": "mild", "moderate": "moderate", "severe": "severe", "life-threatening": "severe"}
_ISSUE_SEVERITY = {"CRITICAL": "high", "HIGH": "high", "MEDIUM": "moderate"}


@dataclass(frozen=True)
class PatientExport:
    """The Bundle and its summary: entries per resource type, and when it was made."""

    bundle: Json
    counts: dict[str, int]
    generated_at: datetime

    def summary(self) -> Json:
        """The summary as JSON (stored on the privacy request)."""
        return {"generated_at": self.generated_at.isoformat(), "entries": sum(self.counts.values()),
                "counts": dict(sorted(self.counts.items()))}


def fhir_patients(session: Session, patient: Patient) -> list[FhirResource]:
    """Stored FHIR Patients (from HL7) whose MR identifier is this patient's MRN, and match only them."""
    if not patient.mrn:
        return []
    candidates = session.scalars(
        select(FhirResource).where(FhirResource.organisation_id == patient.organisation_id,
                                   FhirResource.resource_type == "Patient",
                                   IDENTIFIERS.contains([{"value": patient.mrn}]))
        .order_by(FhirResource.id))
    return [row for row in candidates
            if (match := clinical_patient(session, patient.organisation_id, row.resource)) is not None
            and match.id == patient.id]


def hl7_resources(session: Session, organisation_id: int, fhir_patient_ids: list[str]) -> list[FhirResource]:
    """Every stored resource that concerns those FHIR Patients (the Patients not included)."""
    if not fhir_patient_ids:
        return []
    return list(session.scalars(
        select(FhirResource).where(FhirResource.organisation_id == organisation_id,
                                   FhirResource.patient_id.in_(fhir_patient_ids),
                                   FhirResource.resource_type != "Patient")
        .order_by(FhirResource.resource_type, FhirResource.id)))


def build(session: Session, patient: Patient, now: datetime) -> PatientExport:
    """The patient's Bundle: clinical records, HL7-derived resources and a summary Composition."""
    resources = _clinical(session, patient)
    matched = fhir_patients(session, patient)
    hl7 = [*matched, *hl7_resources(session, patient.organisation_id, [p.id for p in matched])]
    entries = [_entry(patient.organisation_id, "triage", r) for r in resources]
    entries += [_entry(patient.organisation_id, "hl7", row.resource) for row in hl7]
    counts = Counter(e["resource"]["resourceType"] for e in entries)
    composition = _composition(patient, entries, counts, now)
    bundle = {"resourceType": "Bundle", "id": f"patient-{patient.id}-export", "type": "collection",
              "timestamp": now.isoformat(), "entry": [_entry(patient.organisation_id, "triage", composition),
                                                      *entries]}
    return PatientExport(bundle, dict(counts), now)


def _clinical(session: Session, patient: Patient) -> list[Json]:
    """The patient's rows in the clinical tables, as FHIR resources."""
    pid, ref = patient.id, {"reference": f"Patient/patient-{patient.id}"}
    medications = {m.id: m for m in session.scalars(select(Medication).join(
        Prescription, Prescription.medication_id == Medication.id).where(Prescription.patient_id == pid))}
    found: list[Json] = [_patient(patient)]
    found += [_allergy(a, ref) for a in session.scalars(select(Allergy).where(Allergy.patient_id == pid)
                                                        .order_by(Allergy.id))]
    prescriptions = list(session.scalars(select(Prescription).where(Prescription.patient_id == pid)
                                         .order_by(Prescription.id)))
    found += [_prescription(p, medications[p.medication_id], ref) for p in prescriptions]
    by_prescription = {p.id: medications[p.medication_id] for p in prescriptions}
    administrations = list(session.scalars(select(Administration).where(Administration.patient_id == pid)
                                           .order_by(Administration.id)))
    found += [_administration(a, by_prescription[a.prescription_id], ref) for a in administrations]
    found += [_revision(r) for r in session.scalars(select(AdministrationRevision).where(
        AdministrationRevision.administration_id.in_([a.id for a in administrations]))
        .order_by(AdministrationRevision.id))]
    found += [_safety_event(e, ref) for e in session.scalars(select(SafetyEvent).where(SafetyEvent.patient_id == pid)
                                                             .order_by(SafetyEvent.id))]
    found += [_immunization(i, ref) for i in session.scalars(select(Immunization).where(
        Immunization.patient_id == pid).order_by(Immunization.id))]
    found += [_exemption(e, vaccine, ref) for e, vaccine in session.execute(
        select(ImmunizationExemption, ImmunizationRequirement.vaccine).join(
            ImmunizationRequirement, ImmunizationRequirement.id == ImmunizationExemption.requirement_id)
        .where(ImmunizationExemption.patient_id == pid).order_by(ImmunizationExemption.id))]
    found += [_appointment(a, ref) for a in session.scalars(select(Appointment).where(Appointment.patient_id == pid)
                                                            .order_by(Appointment.id))]
    return found


def _entry(organisation_id: int, source: str, resource: Json) -> Json:
    key = f"{organisation_id}:{source}:{resource['resourceType']}/{resource['id']}"
    return {"fullUrl": f"urn:uuid:{uuid.uuid5(_NAMESPACE, key)}", "resource": resource}


def _number(value: Decimal) -> int | float:
    return int(value) if value == value.to_integral_value() else float(value)


def _day(value: date) -> str:
    return value.isoformat()


def _patient(patient: Patient) -> Json:
    identifiers: list[Json] = []
    system = f"urn:triage:organisation:{patient.organisation_id}"
    if patient.mrn:
        identifiers.append({"use": "usual", "type": {"coding": [{"system": _V2_0203, "code": "MR"}]},
                            "system": f"{system}:mrn", "value": patient.mrn})
    if patient.student_number:
        identifiers.append({"type": {"text": "Student number"}, "system": f"{system}:student-number",
                            "value": patient.student_number})
    return {"resourceType": "Patient", "id": f"patient-{patient.id}", "identifier": identifiers,
            "name": [{"use": "official", "family": patient.family_name, "given": [patient.given_name]}],
            "birthDate": _day(patient.date_of_birth)}


def _allergy(allergy: Allergy, ref: Json) -> Json:
    resource: Json = {
        "resourceType": "AllergyIntolerance", "id": f"allergy-{allergy.id}", "patient": ref,
        "criticality": _ALLERGY_CRITICALITY[allergy.severity], "recordedDate": allergy.created_at.isoformat(),
        "code": {"text": allergy.substance_name,
                 **({"coding": [{"code": allergy.substance_code}]} if allergy.substance_code else {})},
    }
    if allergy.reaction:
        resource["reaction"] = [{"manifestation": [{"text": allergy.reaction}],
                                 "severity": _REACTION_SEVERITY[allergy.severity]}]
    return resource


def _medication(medication: Medication) -> Json:
    """The formulary entry as a CodeableConcept (its code's system is not recorded, so none is claimed)."""
    return {"text": medication.name,
            **({"coding": [{"code": medication.code, "display": medication.name}]} if medication.code else {})}


def _prescription(prescription: Prescription, medication: Medication, ref: Json) -> Json:
    ended = prescription.end_date is not None and prescription.end_date < date.today()
    dosage: Json = {"route": {"text": prescription.route}, "doseAndRate": [{"doseQuantity": {
        "value": _number(prescription.dose_amount), "unit": prescription.dose_unit}}]}
    if prescription.times_of_day:
        dosage["timing"] = {"repeat": {"timeOfDay": [f"{t}:00" for t in prescription.times_of_day]}}
    elif prescription.interval_hours:
        dosage["timing"] = {"repeat": {"frequency": 1, "period": prescription.interval_hours, "periodUnit": "h"}}
    if prescription.prn:
        dosage["asNeededBoolean"] = True
    period = {"start": _day(prescription.start_date),
              **({"end": _day(prescription.end_date)} if prescription.end_date else {})}
    return {"resourceType": "MedicationRequest", "id": f"prescription-{prescription.id}",
            "status": "stopped" if not prescription.active else "completed" if ended else "active",
            "intent": "order", "subject": ref, "medicationCodeableConcept": _medication(medication),
            "authoredOn": prescription.created_at.isoformat(), "requester": {"display": prescription.prescriber},
            "dosageInstruction": [dosage], "dispenseRequest": {"validityPeriod": period}}


def _administration(given: Administration, medication: Medication, ref: Json) -> Json:
    resource: Json = {
        "resourceType": "MedicationAdministration", "id": f"administration-{given.id}",
        "identifier": [{"system": "urn:triage:administration-record", "value": str(given.record_id)}],
        "status": _ADMINISTRATION_STATUS[given.status], "medicationCodeableConcept": _medication(medication),
        "subject": ref, "effectiveDateTime": given.given_at.isoformat(),
        "performer": [{"actor": {"display": given.administered_by}}], "device": [{"display": given.device_id}],
        "request": {"reference": f"MedicationRequest/prescription-{given.prescription_id}"},
        "dosage": {"route": {"text": given.route},
                   "dose": {"value": _number(given.dose_amount), "unit": given.dose_unit}},
    }
    if given.reason:
        resource["statusReason"] = [{"text": given.reason_detail or given.reason,
                                     "coding": [{"system": "urn:triage:codesystem:administration-reason",
                                                 "code": given.reason}]}]
    notes = [text for text in (given.notes, given.side_effects and f"Side effects: {given.side_effects}") if text]
    if notes:
        resource["note"] = [{"text": text} for text in notes]
    return resource


def _revision(revision: AdministrationRevision) -> Json:
    who = f"API client {revision.api_client_id}" if revision.api_client_id else "Triage"
    return {"resourceType": "Provenance", "id": f"administration-revision-{revision.id}",
            "target": [{"reference": f"MedicationAdministration/administration-{revision.administration_id}"}],
            "recorded": revision.changed_at.isoformat(), "activity": {"text": f"correction of version {revision.version}"},
            "reason": [{"text": revision.reason}], "agent": [{"who": {"display": who}}]}


def _safety_event(event: SafetyEvent, ref: Json) -> Json:
    return {"resourceType": "DetectedIssue", "id": f"safety-event-{event.id}", "status": "final",
            "code": {"coding": [{"system": "urn:triage:codesystem:safety-event", "code": event.event_type}],
                     "text": event.event_type},
            "severity": _ISSUE_SEVERITY[event.severity], "patient": ref,
            "identifiedDateTime": event.created_at.isoformat(), "detail": event.description,
            "implicated": [{"reference": f"MedicationAdministration/administration-{event.administration_id}"}]}


def _immunization(given: Immunization, ref: Json) -> Json:
    return {"resourceType": "Immunization", "id": f"immunization-{given.id}", "status": given.status,
            "vaccineCode": {"coding": [{"code": given.vaccine_code}], "text": given.vaccine_name},
            "patient": ref, "occurrenceDateTime": _day(given.occurred_on),
            **({"lotNumber": given.lot_number} if given.lot_number else {})}


def _exemption(exemption: ImmunizationExemption, vaccine: str, ref: Json) -> Json:
    extensions = [{"url": f"{_EXTENSION}exemption-vaccine", "valueString": vaccine},
                  {"url": f"{_EXTENSION}exemption-reason", "valueCode": exemption.reason}]
    if exemption.expires_on:
        extensions.append({"url": f"{_EXTENSION}exemption-expires", "valueDate": _day(exemption.expires_on)})
    return {"resourceType": "Basic", "id": f"immunization-exemption-{exemption.id}", "extension": extensions,
            "code": {"coding": [{"system": "urn:triage:codesystem:record-type", "code": "immunization-exemption"}],
                     "text": "Immunization exemption"},
            "subject": ref, "created": _day(exemption.created_at.date())}


def _appointment(visit: Appointment, ref: Json) -> Json:
    participants: list[Json] = [{"actor": ref, "status": "accepted"}]
    if visit.location:
        participants.append({"actor": {"display": visit.location}, "status": "accepted"})
    resource: Json = {"resourceType": "Appointment", "id": f"appointment-{visit.id}", "status": visit.status,
                      "start": visit.start.isoformat(), "participant": participants}
    if visit.end is not None:
        resource["end"] = visit.end.isoformat()
    else:  # app-3 wants an end on a booked appointment: say it is unknown rather than invent one
        resource["_end"] = {"extension": [{"url": _ABSENT, "valueCode": "unknown"}]}
    if visit.description:
        resource["description"] = visit.description
    return resource


def _composition(patient: Patient, entries: list[Json], counts: Counter[str], now: datetime) -> Json:
    """The summary: one section per resource type (title with its count) listing its entries."""
    sections = [{"title": f"{kind}: {count}", "entry": [
        {"reference": e["fullUrl"]} for e in entries if e["resource"]["resourceType"] == kind]}
        for kind, count in sorted(counts.items())]
    return {"resourceType": "Composition", "id": f"patient-{patient.id}-export-summary", "status": "final",
            "type": {"text": "Data-subject access export (GDPR Art. 15/20)"},
            "subject": {"reference": f"Patient/patient-{patient.id}"}, "date": now.isoformat(),
            "author": [{"display": "Triage"}], "title": f"Everything held about patient {patient.id}: "
            f"{sum(counts.values())} resources", "section": sections}
