"""What every outbound HTTP job (webhook deliveries, alert notifications) does around the call:
hold back while the target's shared breaker is open or its rate is used up (postpone, no attempt
spent), then POST through the SSRF-checked egress inside the breaker."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

from limits import RateLimitItemPerMinute
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter
from pybreaker import CircuitBreaker, CircuitBreakerError

from app.runtime import Runtime
from app.services import breakers, egress
from jobs.errors import Postpone


@dataclass(frozen=True)
class Sent:
    """What a call produced: a response (any status) or the error that prevented one."""

    response: egress.Response | None = None
    error: str | None = None
    refused: bool = False  # the URL now resolves to a forbidden address
    breaker_opened: bool = False  # this failure opened the target's breaker
    breaker_closed: bool = False  # this success closed a breaker that was open or half-open

    @property
    def status(self) -> int | None:
        """The HTTP status, if a response came back."""
        return self.response.status if self.response else None


class Unsuccessful(Exception):
    """A response the caller counts as a failure (for the breaker)."""

    def __init__(self, response: egress.Response) -> None:
        super().__init__(f"HTTP {response.status}")
        self.response = response


class BreakerOpen(Postpone):
    """Held back: the target's breaker is open."""


class RateLimited(Postpone):
    """Held back: the target's per-minute rate is used up."""


_rng = random.SystemRandom()


@lru_cache(maxsize=4)
def _limiter(redis_url: str) -> FixedWindowRateLimiter:
    return FixedWindowRateLimiter(storage_from_string(redis_url))


def target_breaker(runtime: Runtime, name: str) -> CircuitBreaker:
    """The target's breaker, shared by every worker through Redis."""
    s = runtime.settings
    return breakers.breaker(runtime.redis, name, fail_max=s.breaker_fail_max, reset_seconds=s.breaker_reset_seconds)


def hold_back(runtime: Runtime, cb: CircuitBreaker, rate_limit: int | None) -> None:
    """Postpone (no attempt spent) while the breaker is open or the target's per-minute rate is used up."""
    wait = breakers.wait_seconds(cb)
    if wait > 0:  # jittered, so the held-back jobs do not all wake in the same instant
        raise BreakerOpen(wait + _rng.uniform(0, min(5.0, wait * 0.2)), f"circuit breaker {cb.name} is open")
    if rate_limit:
        limiter, item = _limiter(runtime.settings.redis_url), RateLimitItemPerMinute(rate_limit)
        if not limiter.hit(item, "outbound", cb.name or ""):
            reset_at = limiter.get_window_stats(item, "outbound", cb.name or "").reset_time
            raise RateLimited(max(1.0, reset_at - datetime.now(UTC).timestamp()), f"rate limit of {cb.name} reached")


def is_2xx(response: egress.Response) -> bool:
    """The usual success: any 2xx status."""
    return 200 <= response.status < 300


def call(runtime: Runtime, cb: CircuitBreaker, url: str, body: bytes, headers: dict[str, str],
         *, timeout: float, accept: Callable[[egress.Response], bool] = is_2xx) -> Sent:
    """POST inside the breaker; an answer `accept` refuses is a failure (and counts against the breaker)."""
    before = cb.current_state
    try:
        with cb.calling():
            response = egress.post(url, body, headers, timeout=timeout,
                                   allow_loopback=runtime.settings.egress_allow_loopback)
            if not accept(response):
                raise Unsuccessful(response)
    except CircuitBreakerError:
        raise BreakerOpen(max(1.0, breakers.wait_seconds(cb)), f"circuit breaker {cb.name} opened meanwhile") from None
    except Unsuccessful as failed:
        return Sent(failed.response, breaker_opened=_opened(cb, before))
    except egress.EgressRefusedError as exc:
        return Sent(error=str(exc)[:500], refused=True, breaker_opened=_opened(cb, before))
    except egress.EgressFailedError as exc:
        return Sent(error=str(exc)[:500], breaker_opened=_opened(cb, before))
    return Sent(response, breaker_closed=before != "closed")


def _opened(cb: CircuitBreaker, before: str) -> bool:
    return before != "open" and cb.current_state == "open"
