"""Public HL7 v2 sample messages (copied byte for byte from the shared hl7-samples folder into
tests/fixtures/hl7, with its README naming each one's source) and the ACK code each should get."""

from __future__ import annotations

from pathlib import Path

SAMPLES = Path(__file__).resolve().parent.parent / "fixtures" / "hl7"


def expected_acks() -> dict[str, str]:
    """File name → MSA-1 from expected.tsv."""
    rows = (line.split("\t") for line in (SAMPLES / "expected.tsv").read_text().splitlines())
    return {row[0]: row[1] for row in rows if row and not row[0].startswith("#") and len(row) > 1}


def sample(name: str) -> bytes:
    """A sample's bytes, exactly as published."""
    return (SAMPLES / name).read_bytes()
