"""How a job says what went wrong, so the worker knows whether to retry, dead-letter or wait."""

from __future__ import annotations


class PermanentError(Exception):
    """Retrying cannot help (validation, unparseable input, a 4xx): straight to the dead letters."""


class TransientError(Exception):
    """May succeed later (timeout, 429/5xx, connection error, deadlock): retry with backoff.

    `retry_after` (seconds) is honoured instead of the backoff, e.g. from a Retry-After header.
    Any exception that is not a PermanentError is treated as transient too.
    """

    def __init__(self, message: str = "", *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Postpone(Exception):
    """Not attempted (an open circuit breaker): run again after `delay` seconds, no attempt spent."""

    def __init__(self, delay: float, reason: str = "postponed") -> None:
        super().__init__(reason)
        self.delay = delay


class DrainInterrupt(BaseException):
    """Raised inside a job when a draining worker's deadline passes: requeue, no attempt spent.

    A BaseException so that a job's own `except Exception` cannot swallow it.
    """


#: The longest wait a job may ask for through retry_after or Postpone (one day).
MAX_REQUESTED_DELAY = 24 * 3600.0
