"""The worker's side of the job ledger: claim a job, then record how its attempt ended.

Each call is one autocommit statement (one round trip): this is the hot path of every job.
Updates are fenced on (status = running, worker = me) so that a worker presumed dead cannot
overwrite what the reconciler decided after recovering its job.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import URL, Engine, create_engine, text
from sqlalchemy.exc import OperationalError
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_exponential

from app.models import JobStatus

# The claim's commit does not wait for the WAL flush: the finish's (synchronous) commit flushes it.
# A claim lost in a PostgreSQL crash leaves the job waiting in the ledger while Redis says
# started/finished, and the reconciler's loss sweep enqueues it again (at least once, as ever).
# SET LOCAL in the same query string: one round trip, transaction-scoped (fine behind a
# transaction-mode pooler; needs the simple query protocol, i.e. psycopg2 as pinned in config).
_CLAIM = text(
    """
    SET LOCAL synchronous_commit TO off;
    UPDATE jobs SET attempts = CASE WHEN status = 'running' THEN attempts ELSE attempts + 1 END,
        status = 'running', worker = :worker, started_at = now(), updated_at = now(), next_attempt_at = NULL
    WHERE id = :id AND (status IN ('pending', 'queued', 'retrying')
        -- a retry whose first try committed but lost its reply: the claim is already ours
        OR (status = 'running' AND worker = :worker))
    RETURNING attempts, max_attempts, kind
    """
)

_FINISH = text(
    """
    WITH j AS (
        UPDATE jobs SET status = :status, attempts = attempts + :delta, updated_at = now(),
            finished_at = CASE WHEN :final THEN now() ELSE NULL END,
            next_attempt_at = :next_attempt_at,
            last_error_type = COALESCE(:error_type, last_error_type),
            last_error_message = COALESCE(:error_message, last_error_message),
            last_error_traceback = COALESCE(:traceback, last_error_traceback)
        WHERE id = :id AND status = 'running' AND worker = :worker
        RETURNING id, attempts - :delta AS attempt, started_at
    )
    INSERT INTO job_attempts (job_id, attempt, worker, outcome, started_at, finished_at,
                              error_type, error_message, traceback)
    SELECT id, attempt, :worker, :outcome, started_at, now(), :error_type, :error_message, :traceback FROM j
    RETURNING job_id
    """
)

# A PostgreSQL blip must not turn a finished job into a crashed one: keep trying for a while
# (the lease thread keeps the claim alive meanwhile), then give up and let the reconciler decide.
_db_retry = retry(
    retry=retry_if_exception_type(OperationalError),
    stop=stop_after_delay(30),
    wait=wait_exponential(multiplier=0.2, max=2),
    reraise=True,
)


@dataclass(frozen=True)
class Claim:
    """A worker's hold on one attempt of a job."""

    job_id: int
    attempt: int
    max_attempts: int
    kind: str


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended and what the ledger should say next."""

    outcome: str  # succeeded | retrying | dead | postponed | interrupted | crashed
    status: JobStatus
    attempt_delta: int = 0  # -1 when the attempt does not count (postponed, interrupted)
    next_attempt_at: datetime | None = None
    error_type: str | None = None
    error_message: str | None = None
    traceback: str | None = None

    @property
    def final(self) -> bool:
        """Whether the job's life ends here."""
        return self.status in (JobStatus.SUCCEEDED, JobStatus.DEAD, JobStatus.CANCELLED)


SUCCEEDED = Outcome("succeeded", JobStatus.SUCCEEDED)


class Ledger:
    """Claims and attempt results, straight to PostgreSQL."""

    def __init__(self, engine: Engine, *, autocommit: bool = False) -> None:
        """A shared engine (each call switches its pooled connection to autocommit and back), or
        with autocommit=True one created AUTOCOMMIT."""
        self._engine = engine if autocommit else engine.execution_options(isolation_level="AUTOCOMMIT")

    @classmethod
    def dedicated(cls, url: str | URL) -> Ledger:
        """A worker's own connection: AUTOCOMMIT from the start and no pre-ping round trip (a
        dropped connection raises OperationalError before the statement runs; calls retry it)."""
        engine = create_engine(url, isolation_level="AUTOCOMMIT", pool_size=1, max_overflow=0, pool_recycle=1800,
                               hide_parameters=True)
        return cls(engine, autocommit=True)

    def close(self) -> None:
        """Close the connections of a dedicated ledger."""
        self._engine.dispose()

    @_db_retry
    def claim(self, job_id: int, worker: str) -> Claim | None:
        """Start an attempt; None when the job is not waiting (done, cancelled, running elsewhere)."""
        with self._engine.connect() as conn:
            row = conn.execute(_CLAIM, {"id": job_id, "worker": worker}).one_or_none()
        return None if row is None else Claim(job_id, row.attempts, row.max_attempts, row.kind)

    @_db_retry
    def finish(self, job_id: int, worker: str, outcome: Outcome) -> bool:
        """Record the attempt's end; False when this worker no longer holds the job."""
        params: dict[str, Any] = {
            "id": job_id,
            "worker": worker,
            "status": outcome.status.value,
            "delta": outcome.attempt_delta,
            "final": outcome.final,
            "next_attempt_at": outcome.next_attempt_at,
            "outcome": outcome.outcome,
            "error_type": outcome.error_type,
            "error_message": outcome.error_message,
            "traceback": outcome.traceback,
        }
        with self._engine.connect() as conn:
            return conn.execute(_FINISH, params).first() is not None
