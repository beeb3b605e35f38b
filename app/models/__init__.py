"""Every Triage table: the job ledger, the clinical domain and the event outbox."""

from app.models.clinical import (
    Administration,
    AdministrationRevision,
    AdministrationStatus,
    Allergy,
    InventoryLot,
    Medication,
    Patient,
    Prescription,
    RecordConflict,
    SafetyEvent,
)
from app.models.events import Event
from app.models.ledger import ApiClient, IdempotencyRecord, Job, JobAttempt, JobStatus, Organisation

__all__ = [
    "Administration",
    "AdministrationRevision",
    "AdministrationStatus",
    "Allergy",
    "ApiClient",
    "Event",
    "IdempotencyRecord",
    "InventoryLot",
    "Job",
    "JobAttempt",
    "JobStatus",
    "Medication",
    "Organisation",
    "Patient",
    "Prescription",
    "RecordConflict",
    "SafetyEvent",
]
