"""One SIGALRM clock for the job in hand: its timeout, and a draining worker's deadline.

RQ's own death penalty owns SIGALRM for the job timeout only; a draining worker also needs
to interrupt the job when its drain deadline passes. This clock arms the timer for whichever
comes first and raises the matching exception in the main thread.
"""

from __future__ import annotations

import math
import signal
import time
from types import FrameType
from typing import Any

from rq.timeouts import BaseDeathPenalty, JobTimeoutException

from jobs.errors import DrainInterrupt


class _Clock:
    def __init__(self) -> None:
        self.job_deadline: float | None = None
        self.drain_deadline: float | None = None
        self.timeout = 0.0
        self.exception: type[BaseException] = JobTimeoutException

    def _arm(self) -> None:
        first = math.inf if self.job_deadline is None else min(self.job_deadline, self.drain_deadline or math.inf)
        if first == math.inf:
            signal.setitimer(signal.ITIMER_REAL, 0)
        else:
            signal.setitimer(signal.ITIMER_REAL, max(first - time.monotonic(), 0.001))

    def _fire(self, signum: int, frame: FrameType | None) -> None:
        now = time.monotonic()
        if self.job_deadline is None:
            return
        if self.drain_deadline is not None and now >= self.drain_deadline:
            self.job_deadline = None
            raise DrainInterrupt("drain deadline passed; job put back on its queue")
        if now >= self.job_deadline:
            self.job_deadline = None
            raise self.exception(f"Job exceeded its timeout of {self.timeout:g} s")
        self._arm()

    def start_job(self, timeout: float, exception: type[BaseException]) -> None:
        self.timeout, self.exception = timeout, exception
        self.job_deadline = time.monotonic() + timeout if timeout > 0 else math.inf
        signal.signal(signal.SIGALRM, self._fire)
        self._arm()

    def end_job(self) -> None:
        self.job_deadline = None
        signal.setitimer(signal.ITIMER_REAL, 0)

    def drain(self, seconds: float) -> None:
        """Interrupt the job in hand (if any) `seconds` from now; 0 interrupts it at once."""
        deadline = time.monotonic() + seconds
        self.drain_deadline = deadline if self.drain_deadline is None else min(self.drain_deadline, deadline)
        if self.job_deadline is not None:
            self._arm()

    @property
    def busy(self) -> bool:
        return self.job_deadline is not None


#: The process's clock: a worker process runs one job at a time in its main thread.
CLOCK = _Clock()


class DeadlinePenalty(BaseDeathPenalty):
    """RQ death penalty that shares SIGALRM with the drain deadline."""

    def __init__(self, timeout: Any, exception: type[BaseException] = JobTimeoutException, **kwargs: Any) -> None:
        super().__init__(timeout, exception, **kwargs)  # type: ignore[no-untyped-call]

    def setup_death_penalty(self) -> None:
        """Arm the clock for this job (or callback)."""
        CLOCK.start_job(float(self._timeout or 0), self._exception)

    def cancel_death_penalty(self) -> None:
        """Disarm the clock."""
        CLOCK.end_job()
