"""The worker's claim: once per attempt, and idempotent for the worker that holds it."""

from __future__ import annotations

from app.runtime import Runtime
from app.services.jobs import submit
from tests.conftest import ledger
from tests.support.kinds import effect
from workers.ledger import Ledger


def test_a_retried_claim_is_the_same_claim_and_no_one_else_gets_it(clean: Runtime, org_id: int) -> None:
    with clean.sessions.begin() as session:
        job_id = submit(session, effect, "c1", organisation_id=org_id).id
    claims = Ledger(clean.engine)
    first = claims.claim(job_id, "worker-a")
    again = claims.claim(job_id, "worker-a")  # its reply was lost: the retry must not strand the job
    assert first is not None and again is not None and first.attempt == again.attempt == 1
    assert claims.claim(job_id, "worker-b") is None
    assert (ledger(clean, job_id).status, ledger(clean, job_id).attempts) == ("running", 1)
