"""Alerts: conditions raised and resolved, the channels (PagerDuty, Slack) told, each notification kept."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base

SEVERITIES = ("critical", "error", "warning", "info")


class AlertChannel(Base):
    """Where alerts go: a PagerDuty Events v2 integration or a Slack incoming webhook.

    `organisation_id` NULL: an operators' (global) channel, told of platform conditions and of
    every organisation's alerts; otherwise only that organisation's alerts reach it.
    """

    __tablename__ = "alert_channels"
    __table_args__ = (
        CheckConstraint("kind IN ('pagerduty', 'slack')", name="ck_alert_channels_kind"),
        CheckConstraint("min_severity IN ('critical', 'error', 'warning', 'info')", name="ck_alert_channels_severity"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    organisation_id: Mapped[int | None] = mapped_column(ForeignKey("organisations.id", ondelete="RESTRICT"),
                                                        index=True)
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(200))
    # A Slack webhook URL is itself a secret, and PagerDuty's routing key is one: both stored
    # encrypted; the API shows only the URL's scheme and host.
    url_ciphertext: Mapped[str] = mapped_column(String(3000))
    url_display: Mapped[str] = mapped_column(String(300))
    routing_key_ciphertext: Mapped[str | None] = mapped_column(String(500))
    min_severity: Mapped[str] = mapped_column(String(10))
    rate_limit_per_minute: Mapped[int] = mapped_column(Integer, server_default=text("30"))
    enabled: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Alert(Base):
    """A condition that needs a human: triggered once per `dedup_key`, resolved when it clears."""

    __tablename__ = "alerts"
    __table_args__ = (
        Index("uq_alerts_open_dedup_key", "dedup_key", unique=True, postgresql_where=text("status = 'triggered'")),
        Index("ix_alerts_org_id", "organisation_id", "id"),
        CheckConstraint("status IN ('triggered', 'resolved')", name="ck_alerts_status"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    organisation_id: Mapped[int | None] = mapped_column(ForeignKey("organisations.id", ondelete="RESTRICT"))
    dedup_key: Mapped[str] = mapped_column(String(200))
    condition: Mapped[str] = mapped_column(String(50))
    severity: Mapped[str] = mapped_column(String(10))
    summary: Mapped[str] = mapped_column(String(1024))
    details: Mapped[dict[str, Any]] = mapped_column(JSONB)  # ids and counts only, never PHI
    status: Mapped[str] = mapped_column(String(10), server_default="triggered")
    triggered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AlertNotification(Base):
    """One action (trigger or resolve) of one alert sent to one channel, by a job on `critical`."""

    __tablename__ = "alert_notifications"
    __table_args__ = (
        UniqueConstraint("alert_id", "channel_id", "action", name="uq_alert_notifications"),
        CheckConstraint("action IN ('trigger', 'resolve')", name="ck_alert_notifications_action"),
        CheckConstraint("status IN ('pending', 'sent', 'dead')", name="ck_alert_notifications_status"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id", ondelete="CASCADE"), index=True)
    channel_id: Mapped[int] = mapped_column(ForeignKey("alert_channels.id", ondelete="CASCADE"))
    action: Mapped[str] = mapped_column(String(10))
    status: Mapped[str] = mapped_column(String(10), server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(500))
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
