"""Alert channels and alerts: an organisation's own (scope `webhooks:manage`) under /v1/alerts, the
operators' global ones (scope `admin`) under /v1/admin. Channel URLs and routing keys are secrets:
stored encrypted, shown only as scheme and host."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from flask import Blueprint, Response, current_app, jsonify
from pydantic import BaseModel, ConfigDict, Field

from app.api import app_runtime
from app.api.auth import current_caller, requires
from app.api.clinical_schemas import Strict
from app.api.idempotency import db, transactional
from app.api.openapi import Operation, documented
from app.api.problems import FieldError, Problem
from app.api.validation import body, query
from app.secrets_at_rest import SecretBox
from app.services import alerts

blueprint = Blueprint("alerts", __name__, url_prefix="/v1")
Severity = Literal["critical", "error", "warning", "info"]


class ChannelIn(Strict):
    """A PagerDuty Events v2 integration (url + routing_key) or a Slack incoming webhook (url)."""

    kind: Literal["pagerduty", "slack"]
    name: Annotated[str, Field(min_length=1, max_length=200)]
    url: Annotated[str, Field(min_length=8, max_length=2000, description="e.g. https://events.pagerduty.com/v2/enqueue")]
    routing_key: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    min_severity: Severity | None = Field(default=None, description="default: critical (PagerDuty), info (Slack)")
    rate_limit_per_minute: Annotated[int, Field(ge=1, le=600)] = 30
    enabled: bool = True


class ChannelOut(BaseModel):
    """A channel as the API shows it (no URL path, no key)."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: str
    name: str
    url_display: str
    min_severity: str
    rate_limit_per_minute: int
    enabled: bool
    created_at: datetime


class ChannelList(BaseModel):
    """Every channel of the caller's scope."""

    items: list[ChannelOut]


class AlertOut(BaseModel):
    """An alert: its condition, severity, summary (no PHI) and whether it is still open."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    organisation_id: int | None
    dedup_key: str
    condition: str
    severity: str
    summary: str
    details: dict[str, Any]
    status: str
    triggered_at: datetime
    resolved_at: datetime | None


class AlertList(BaseModel):
    """The newest alerts."""

    items: list[AlertOut]


class AlertQuery(Strict):
    """Alerts by status."""

    status: Literal["triggered", "resolved"] | None = None


def _settings_box() -> tuple[SecretBox, bool]:
    runtime = app_runtime()
    box: SecretBox = current_app.extensions["triage.secrets"]
    return box, runtime.settings.egress_allow_loopback


def _create(organisation_id: int | None) -> tuple[Response, int]:
    box, loopback = _settings_box()
    values = body(ChannelIn).model_dump()
    try:
        channel = alerts.create_channel(db(), box, values, organisation_id=organisation_id, allow_loopback=loopback)
    except alerts.InvalidChannelError as exc:
        raise Problem(422, "Unprocessable Content", str(exc), "validation",
                      [FieldError("body", exc.field, str(exc))]) from None
    return jsonify(ChannelOut.model_validate(channel).model_dump(mode="json")), 201


def _list(organisation_id: int | None) -> Response:
    rows = alerts.channels(db(), organisation_id=organisation_id)
    return jsonify(ChannelList(items=[ChannelOut.model_validate(r) for r in rows]).model_dump(mode="json"))


def _delete(channel_id: int, organisation_id: int | None) -> tuple[str, int]:
    try:
        alerts.delete_channel(db(), channel_id, organisation_id=organisation_id)
    except alerts.ChannelNotFoundError:
        raise Problem(404, "Not Found", f"No alert channel {channel_id}.") from None
    return "", 204


def _alerts(organisation_id: int | None) -> Response:
    rows = alerts.page(db(), organisation_id=organisation_id, status=query(AlertQuery).status)
    return jsonify(AlertList(items=[AlertOut.model_validate(r) for r in rows]).model_dump(mode="json"))


def _routes(prefix: str, scope: str, tag: str, org: Callable[[], int | None], who: str) -> None:
    """The same four routes for an organisation's channels and for the operators' global ones."""
    tags = (tag,)
    create = documented(Operation(f"Add an alert channel ({who})", audit="alert_channel.create",
                                  audit_resource="AlertChannel", body=ChannelIn, response=ChannelOut, status=201,
                                  errors=(401, 403, 422), tags=tags))(transactional(lambda: _create(org())))
    list_ = documented(Operation(f"Alert channels ({who})", response=ChannelList, tags=tags))(
        transactional(lambda: _list(org())))
    delete = documented(Operation(f"Remove an alert channel ({who})", audit="alert_channel.delete",
                                  audit_resource="AlertChannel", status=204, errors=(401, 403, 404),
                                  tags=tags))(transactional(lambda channel_id: _delete(channel_id, org())))
    alerts_ = documented(Operation(f"Newest alerts ({who})", query=AlertQuery, response=AlertList,
                                   errors=(401, 403, 422), tags=tags))(transactional(lambda: _alerts(org())))
    name = prefix.strip("/").replace("/", "_").replace("-", "_")
    blueprint.add_url_rule(f"{prefix}/channels", f"{name}_create_channel", requires(scope)(create), methods=["POST"])
    blueprint.add_url_rule(f"{prefix}/channels", f"{name}_list_channels", requires(scope)(list_), methods=["GET"])
    blueprint.add_url_rule(f"{prefix}/channels/<int:channel_id>", f"{name}_delete_channel", requires(scope)(delete),
                           methods=["DELETE"])
    blueprint.add_url_rule(f"{prefix}", f"{name}_list_alerts", requires(scope)(alerts_), methods=["GET"])


_routes("/alerts", "webhooks:manage", "alerts", lambda: current_caller().organisation_id, "this organisation")
_routes("/admin/alerts", "admin", "admin", lambda: None, "global: every organisation's alerts and the platform's")
