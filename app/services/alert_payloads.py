"""The bodies alert channels expect: PagerDuty Events API v2 and Slack incoming webhooks.

Both carry the alert's summary (ids, codes and counts only, never PHI) and its dedup key;
PagerDuty uses the key to group a trigger with its resolve.
"""

from __future__ import annotations

from typing import Any

from app.models import Alert
from app.services.egress import Response

_SLACK_ICON = {"critical": ":rotating_light:", "error": ":red_circle:", "warning": ":warning:",
               "info": ":information_source:"}


def pagerduty(alert: Alert, action: str, routing_key: str) -> dict[str, Any]:
    """An Events v2 `trigger` (summary ≤ 1024 characters) or `resolve` for the alert's dedup key."""
    event: dict[str, Any] = {"routing_key": routing_key, "event_action": action, "dedup_key": alert.dedup_key}
    if action == "resolve":
        return event
    group = f"organisation-{alert.organisation_id}" if alert.organisation_id is not None else "platform"
    event["payload"] = {
        "summary": alert.summary[:1024],
        "source": "triage",
        "severity": alert.severity,
        "timestamp": alert.triggered_at.isoformat(),
        "component": alert.condition,
        "group": group,
        "class": alert.condition,
        "custom_details": alert.details,
    }
    event["client"] = "Triage"
    return event


def slack(alert: Alert, action: str) -> dict[str, Any]:
    """A message with `text` (for notifications) and blocks (for the channel)."""
    if action == "resolve":
        text = f":white_check_mark: Resolved: {alert.summary}"
    else:
        text = f"{_SLACK_ICON.get(alert.severity, '')} [{alert.severity.upper()}] {alert.summary}"
    context = f"`{alert.condition}` · dedup key `{alert.dedup_key}` · triggered {alert.triggered_at.isoformat()}"
    return {
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": text}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": context}]},
        ],
    }


def slack_accepted(response: Response) -> bool:
    """Slack succeeded only with 200 and the body `ok`."""
    return response.status == 200 and response.body.strip() == b"ok"


def permanent(kind: str, status: int | None) -> bool:
    """A refusal that retrying cannot fix (a bad key or payload), as opposed to 429/5xx/timeouts."""
    if status is None or status == 429 or status >= 500:
        return False
    return 400 <= status < 500 or (kind == "slack" and status != 200)
