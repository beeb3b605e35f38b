"""Every Triage table: the job ledger, the clinical domain, the event outbox, webhooks, alerts and HL7/FHIR."""

from app.models.alerts import Alert, AlertChannel, AlertNotification
from app.models.audit import AuditArchive, AuditChainHead, AuditEvent, LegalHold
from app.models.care import Appointment, Immunization, ImmunizationExemption, ImmunizationRequirement
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
from app.models.hl7 import FhirResource, Hl7Message, MessageStatus, OutboundMessage
from app.models.ledger import ApiClient, IdempotencyRecord, Job, JobAttempt, JobStatus, Organisation
from app.models.privacy import PrivacyRequest
from app.models.reports import Report, ReportSchedule
from app.models.webhooks import DeliveryStatus, WebhookAttempt, WebhookDelivery, WebhookEndpoint

__all__ = [
    "Administration",
    "AdministrationRevision",
    "AdministrationStatus",
    "Alert",
    "AlertChannel",
    "AlertNotification",
    "Allergy",
    "ApiClient",
    "Appointment",
    "AuditArchive",
    "AuditChainHead",
    "AuditEvent",
    "DeliveryStatus",
    "Event",
    "FhirResource",
    "Hl7Message",
    "IdempotencyRecord",
    "Immunization",
    "ImmunizationExemption",
    "ImmunizationRequirement",
    "InventoryLot",
    "Job",
    "JobAttempt",
    "JobStatus",
    "LegalHold",
    "Medication",
    "MessageStatus",
    "Organisation",
    "OutboundMessage",
    "Patient",
    "Prescription",
    "PrivacyRequest",
    "RecordConflict",
    "Report",
    "ReportSchedule",
    "SafetyEvent",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookEndpoint",
]
