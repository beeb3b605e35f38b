"""Alert job kind: tell one channel (PagerDuty or Slack) that an alert triggered or resolved.

Queued on `critical` so a flood of other work never delays it; retried on 429/5xx/timeouts
(honouring Retry-After), dead on a refusal retrying cannot fix; held back, without spending an
attempt, while the channel's breaker is open or its per-minute rate is used up.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from sqlalchemy import func

from app.models import Alert, AlertChannel, AlertNotification
from app.runtime import Runtime, current
from app.secrets_at_rest import box_for
from app.services import alert_payloads, alerts, egress
from jobs import outbound_http
from jobs.attempts import attempt_number
from jobs.errors import PermanentError, Postpone, TransientError
from jobs.outbound_http import Sent
from jobs.spec import job_kind

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Message:
    """One notification, ready to send."""

    channel_id: int
    kind: str
    url: str
    body: bytes
    rate_limit: int
    last: bool


def _message(runtime: Runtime, notification_id: int) -> Message | str | None:
    """The message to send; None when already sent; a reason when it cannot be sent."""
    with runtime.sessions.begin() as session:
        note = session.get(AlertNotification, notification_id, with_for_update=True)
        if note is None or note.status != "pending":
            return None
        channel, alert = session.get_one(AlertChannel, note.channel_id), session.get_one(Alert, note.alert_id)
        if not channel.enabled:
            note.status, note.last_error = "dead", "channel disabled"
            return f"alert channel {channel.id} is disabled"
        box = box_for(runtime.settings.require_encryption_keys())
        if channel.kind == "pagerduty":
            key = box.open(channel.routing_key_ciphertext or "")
            document = alert_payloads.pagerduty(alert, note.action, key)
        else:
            document = alert_payloads.slack(alert, note.action)
        body = json.dumps(document, separators=(",", ":")).encode()
        _, last = attempt_number(session, note.job_id, note.attempts)
        return Message(channel.id, channel.kind, box.open(channel.url_ciphertext), body, channel.rate_limit_per_minute,
                       last)


def _settle(runtime: Runtime, notification_id: int, message: Message, sent: Sent) -> Exception | None:
    accepted = sent.response is not None and (
        alert_payloads.slack_accepted(sent.response) if message.kind == "slack" else 200 <= sent.response.status < 300)
    error = sent.error or (None if accepted else f"HTTP {sent.status}")
    with runtime.sessions.begin() as session:
        note = session.get_one(AlertNotification, notification_id, with_for_update=True)
        note.attempts += 1
        note.last_status_code, note.last_error = sent.status, error
        if accepted:
            note.status, note.sent_at = "sent", func.now()
            return None
        if sent.refused or alert_payloads.permanent(message.kind, sent.status) or message.last:
            note.status = "dead"
            return PermanentError(f"alert channel {message.channel_id} did not take the notification: {error}")
    retry_after = egress.retry_after(sent.response.headers) if sent.response else None
    return TransientError(f"alert channel {message.channel_id}: {error}", retry_after=retry_after)


def _breaker_alert(runtime: Runtime, channel_id: int, sent: Sent) -> None:
    if not (sent.breaker_opened or sent.breaker_closed):
        return
    name = f"alert-channel-{channel_id}"
    with runtime.sessions.begin() as session:
        if sent.breaker_opened:
            alerts.trigger(session, alerts.Condition(None, "breaker_open", name, "error",
                                                     f"Circuit breaker {name} opened after repeated failures.",
                                                     {"breaker": name}))
        else:
            alerts.resolve(session, None, "breaker_open", name)


def _give_up(runtime: Runtime, notification_id: int, exc: Exception) -> None:
    with runtime.sessions.begin() as session:
        note = session.get_one(AlertNotification, notification_id, with_for_update=True)
        note.status, note.last_error = "dead", f"last attempt interrupted: {type(exc).__name__}"


@job_kind(alerts.SEND_KIND, queue="critical")
def send(notification_id: int) -> None:
    """Deliver one alert notification to its channel."""
    runtime = current()
    message = _message(runtime, notification_id)
    if message is None:
        return
    if isinstance(message, str):
        raise PermanentError(message)
    cb = outbound_http.target_breaker(runtime, f"alert-channel-{message.channel_id}")
    outbound_http.hold_back(runtime, cb, message.rate_limit)
    accept = alert_payloads.slack_accepted if message.kind == "slack" else outbound_http.is_2xx
    try:
        sent = outbound_http.call(runtime, cb, message.url, message.body, {"content-type": "application/json"},
                                  timeout=runtime.settings.webhook_timeout, accept=accept)
    except Exception as exc:  # a timeout or outage mid-attempt: the notification must not stay pending forever
        if message.last and not isinstance(exc, Postpone):
            _give_up(runtime, notification_id, exc)
        raise
    _breaker_alert(runtime, message.channel_id, sent)
    error = _settle(runtime, notification_id, message, sent)
    if error is not None:
        raise error
