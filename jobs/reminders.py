"""Reminder and inventory job kinds, run by the schedules: each pass announces what is new, once."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlalchemy import select

from app.models import ImmunizationRequirement
from app.runtime import current
from app.services import immunizations, reminders
from jobs.spec import job_kind

log = logging.getLogger(__name__)


@job_kind("reminders.medication", queue="reminders")
def medication_reminders() -> None:
    """Doses due in the next half hour, and doses missed (past an hour late)."""
    with current().sessions.begin() as session:
        found = reminders.medication(session, datetime.now(UTC))
    log.info("Reminders: %s doses due, %s missed (new)", found.due, found.missed)


@job_kind("reminders.medication_digest", queue="reminders")
def medication_digests() -> None:
    """Each organisation's 00:00 and 06:00 (local) digest of the day's doses, once per slot."""
    with current().sessions.begin() as session:
        count = reminders.digests(session, datetime.now(UTC))
    log.info("Reminders: %s medication digests (new)", count)


@job_kind("reminders.immunizations", queue="reminders")
def immunization_reminders() -> None:
    """Doses overdue against each organisation's immunization requirements, announced once each."""
    runtime = current()
    with runtime.sessions.begin() as session:
        organisations = session.scalars(select(ImmunizationRequirement.organisation_id).distinct()).all()
    for organisation_id in organisations:  # one transaction per organisation: a big one never blocks the rest
        with runtime.sessions.begin() as session:
            count = immunizations.overdue(session, organisation_id, datetime.now(UTC).date())
        log.info("Organisation %s: %s overdue immunization doses (new)", organisation_id, count)


@job_kind("reminders.appointments", queue="reminders")
def appointment_reminders() -> None:
    """Booked appointments in the next 24 hours."""
    with current().sessions.begin() as session:
        count = reminders.appointments(session, datetime.now(UTC))
    log.info("Reminders: %s upcoming appointments (new)", count)


@job_kind("maintenance.inventory", queue="maintenance")
def inventory_check() -> None:
    """Lots at or below their reorder level, and lots expiring soon."""
    runtime = current()
    with runtime.sessions.begin() as session:
        low, expiring = reminders.inventory(session, datetime.now(UTC).date(), runtime.settings.inventory_expiring_days)
    log.info("Inventory: %s lots low, %s expiring (new today)", low, expiring)
