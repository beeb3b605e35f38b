"""Alerts: a condition is triggered once (one open alert per deterministic dedup key) and resolved
when it clears; every matching channel is told by its own job on the `critical` queue.

Channels: an organisation's own (only its alerts) and the operators' global ones (every alert),
each with a minimum severity — PagerDuty channels default to `critical`, Slack to `info`, so a
CRITICAL safety event pages while every safety event reaches Slack. Summaries and details carry
ids, codes and counts only: never PHI.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import ColumnElement, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app.models import Alert, AlertChannel, AlertNotification
from app.models.alerts import SEVERITIES
from app.secrets_at_rest import SecretBox
from app.services import egress, jobs
from app.services.organisations import ensure_organisation

SEND_KIND = "alerts.send"
#: The ledger organisation of platform alerts' jobs (alerts with no organisation of their own).
PLATFORM_ORGANISATION = "triage-platform"
DEFAULT_MIN_SEVERITY = {"pagerduty": "critical", "slack": "info"}
_RANK = {severity: rank for rank, severity in enumerate(SEVERITIES)}
#: Safety event severity → alert severity.
SAFETY_SEVERITY = {"CRITICAL": "critical", "HIGH": "error", "MEDIUM": "warning"}


class ChannelNotFoundError(LookupError):
    """No such alert channel for this caller."""


class InvalidChannelError(ValueError):
    """A channel field that cannot be accepted; `field` names it."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field


@dataclass(frozen=True)
class Condition:
    """What is wrong, where: the alert's identity (its dedup key) and how it reads."""

    organisation_id: int | None
    condition: str  # safety_event, critical_dead_letter, dead_letters_high, queue_stalled, breaker_open, …
    subject: str
    severity: str
    summary: str
    details: dict[str, Any]

    @property
    def dedup_key(self) -> str:
        """Deterministic per condition and subject, so PagerDuty groups trigger and resolve."""
        scope = f"org-{self.organisation_id}" if self.organisation_id is not None else "platform"
        return f"triage/{scope}/{self.condition}/{self.subject}"[:200]


def _channels(session: Session, organisation_id: int | None, severity: str) -> list[AlertChannel]:
    scope: ColumnElement[bool] = AlertChannel.organisation_id.is_(None)
    if organisation_id is not None:
        scope = or_(scope, AlertChannel.organisation_id == organisation_id)
    rows = session.scalars(select(AlertChannel).where(AlertChannel.enabled.is_(True), scope).order_by(AlertChannel.id))
    return [c for c in rows if _RANK[severity] <= _RANK[c.min_severity]]


def _notify(session: Session, alert: Alert, channel_id: int, action: str) -> None:
    notification_id = session.execute(
        insert(AlertNotification).values(alert_id=alert.id, channel_id=channel_id, action=action)
        .on_conflict_do_nothing(constraint="uq_alert_notifications").returning(AlertNotification.id)
    ).scalar_one_or_none()
    if notification_id is None:
        return
    org = alert.organisation_id or ensure_organisation(session, PLATFORM_ORGANISATION).id
    job = jobs.submit(session, SEND_KIND, notification_id, organisation_id=org)
    session.execute(update(AlertNotification).where(AlertNotification.id == notification_id).values(job_id=job.id))


def trigger(session: Session, condition: Condition) -> Alert | None:
    """Open an alert and notify its channels; None when the same condition is already open."""
    alert_id = session.execute(
        insert(Alert).values(organisation_id=condition.organisation_id, dedup_key=condition.dedup_key,
                             condition=condition.condition, severity=condition.severity,
                             summary=condition.summary[:1024], details=condition.details)
        .on_conflict_do_nothing(index_elements=["dedup_key"], index_where=text("status = 'triggered'"))
        .returning(Alert.id)
    ).scalar_one_or_none()
    if alert_id is None:
        return None
    alert = session.get_one(Alert, alert_id)
    for channel in _channels(session, condition.organisation_id, condition.severity):
        _notify(session, alert, channel.id, "trigger")
    return alert


def resolve(session: Session, organisation_id: int | None, condition: str, subject: str) -> Alert | None:
    """Close the open alert of a condition and tell the channels that were told of it."""
    key = Condition(organisation_id, condition, subject, "info", "", {}).dedup_key
    alert = session.scalars(select(Alert).where(Alert.dedup_key == key, Alert.status == "triggered")
                            .with_for_update()).one_or_none()
    if alert is None:
        return None
    alert.status, alert.resolved_at = "resolved", func.now()
    told = session.scalars(select(AlertNotification.channel_id).where(AlertNotification.alert_id == alert.id,
                                                                     AlertNotification.action == "trigger"))
    for channel_id in list(told):
        _notify(session, alert, channel_id, "resolve")
    session.flush()
    return alert


def is_open(session: Session, organisation_id: int | None, condition: str, subject: str) -> bool:
    """Whether the condition has an open alert."""
    key = Condition(organisation_id, condition, subject, "info", "", {}).dedup_key
    return session.scalar(select(Alert.id).where(Alert.dedup_key == key, Alert.status == "triggered")) is not None


def create_channel(session: Session, box: SecretBox, values: dict[str, Any], *, organisation_id: int | None,
                   allow_loopback: bool) -> AlertChannel:
    """Add a channel; its URL passes the same SSRF checks as webhook endpoints."""
    url, key = values.pop("url"), values.pop("routing_key", None)
    try:
        egress.check(url, allow_loopback=allow_loopback)
    except egress.EgressRefusedError as exc:
        raise InvalidChannelError("url", str(exc)) from None
    if values["kind"] == "pagerduty" and not key:
        raise InvalidChannelError("routing_key", "a PagerDuty channel needs its integration's routing key")
    parts = urlsplit(url)
    channel = AlertChannel(organisation_id=organisation_id, url_ciphertext=box.seal(url),
                           url_display=f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/…",
                           routing_key_ciphertext=box.seal(key) if key else None,
                           min_severity=values.pop("min_severity", None) or DEFAULT_MIN_SEVERITY[values["kind"]],
                           **values)
    session.add(channel)
    session.flush()
    return channel


def channels(session: Session, *, organisation_id: int | None) -> list[AlertChannel]:
    """The organisation's channels (None: the global ones)."""
    scope = AlertChannel.organisation_id.is_(None) if organisation_id is None \
        else AlertChannel.organisation_id == organisation_id
    return list(session.scalars(select(AlertChannel).where(scope).order_by(AlertChannel.id)))


def delete_channel(session: Session, channel_id: int, *, organisation_id: int | None) -> None:
    """Remove a channel (its notifications go with it)."""
    channel = session.get(AlertChannel, channel_id)
    if channel is None or channel.organisation_id != organisation_id:
        raise ChannelNotFoundError(f"alert channel {channel_id} not found")
    session.delete(channel)
    session.flush()


def page(session: Session, *, organisation_id: int | None, status: str | None, limit: int = 100) -> list[Alert]:
    """Alerts, newest first: an organisation's, or (None) every one, for operators."""
    query = select(Alert).order_by(Alert.id.desc()).limit(limit)
    if organisation_id is not None:
        query = query.where(Alert.organisation_id == organisation_id)
    if status:
        query = query.where(Alert.status == status)
    return list(session.scalars(query))
