"""HL7 metrics (names as in the reference documents), written by the listener, the API and workers."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from app.fhir.mapping import MAPPERS

SUPPORTED = frozenset(MAPPERS)

RECEIVED = Counter("hl7_messages_received_total", "Inbound HL7 messages by type and transport (mllp, http).",
                   ["message_type", "transport"])
ACKS = Counter("hl7_acks_sent_total", "ACKs answered, by MSA-1 code (AA, AE, AR).", ["code"])
PARSE_ERRORS = Counter("hl7_parse_errors_total", "Messages refused or not mapped, by error type.", ["error_type"])
PROCESSING = Histogram("hl7_processing_duration_seconds",
                       "Transform of one message to FHIR, by type (a batch: its time shared by its messages).",
                       ["message_type"], buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5))
SENT = Counter("hl7_messages_sent_total", "Outbound HL7 deliveries by destination and outcome.",
               ["destination", "outcome"])
CONNECTIONS = Gauge("mllp_open_connections", "Open MLLP connections.", multiprocess_mode="livesum")


def answered(message_type: str, transport: str, code: str, error_type: str | None = None) -> None:
    """Count one message taken in (or refused) and the ACK it got (types we do not map count as `other`,
    so a sender cannot create series at will)."""
    RECEIVED.labels(message_type if message_type in SUPPORTED else "other", transport).inc()
    ACKS.labels(code).inc()
    if error_type:
        PARSE_ERRORS.labels(error_type).inc()
