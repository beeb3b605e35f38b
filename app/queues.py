"""The queue catalogue: names operators see, in the order workers serve them."""

from __future__ import annotations

from dataclasses import dataclass

from jobs.backoff import Backoff, Exponential, Schedule


@dataclass(frozen=True)
class QueuePolicy:
    """Defaults for the job kinds on one queue (a kind may override any of them)."""

    name: str
    timeout: int
    max_attempts: int
    backoff: Backoff


#: Workers serve these in this order: a job on an earlier queue always goes first.
CATALOGUE: tuple[QueuePolicy, ...] = (
    QueuePolicy("critical", 30, 5, Exponential(base=1, cap=60)),
    QueuePolicy("hl7.inbound", 60, 3, Exponential(base=2, cap=300)),
    QueuePolicy("hl7.outbound", 60, 5, Exponential(base=2, cap=600)),
    QueuePolicy(
        "webhooks",
        30,
        8,
        # The first attempt runs at once; these are the waits before retries 1..7.
        Schedule(delays=(5, 300, 1800, 7200, 18000, 36000, 36000), jitter=0.2),
    ),
    QueuePolicy("reminders", 60, 3, Exponential(base=10, cap=600)),
    QueuePolicy("reports", 300, 3, Exponential(base=10, cap=600)),
    QueuePolicy("maintenance", 300, 3, Exponential(base=30, cap=900)),
)

QUEUE_NAMES: tuple[str, ...] = tuple(q.name for q in CATALOGUE)
_BY_NAME = {q.name: q for q in CATALOGUE}


class UnknownQueueError(ValueError):
    """A queue name that is not in the catalogue."""


def policy_for(name: str) -> QueuePolicy:
    """The catalogue entry for a queue name, or UnknownQueueError."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise UnknownQueueError(f"unknown queue {name!r}; known: {', '.join(QUEUE_NAMES)}") from None


def ordered(names: list[str] | tuple[str, ...]) -> list[str]:
    """The given queue names, validated, in catalogue priority order."""
    for name in names:
        policy_for(name)
    return [q for q in QUEUE_NAMES if q in names]
