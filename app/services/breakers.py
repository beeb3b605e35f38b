"""Circuit breakers shared by every process through Redis: pybreaker with its Redis storage.

One breaker per outbound target (`webhook-endpoint-12`, `alert-channel-3`). Every process that
calls the target sees and moves the same state, so after `fail_max` consecutive failures anywhere
all workers hold back until the reset timeout lets trial calls through (half-open).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pybreaker import STATE_CLOSED, CircuitBreaker, CircuitRedisStorage
from redis import Redis

#: Every breaker ever used, so operators can list them.
REGISTRY_KEY = "triage:breakers"
#: Gauge values for the breaker state metric.
STATE_VALUES = {"closed": 0, "open": 1, "half-open": 2}

_CACHE: dict[tuple[int, str], CircuitBreaker] = {}


@dataclass(frozen=True)
class BreakerView:
    """What operators see of one breaker."""

    name: str
    state: str
    failures: int
    opened_at: datetime | None
    half_opens_at: datetime | None


class UnknownBreakerError(LookupError):
    """No breaker of that name has been used."""


def _not_a_failure(exc: BaseException) -> bool:
    return not isinstance(exc, Exception)


def breaker(redis: Redis, name: str, *, fail_max: int, reset_seconds: float) -> CircuitBreaker:
    """The process's handle on a shared breaker (state and counters live in Redis)."""
    key = (id(redis), name)
    found = _CACHE.get(key)
    if found is None:
        redis.sadd(REGISTRY_KEY, name)
        storage = CircuitRedisStorage(STATE_CLOSED, redis, namespace=f"triage:{name}")
        # A drain or shutdown (BaseException) interrupting a call says nothing about the target.
        found = CircuitBreaker(fail_max=fail_max, reset_timeout=reset_seconds, state_storage=storage, name=name,
                               throw_new_error_on_trip=False, exclude=[_not_a_failure])
        _CACHE[key] = found
    found.fail_max, found.reset_timeout = fail_max, reset_seconds
    return found


def wait_seconds(cb: CircuitBreaker) -> float:
    """Seconds until an open breaker lets a trial call through (0 when it already would)."""
    opened_at = cb._state_storage.opened_at  # pybreaker has no public getter for it
    if cb.current_state != "open" or opened_at is None:
        return 0.0
    remaining = (opened_at + timedelta(seconds=cb.reset_timeout) - datetime.now(UTC)).total_seconds()
    return max(0.0, remaining)


def _view(cb: CircuitBreaker) -> BreakerView:
    opened_at = cb._state_storage.opened_at
    state = cb.current_state
    half = opened_at + timedelta(seconds=cb.reset_timeout) if state == "open" and opened_at else None
    return BreakerView(cb.name or "", state, cb.fail_counter, opened_at if state != "closed" else None, half)


def names(redis: Redis) -> list[str]:
    """The names of every breaker used so far."""
    return sorted(n.decode() if isinstance(n, bytes) else str(n) for n in redis.smembers(REGISTRY_KEY))


def views(redis: Redis, *, fail_max: int, reset_seconds: float) -> list[BreakerView]:
    """Every breaker with its state and failure count."""
    return [_view(breaker(redis, n, fail_max=fail_max, reset_seconds=reset_seconds)) for n in names(redis)]


def reset(redis: Redis, name: str, *, fail_max: int, reset_seconds: float) -> BreakerView:
    """Force a breaker closed (operators, after fixing the target)."""
    if name not in names(redis):
        raise UnknownBreakerError(f"no breaker named {name!r}")
    cb = breaker(redis, name, fail_max=fail_max, reset_seconds=reset_seconds)
    cb.close()
    return _view(cb)
