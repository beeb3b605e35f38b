"""HL7 v2 tables mapped to FHIR R4 code systems and value sets (after the v2-to-FHIR IG maps)."""

from __future__ import annotations

import re
from urllib.parse import quote

UCUM = "http://unitsofmeasure.org"
V2 = "http://terminology.hl7.org/CodeSystem/v2-"
V3_INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
V3_ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
V3_NULL_FLAVOR = "http://terminology.hl7.org/CodeSystem/v3-NullFlavor"
V3_PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
V3_MARITAL = "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus"
ASSIGNER_URN = "urn:triage:assigner:"
CODESYSTEM_URN = "urn:triage:codesystem:"

#: Table 0396 names → FHIR code system URIs (the IG's and FHIR-Converter's choices).
CODING_SYSTEMS = {
    "LN": "http://loinc.org", "LOINC": "http://loinc.org",
    "SCT": "http://snomed.info/sct", "SNOMEDCT": "http://snomed.info/sct", "SNM3": "http://snomed.info/sct",
    "SNOMED": "http://snomed.info/sct", "SNOMED-CT": "http://snomed.info/sct",
    "I10": "http://hl7.org/fhir/sid/icd-10", "I10C": "http://hl7.org/fhir/sid/icd-10-cm",
    "ICD10CM": "http://hl7.org/fhir/sid/icd-10-cm", "I9": "http://hl7.org/fhir/sid/icd-9",
    "I9C": "http://hl7.org/fhir/sid/icd-9-cm", "I9CDX": "http://hl7.org/fhir/sid/icd-9-cm",
    "CVX": "http://hl7.org/fhir/sid/cvx", "MVX": "http://hl7.org/fhir/sid/mvx",
    "NDC": "http://hl7.org/fhir/sid/ndc", "UCUM": UCUM,
    "RXNORM": "http://www.nlm.nih.gov/research/umls/rxnorm",
    "C4": "http://www.ama-assn.org/go/cpt", "CPT": "http://www.ama-assn.org/go/cpt",
    "NCIT": "http://ncimeta.nci.nih.gov", "CDCREC": "urn:oid:2.16.840.1.113883.6.238",
    "NPI": "http://hl7.org/fhir/sid/us-npi", "ISO3166_1": "urn:iso:std:iso:3166",
    "NULLFL": V3_NULL_FLAVOR, "DCM": "http://dicom.nema.org/resources/ontology/DCM",
}
_HL7_TABLE = re.compile(r"HL7(\d{4})")
_OID = re.compile(r"[0-2](\.(0|[1-9]\d*))+")
_SYSTEM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+\-]{0,39}")

GENDER = {"M": "male", "F": "female", "O": "other", "U": "unknown", "A": "other", "N": "other"}
NAME_USE = {"L": "official", "D": "usual", "M": "maiden", "N": "nickname", "S": "anonymous",
            "TEMP": "temp", "BAD": "old", "NOUSE": "old"}
ADDRESS_USE = {"H": "home", "B": "work", "O": "work", "C": "temp", "BA": "old"}
ADDRESS_TYPE = {"M": "postal"}
TELECOM_SYSTEM = {"PH": "phone", "CP": "phone", "FX": "fax", "BP": "pager", "MD": "other",
                  "TDD": "other", "TTY": "other", "SAT": "phone", "INTERNET": "email", "X.400": "email"}
TELECOM_USE = {"PRN": "home", "ORN": "home", "VHN": "home", "WPN": "work", "BPN": "work"}
MARITAL = {"M": "M", "S": "S", "D": "D", "W": "W", "A": "L", "E": "L", "N": "A", "I": "I",
           "P": "T", "R": "T", "B": "U"}
#: Table 0004 patient class → v3 ActCode encounter class.
ENCOUNTER_CLASS = {"E": ("EMER", "emergency"), "I": ("IMP", "inpatient encounter"),
                   "B": ("IMP", "inpatient encounter"), "O": ("AMB", "ambulatory"),
                   "R": ("AMB", "ambulatory"), "P": ("PRENC", "pre-admission")}
#: Table 0085 → Observation.status.
OBSERVATION_STATUS = {"C": "corrected", "D": "entered-in-error", "F": "final", "I": "registered",
                      "O": "registered", "P": "preliminary", "R": "preliminary", "S": "preliminary",
                      "U": "final", "W": "entered-in-error", "X": "cancelled", "N": "cancelled"}
#: Table 0123 → DiagnosticReport.status.
REPORT_STATUS = {"O": "registered", "I": "registered", "S": "registered", "A": "partial", "R": "partial",
                 "P": "preliminary", "C": "corrected", "F": "final", "X": "cancelled"}
#: Table 0078 codes that are also v3 ObservationInterpretation codes.
INTERPRETATIONS = frozenset({"L", "H", "LL", "HH", "<", ">", "N", "A", "AA", "S", "R", "I", "MS", "VS",
                             "B", "W", "U", "D", "IND", "E", "NEG", "POS", "DET", "ND", "HU", "LU", "NR",
                             "EX", "HX", "LX", "SDD", "NS", "QCF", "TOX", "WR", "CAR", "RR", "H>", "L<"})
#: Table 0038 order status and table 0119 order control → ServiceRequest.status.
REQUEST_STATUS = {"A": "active", "CA": "revoked", "CM": "completed", "DC": "revoked",
                  "ER": "entered-in-error", "HD": "on-hold", "IP": "active", "RP": "revoked", "SC": "active"}
REQUEST_CONTROL = {"NW": "active", "OK": "active", "XO": "active", "XX": "active", "XR": "active",
                   "SC": "active", "SN": "active", "RO": "active", "RL": "active", "RE": "active",
                   "CA": "revoked", "OC": "revoked", "CR": "revoked", "DC": "revoked", "OD": "revoked",
                   "DR": "revoked", "RP": "revoked", "HD": "on-hold", "OH": "on-hold", "HR": "on-hold"}
#: The same two tables → MedicationRequest.status (cancelled before it began, stopped after).
MEDICATION_STATUS = {"A": "active", "CA": "cancelled", "CM": "completed", "DC": "stopped",
                     "ER": "entered-in-error", "HD": "on-hold", "IP": "active", "RP": "stopped",
                     "SC": "active"}
MEDICATION_CONTROL = {**REQUEST_CONTROL, "CA": "cancelled", "OC": "cancelled", "CR": "cancelled",
                      "DC": "stopped", "OD": "stopped", "DR": "stopped", "RP": "stopped"}
#: Table 0485 / TQ.6 priority → request priority.
PRIORITY = {"S": "stat", "A": "asap", "R": "routine", "T": "urgent"}
#: Table 0278 filler status → Appointment.status and participant status.
APPOINTMENT_STATUS = {"BOOKED": "booked", "PENDING": "pending", "WAITLIST": "waitlist",
                      "CANCELLED": "cancelled", "COMPLETE": "fulfilled", "NOSHOW": "noshow",
                      "STARTED": "arrived", "DELETED": "entered-in-error", "OVERBOOK": "booked",
                      "DC": "cancelled"}
PARTICIPANT_STATUS = {"BOOKED": "accepted", "OVERBOOK": "accepted", "COMPLETE": "accepted",
                      "STARTED": "accepted", "PENDING": "tentative", "WAITLIST": "needs-action",
                      "CANCELLED": "declined", "DELETED": "declined", "NOSHOW": "declined", "DC": "declined"}
#: Table 0271 document completion status → DocumentReference.docStatus.
DOC_STATUS = {"AU": "final", "LA": "final", "DI": "preliminary", "DO": "preliminary", "IN": "preliminary",
              "IP": "preliminary", "PA": "preliminary"}
#: Lower-cased unit spellings seen in v2 feeds → UCUM codes ("UCUM-ish" units).
UCUM_UNITS = {
    "mg/dl": "mg/dL", "g/dl": "g/dL", "ug/dl": "ug/dL", "mcg/dl": "ug/dL", "mmol/l": "mmol/L",
    "umol/l": "umol/L", "meq/l": "meq/L", "mg/l": "mg/L", "g/l": "g/L", "ng/ml": "ng/mL", "pg/ml": "pg/mL",
    "u/l": "U/L", "iu/l": "[IU]/L", "%": "%", "ml": "mL", "l": "L", "mg": "mg", "g": "g", "kg": "kg",
    "ug": "ug", "mcg": "ug", "cm": "cm", "mm": "mm", "m": "m", "mm[hg]": "mm[Hg]", "mmhg": "mm[Hg]",
    "beats/min": "/min", "bpm": "/min", "/min": "/min", "fl": "fL", "10*3/ul": "10*3/uL",
    "10*6/ul": "10*6/uL", "s": "s", "sec": "s", "min": "min",
    "h": "h", "hr": "h", "d": "d", "mg/h": "mg/h", "mg/hr": "mg/h", "ml/h": "mL/h", "ml/hr": "mL/h",
    "mg/kg": "mg/kg", "[iu]": "[IU]", "iu": "[IU]", "meq": "meq", "mmol": "mmol", "cel": "Cel", "degc": "Cel",
}
#: Duration units (AIS-8, SCH-10 …) → minutes.
MINUTES_PER_UNIT = {"s": 1 / 60, "sec": 1 / 60, "min": 1, "m": 1, "minutes": 1, "h": 60, "hr": 60,
                    "hour": 60, "hours": 60, "d": 1440, "day": 1440, "days": 1440}


def coding_system(name: str) -> str | None:
    """The FHIR system URI for a v2 coding-system name, or None when `name` cannot be one."""
    known = CODING_SYSTEMS.get(name.upper())
    if known:
        return known
    table = _HL7_TABLE.fullmatch(name.upper())
    if table:
        return V2 + table[1]
    if _OID.fullmatch(name):
        return "urn:oid:" + name
    if _SYSTEM_NAME.fullmatch(name):
        return CODESYSTEM_URN + name
    return None


def assigner_system(namespace: str | None, universal: str | None, kind: str | None) -> str | None:
    """Identifier.system from an assigning authority (HD): urn:oid for ISO OIDs, else a Triage URN."""
    kind = (kind or "").upper()
    if universal and kind == "ISO" and _OID.fullmatch(universal):
        return "urn:oid:" + universal
    if universal and kind in ("URI", "URL") and re.match(r"[A-Za-z][A-Za-z0-9+.\-]*:\S+$", universal):
        return universal
    label = namespace or universal
    return ASSIGNER_URN + quote(label, safe="") if label else None
