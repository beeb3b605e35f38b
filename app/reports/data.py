"""The shape of `data` for each report type: JSON-friendly TypedDicts the caller builds.

Values are strings, numbers and ISO 8601 dates (``YYYY-MM-DD``) or date-times
(``YYYY-MM-DDTHH:MM[:SS][±HH:MM|Z]``). Times are printed as given (minutes precision, offset
dropped), so pass them already in the organisation's local time. Keys not listed are ignored.
`app.reports.validation.parse` checks a dict against these shapes before anything is drawn.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal, NotRequired

from pydantic import AfterValidator, Field, JsonValue
from typing_extensions import TypedDict  # pydantic validates only this TypedDict on Python < 3.12


class ReportDataError(ValueError):
    """The report data is missing or invalid; the message names fields, never their values."""


def _iso_date(value: str) -> str:
    try:
        date.fromisoformat(value)
    except ValueError:
        raise ValueError("expected an ISO 8601 date (YYYY-MM-DD)") from None
    return value


def _iso_datetime(value: str) -> str:
    try:
        datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("expected an ISO 8601 date-time") from None
    return value


IsoDate = Annotated[str, AfterValidator(_iso_date)]
IsoDateTime = Annotated[str, AfterValidator(_iso_datetime)]
Text = Annotated[str, Field(min_length=1, max_length=5000)]
Scalar = str | int | float | bool | None


# --- shared pieces ----------------------------------------------------------------------------

class PatientRef(TypedDict):
    """A patient named in a report's header or rows."""

    name: Text  #: full display name, any script ("José Müller", "Αλέξανδρος")
    identifier: Text  #: the organisation's identifier, e.g. MRN or student number


# --- student_health_summary ---------------------------------------------------------------------

class SummaryPatient(TypedDict):
    """Demographics at the top of a health summary."""

    name: Text
    date_of_birth: IsoDate
    identifiers: list[Text]  #: e.g. ["MRN 1001", "Student 2024-17"]; may be empty


class Allergy(TypedDict):
    """A recorded allergy; "severe" / "life-threatening" severities are highlighted."""

    substance: Text
    severity: Text  #: e.g. mild | moderate | severe | life-threatening
    reaction: NotRequired[str | None]


class Prescription(TypedDict):
    """An active prescription."""

    medication: Text
    dose: Text  #: e.g. "10 mg"
    route: Text  #: e.g. "oral"
    times_of_day: list[Text]  #: e.g. ["08:00", "12:30"]
    start: IsoDate
    end: NotRequired[IsoDate | None]  #: absent or None: ongoing


class Administration(TypedDict):
    """A recent administration (newest first is the caller's choice of order)."""

    given_at: IsoDateTime
    medication: Text
    dose: Text
    status: Text  #: e.g. recorded | blocked | rejected | corrected
    by: Text  #: who gave (or attempted) it


class Immunization(TypedDict):
    """An immunization record."""

    vaccine: Text
    date: IsoDate
    dose_number: NotRequired[Annotated[int, Field(ge=1)] | None]
    status: Text  #: e.g. completed | not_done | refused


class StudentHealthSummary(TypedDict):
    """Data for ``student_health_summary``: one patient's health record on a page or two."""

    patient: SummaryPatient
    allergies: list[Allergy]
    prescriptions: list[Prescription]
    administrations: list[Administration]
    immunizations: list[Immunization]


# --- medication_administration_log --------------------------------------------------------------

#: An inclusive date range {"from": ISO date, "to": ISO date}; "from" must not be after "to".
Period = TypedDict("Period", {"from": IsoDate, "to": IsoDate})


class MarRow(TypedDict):
    """One administration attempt in the log."""

    given_at: IsoDateTime
    patient: NotRequired[PatientRef | None]  #: required when the log covers the organisation
    medication: Text
    dose: Text
    route: Text
    status: Literal["recorded", "blocked", "rejected"]
    by: Text
    reason: NotRequired[str | None]  #: why it was blocked or rejected, or a note


class SafetyEvent(TypedDict):
    """A safety event in the period."""

    at: IsoDateTime
    type: Text  #: e.g. allergy_conflict | duplicate_dose
    severity: Text  #: e.g. low | medium | high | critical
    description: Text


class MedicationLog(TypedDict):
    """Data for ``medication_administration_log`` (MAR).

    ``patient`` present: the log of one patient (no patient column). Absent or None: the whole
    organisation, and every row names its patient. Rows are printed in the order given.
    """

    patient: NotRequired[PatientRef | None]
    period: Period
    rows: list[MarRow]
    safety_events: list[SafetyEvent]


# --- immunization_compliance --------------------------------------------------------------------

class CohortRef(TypedDict):
    """The group reported on, e.g. a class, a school or a single patient."""

    name: Text


class Requirement(TypedDict):
    """A required vaccine and the number of doses it needs (at most 12 requirements)."""

    vaccine: Text
    doses: Annotated[int, Field(ge=1)]


class CompliancePatient(TypedDict):
    """One patient's standing against the requirements."""

    name: Text
    identifier: Text
    received: dict[str, Annotated[int, Field(ge=0)]]  #: vaccine -> doses received; missing: 0
    overdue: list[Text]  #: vaccines overdue (highlighted)
    exemptions: list[Text]  #: vaccines the patient is exempt from


class ImmunizationCompliance(TypedDict):
    """Data for ``immunization_compliance``: required vs received per patient, with a summary."""

    cohort: CohortRef
    requirements: Annotated[list[Requirement], Field(min_length=1, max_length=12)]
    patients: list[CompliancePatient]


# --- incident_report ----------------------------------------------------------------------------

class IncidentEvent(TypedDict):
    """The safety event an incident report describes."""

    id: str | int
    type: Text
    severity: Text
    occurred_at: IsoDateTime
    description: Text
    prevented_action: dict[str, JsonValue]  #: what was stopped, e.g. {"medication": ..., "dose": ...}
    context: dict[str, JsonValue]  #: free-form detail; nested keys print as "a › b"


class IncidentReport(TypedDict):
    """Data for ``incident_report``: one safety event with its patient and administration."""

    event: IncidentEvent
    patient: PatientRef
    administration: NotRequired[dict[str, JsonValue] | None]  #: the attempted administration


# --- custom_table -------------------------------------------------------------------------------

class CustomTable(TypedDict):
    """Data for ``custom_table``: rows from a whitelisted query, printed as given.

    Every row has exactly one cell per column; more than 6 columns print in landscape.
    """

    title: Annotated[str, Field(min_length=1, max_length=200)]
    columns: Annotated[list[Text], Field(min_length=1, max_length=16)]
    rows: list[list[Scalar]]
    filters: NotRequired[dict[str, Scalar]]  #: shown under the title, e.g. {"Status": "blocked"}
