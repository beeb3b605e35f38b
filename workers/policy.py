"""Classify a failed attempt: retry (when), dead-letter, postpone, or requeue after a drain."""

from __future__ import annotations

import random
import traceback
from datetime import UTC, datetime, timedelta

from app.models import JobStatus
from jobs.errors import MAX_REQUESTED_DELAY, DrainInterrupt, PermanentError, Postpone, TransientError
from jobs.spec import JobSpec
from workers.ledger import Claim, Outcome


def _requested(delay: float) -> float:
    return min(max(delay, 0.0), MAX_REQUESTED_DELAY)


def _failed(
    outcome: str, status: JobStatus, exc: BaseException, delta: int = 0, at: datetime | None = None
) -> Outcome:
    return Outcome(
        outcome,
        status,
        attempt_delta=delta,
        next_attempt_at=at,
        error_type=type(exc).__name__,
        error_message=str(exc)[:2000],
        traceback="".join(traceback.format_exception(exc))[-20000:],
    )


def decide(exc: BaseException, claim: Claim, spec: JobSpec, rng: random.Random) -> tuple[Outcome, float]:
    """The ledger outcome of a failed attempt and the seconds until the job should run again."""
    now = datetime.now(UTC)
    if isinstance(exc, DrainInterrupt):
        return Outcome("interrupted", JobStatus.QUEUED, attempt_delta=-1), 0.0
    if isinstance(exc, Postpone):
        delay = _requested(exc.delay)
        at = now + timedelta(seconds=delay)
        return _failed("postponed", JobStatus.RETRYING, exc, -1, at), delay
    if isinstance(exc, PermanentError) or claim.attempt >= claim.max_attempts:
        return _failed("dead", JobStatus.DEAD, exc), 0.0
    if isinstance(exc, TransientError) and exc.retry_after is not None:
        delay = _requested(exc.retry_after)
    else:
        delay = spec.backoff.delay(claim.attempt, rng)
    return _failed("retrying", JobStatus.RETRYING, exc, 0, now + timedelta(seconds=delay)), delay
