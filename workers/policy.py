"""Classify a failed attempt: retry (when), dead-letter, postpone, or requeue after a drain."""

from __future__ import annotations

import random
import traceback
from datetime import datetime, timedelta, timezone


from app.models import JobStatus
from jobs.errors import MAX_REQUESTED_DELAY, DrainInterrupt, PermanentError, Postpone, TransientError
from jobs.spec import JobSpec
from workers.ledger import Claim, Outcome


def _requested(delay: float) -> float:
    return min(max(delay, 0.0), MAX_REQUESTED_DELAY)


def _error_fields(exc: BaseException) -> dict[str, str]:
    return {
        "error_type": type(exc).__name__,
        "error_message": str(exc)[:2000],
        "traceback": "".join(traceback.format_exception(exc))[-20000:],
    }


def decide(exc: BaseException, claim: Claim, spec: JobSpec, rng: random.Random) -> tuple[Outcome, float]:
    """The ledger outcome of a failed attempt and the seconds until the job should run again."""
    now = datetime.now(timezone.utc)
    if isinstance(exc, DrainInterrupt):
        return Outcome("interrupted", JobStatus.QUEUED, attempt_delta=-1), 0.0
    if isinstance(exc, Postpone):
        delay = _requested(exc.delay)
        at = now + timedelta(seconds=delay)
        return Outcome("postponed", JobStatus.RETRYING, -1, at, **_error_fields(exc)), delay
    fields = _error_fields(exc)
    if isinstance(exc, PermanentError) or claim.attempt >= claim.max_attempts:
        return Outcome("dead", JobStatus.DEAD, **fields), 0.0
    if isinstance(exc, TransientError) and exc.retry_after is not None:
        delay = _requested(exc.retry_after)
    else:
        delay = spec.backoff.delay(claim.attempt, rng)
    return Outcome("retrying", JobStatus.RETRYING, 0, now + timedelta(seconds=delay), **fields), delay
