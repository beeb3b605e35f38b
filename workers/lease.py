"""A worker's liveness lease in Redis, and the watchdog that kills a job ignoring its timeout."""

from __future__ import annotations

import logging
import os
import threading
import time

from redis import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

LEASE_PREFIX = "triage:alive:"
#: Exit code of a worker the watchdog killed; the supervisor restarts it.
WATCHDOG_EXIT = 70


def lease_key(worker_name: str) -> str:
    """The Redis key whose presence says a worker is alive."""
    return LEASE_PREFIX + worker_name


class Lease(threading.Thread):
    """Refreshes the lease every lease/4 s from a thread, so it stays alive while a job runs."""

    def __init__(self, redis: Redis, worker_name: str, *, lease_seconds: float, hard_kill_grace: float) -> None:
        super().__init__(name=f"lease-{worker_name}", daemon=True)
        self._redis = redis
        self._key = lease_key(worker_name)
        self._ttl_ms = int(lease_seconds * 1000)
        self._period = lease_seconds / 4
        self._grace = hard_kill_grace
        self._halt = threading.Event()
        self._hard_deadline: float | None = None
        self._job_id: str | None = None
        self._renewed_at = time.monotonic()
        # Past this long without a renewal, the reconciler may soon give our job to another worker.
        self._give_up_after = lease_seconds / 2

    def job_started(self, job_id: str, timeout: float) -> None:
        """Arm the watchdog for a job: past timeout + grace, the process is killed."""
        self._job_id = job_id
        self._hard_deadline = time.monotonic() + timeout + self._grace if timeout > 0 else None

    def job_finished(self) -> None:
        """Disarm the watchdog."""
        self._hard_deadline = None
        self._job_id = None

    def renew(self) -> None:
        """Set the lease now (also called once before the thread starts)."""
        self._redis.set(self._key, os.getpid(), px=self._ttl_ms)
        self._renewed_at = time.monotonic()

    def _die(self, why: str) -> None:
        log.critical("Job %s: %s; killing worker process %s", self._job_id, why, os.getpid())
        os._exit(WATCHDOG_EXIT)

    def run(self) -> None:
        while not self._halt.wait(self._period):
            deadline = self._hard_deadline
            if deadline is not None and time.monotonic() > deadline:
                self._die("ignored its timeout")
            try:
                self.renew()
            except RedisError as exc:
                log.warning("Worker lease %s: renewal failed (%s)", self._key, type(exc).__name__)
                if self._job_id is not None and time.monotonic() - self._renewed_at > self._give_up_after:
                    # Another worker may get this job: stop now rather than run it twice at once.
                    self._die("lease could not be renewed")

    def release(self) -> None:
        """Stop renewing and drop the lease (clean exit)."""
        self._halt.set()
        try:
            self._redis.delete(self._key)
        except RedisError:
            pass
