"""The monitor: turns platform conditions into events and alerts, run by the scheduler process.

Each pass (every `alert_interval` seconds, by the scheduler that holds rq-scheduler's lock):
- every job dead-lettered since the last pass, whoever buried it (a worker, the reconciler),
  gets a `job.dead_lettered` event (webhooks) and, on the `critical` queue, a critical alert;
- the dead letters past `alert_dead_letters` raise an alert, resolved when they fall below;
- a queue whose oldest waiting job is older than `alert_queue_age` raises an alert (paused
  queues excepted), resolved once it moves again.
A pass is idempotent (events and open alerts are deduplicated), so two schedulers are harmless.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.orm import Session

from app.queues import QUEUE_NAMES
from app.runtime import Runtime
from app.services import alerts, events
from app.services.operations import paused_queues
from app.services.webhook_deliveries import DELIVER_KIND

log = logging.getLogger(__name__)

_NEWLY_DEAD = text(
    """
    SELECT id, organisation_id, kind, queue, attempts, last_error_type, finished_at FROM jobs j
    WHERE status = 'dead' AND finished_at > now() - interval '1 day'
      AND NOT EXISTS (SELECT 1 FROM events e WHERE e.dedupe_key =
                      'job.dead_lettered:' || j.id || ':' || floor(extract(epoch FROM j.finished_at))::bigint)
    ORDER BY id LIMIT 500
    """
)
_DEAD_COUNT = text("SELECT count(*) FROM jobs WHERE status = 'dead'")
_OLDEST_QUEUED = text(
    "SELECT queue, extract(epoch FROM now() - min(updated_at)) FROM jobs WHERE status = 'queued' GROUP BY queue"
)


def _dead_lettered(session: Session) -> int:
    rows = session.execute(_NEWLY_DEAD).all()
    for row in rows:
        subject = f"{row.id}:{int(row.finished_at.timestamp())}"
        events.emit(session, organisation_id=row.organisation_id, type="job.dead_lettered", subject=subject,
                    payload={"job_id": row.id, "kind": row.kind, "queue": row.queue, "attempts": row.attempts,
                             "error_type": row.last_error_type},
                    # A dead delivery is not announced by webhook: to a failing endpoint, that would loop.
                    deliver=row.kind != DELIVER_KIND)
        if row.queue == "critical":
            alerts.trigger(session, alerts.Condition(
                row.organisation_id, "critical_dead_letter", str(row.id), "critical",
                f"Job {row.id} ({row.kind}) on the critical queue was dead-lettered after {row.attempts} "
                f"attempt(s) ({row.last_error_type}).", {"job_id": row.id, "kind": row.kind}))
    return len(rows)


def _dead_letters_high(session: Session, threshold: int) -> None:
    count = int(session.execute(_DEAD_COUNT).scalar_one())
    if count >= threshold:
        alerts.trigger(session, alerts.Condition(None, "dead_letters_high", "all", "error",
                                                 f"{count} jobs are in the dead letters (threshold {threshold}).",
                                                 {"dead_letters": count, "threshold": threshold}))
    else:
        alerts.resolve(session, None, "dead_letters_high", "all")


def _stalled_queues(session: Session, limit: float, paused: set[str]) -> None:
    ages = {row.queue: float(row[1]) for row in session.execute(_OLDEST_QUEUED)}
    for queue in QUEUE_NAMES:
        age = ages.get(queue, 0.0)
        if age >= limit and queue not in paused:
            alerts.trigger(session, alerts.Condition(
                None, "queue_stalled", queue, "critical" if queue == "critical" else "error",
                f"Queue {queue}: the oldest waiting job has waited {age:.0f} s (threshold {limit:.0f} s).",
                {"queue": queue, "oldest_seconds": round(age), "threshold_seconds": limit}))
        elif age < limit:
            alerts.resolve(session, None, "queue_stalled", queue)


@dataclass
class Monitor:
    """Runs a pass when one is due."""

    runtime: Runtime
    last_pass: float = 0.0

    def run_if_due(self) -> bool:
        """One pass if `alert_interval` has elapsed since the last; whether it ran."""
        if time.monotonic() - self.last_pass < self.runtime.settings.alert_interval:
            return False
        self.run_once()
        self.last_pass = time.monotonic()
        return True

    def run_once(self) -> None:
        """Check every condition once, in one transaction."""
        settings = self.runtime.settings
        paused = paused_queues(self.runtime.redis)
        with self.runtime.sessions.begin() as session:
            buried = _dead_lettered(session)
            _dead_letters_high(session, settings.alert_dead_letters)
            _stalled_queues(session, settings.alert_queue_age, paused)
        if buried:
            log.info("Monitor: %s newly dead-lettered job(s) reported at %s", buried, datetime.now(UTC).isoformat())
