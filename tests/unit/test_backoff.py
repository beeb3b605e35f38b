"""Backoff: bounds, caps and jitter, reproducible with a seed."""

from __future__ import annotations

import random

import pytest

from app.queues import CATALOGUE, policy_for
from jobs.backoff import Exponential, Schedule


def test_exponential_full_jitter_stays_within_the_doubling_ceiling_and_cap() -> None:
    backoff = Exponential(base=1, cap=60)
    rng = random.Random(7)
    for attempt in range(1, 12):
        ceiling = min(60, 2 ** (attempt - 1))
        delays = [backoff.delay(attempt, rng) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        # full jitter spreads over the whole range, not just near the ceiling
        assert min(delays) < ceiling * 0.2 and max(delays) > ceiling * 0.8


def test_jitter_is_reproducible_with_a_seed_and_varies_without_one() -> None:
    backoff = Exponential(base=2, cap=300)
    first = [backoff.delay(4, random.Random(42)) for _ in range(3)]
    assert first[0] == first[1] == first[2]
    rng = random.Random(42)
    assert len({backoff.delay(4, rng) for _ in range(10)}) == 10


def test_schedule_uses_its_delays_in_order_then_repeats_the_last_within_jitter() -> None:
    schedule = Schedule(delays=(5, 300, 1800), jitter=0.1)
    rng = random.Random(1)
    for attempt, base in [(1, 5), (2, 300), (3, 1800), (9, 1800)]:
        delay = schedule.delay(attempt, rng)
        assert base * 0.9 <= delay <= base * 1.1


def test_webhook_queue_follows_the_long_schedule_with_twenty_percent_jitter() -> None:
    backoff = policy_for("webhooks").backoff
    rng = random.Random(3)
    firsts = [backoff.delay(1, rng) for _ in range(200)]
    assert all(4.0 <= d <= 6.0 for d in firsts) and min(firsts) < 4.5 and max(firsts) > 5.5
    assert all(28800 <= backoff.delay(7, rng) <= 43200 for _ in range(50))


@pytest.mark.parametrize("policy", CATALOGUE, ids=lambda p: p.name)
def test_every_queue_has_a_bounded_policy(policy) -> None:  # type: ignore[no-untyped-def]
    assert policy.timeout > 0 and policy.max_attempts >= 1
    rng = random.Random(0)
    assert all(policy.backoff.delay(a, rng) >= 0 for a in range(1, policy.max_attempts + 1))
