"""Classifying a failed attempt: retry, dead letter, postpone, drain."""

from __future__ import annotations

import random

from app.models import JobStatus
from jobs.backoff import Exponential
from jobs.errors import DrainInterrupt, PermanentError, Postpone, TransientError
from jobs.spec import JobSpec
from workers.ledger import Claim
from workers.policy import decide

SPEC = JobSpec("k", func=print, queue="critical", timeout=30, max_attempts=5, backoff=Exponential(1, 60))


def claim(attempt: int) -> Claim:
    return Claim(job_id=1, attempt=attempt, max_attempts=5, kind="k")


def test_permanent_error_is_dead_at_once() -> None:
    outcome, _ = decide(PermanentError("bad input"), claim(1), SPEC, random.Random(0))
    assert outcome.status is JobStatus.DEAD and outcome.error_type == "PermanentError"


def test_transient_error_retries_within_the_backoff_ceiling() -> None:
    outcome, delay = decide(TransientError("timeout"), claim(3), SPEC, random.Random(0))
    assert outcome.status is JobStatus.RETRYING and outcome.attempt_delta == 0
    assert 0 <= delay <= 4


def test_unknown_exception_counts_as_transient() -> None:
    outcome, _ = decide(KeyError("x"), claim(1), SPEC, random.Random(0))
    assert outcome.status is JobStatus.RETRYING


def test_last_attempt_is_dead_even_when_transient() -> None:
    outcome, _ = decide(TransientError("timeout"), claim(5), SPEC, random.Random(0))
    assert outcome.status is JobStatus.DEAD and outcome.final


def test_retry_after_is_honoured_instead_of_backoff() -> None:
    _, delay = decide(TransientError("429", retry_after=120), claim(1), SPEC, random.Random(0))
    assert delay == 120


def test_postpone_spends_no_attempt() -> None:
    outcome, delay = decide(Postpone(30, "breaker open"), claim(5), SPEC, random.Random(0))
    assert outcome.status is JobStatus.RETRYING and outcome.attempt_delta == -1 and delay == 30


def test_drain_interrupt_requeues_without_spending_an_attempt() -> None:
    outcome, _ = decide(DrainInterrupt(), claim(2), SPEC, random.Random(0))
    assert outcome.status is JobStatus.QUEUED and outcome.attempt_delta == -1 and outcome.error_type is None
