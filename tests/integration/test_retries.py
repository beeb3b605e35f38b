"""Retries, dead letters and requeues, run by a real worker process."""

from __future__ import annotations

from rq import Queue, Worker
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from app.runtime import Runtime
from app.services.jobs import requeue_dead, submit
from tests.conftest import Processes, effects, ledger, outcomes, wait_for
from tests.support.kinds import breaker, crash_prone, flaky


def submit_one(runtime: Runtime, org_id: int, func, *args) -> int:  # type: ignore[no-untyped-def]
    with runtime.sessions.begin() as session:
        return submit(session, func, *args, organisation_id=org_id).id


def status_is(runtime: Runtime, job_id: int, status: str):  # type: ignore[no-untyped-def]
    return lambda: ledger(runtime, job_id).status == status


def failed_ids(runtime: Runtime, queue: str = "critical") -> list[str]:
    return FailedJobRegistry(queue, connection=runtime.redis, serializer=JSONSerializer).get_job_ids()


def test_transient_failures_retry_then_succeed(clean: Runtime, procs: Processes, org_id: int) -> None:
    rt = clean
    job_id = submit_one(rt, org_id, flaky, "t1", 2)
    procs.worker("critical")
    wait_for(status_is(rt, job_id, "succeeded"), what="job to succeed after retries")
    row = ledger(rt, job_id)
    assert row.attempts == 3
    assert outcomes(rt, job_id) == ["retrying", "retrying", "succeeded"]
    assert row.last_error_type == "TransientError"
    assert failed_ids(rt) == []


def test_transient_failures_exhaust_attempts_and_dead_letter_exactly_once(clean: Runtime, procs: Processes, org_id: int) -> None:
    rt = clean
    job_id = submit_one(rt, org_id, crash_prone, "t2")
    procs.worker("critical")
    wait_for(status_is(rt, job_id, "dead"), what="job to be dead-lettered")
    row = ledger(rt, job_id)
    assert (row.attempts, row.max_attempts, row.last_error_type) == (2, 2, "RuntimeError")
    assert "unclassified failure" in row.last_error_traceback
    assert row.finished_at is not None
    assert outcomes(rt, job_id) == ["retrying", "dead"]
    assert failed_ids(rt) == [str(job_id)]
    assert len(effects(rt, "t2")) == 2


def test_permanent_failure_is_dead_after_one_attempt(clean: Runtime, procs: Processes, org_id: int) -> None:
    rt = clean
    job_id = submit_one(rt, org_id, flaky, "t3", 1, True)
    procs.worker("critical")
    wait_for(status_is(rt, job_id, "dead"), what="job to be dead-lettered")
    assert ledger(rt, job_id).attempts == 1
    assert outcomes(rt, job_id) == ["dead"]
    assert failed_ids(rt) == [str(job_id)]


def test_requeued_dead_job_runs_again_with_fresh_attempts(clean: Runtime, procs: Processes, org_id: int) -> None:
    rt = clean
    job_id = submit_one(rt, org_id, flaky, "t4", 1, True)
    procs.worker("critical")
    wait_for(status_is(rt, job_id, "dead"), what="job to be dead-lettered")
    with rt.sessions.begin() as session:
        requeue_dead(session, job_id)
    wait_for(status_is(rt, job_id, "succeeded"), what="requeued job to succeed")
    assert ledger(rt, job_id).attempts == 1
    assert outcomes(rt, job_id) == ["dead", "succeeded"]
    assert failed_ids(rt) == []


def test_a_stray_copy_of_a_dead_job_does_not_revive_it(clean: Runtime, procs: Processes, org_id: int) -> None:
    rt = clean
    job_id = submit_one(rt, org_id, flaky, "t5", 1, True)
    procs.worker("critical")
    wait_for(status_is(rt, job_id, "dead"), what="job to be dead-lettered")
    # a requeue behind the ledger's back (raw RQ): the worker must skip it, not run it with fresh attempts
    FailedJobRegistry("critical", connection=rt.redis, serializer=JSONSerializer).requeue(str(job_id))
    wait_for(lambda: Queue("critical", connection=rt.redis).count == 0, what="the stray copy to be taken")
    wait_for(lambda: Worker.all(connection=rt.redis)[0].get_state() == "idle", what="the worker to be done with it")
    assert ledger(rt, job_id).status == "dead" and outcomes(rt, job_id) == ["dead"]
    assert len(effects(rt, "t5")) == 1


def test_duplicate_copies_of_a_job_run_once(clean: Runtime, procs: Processes, org_id: int) -> None:
    rt = clean
    job_id = submit_one(rt, org_id, flaky, "t6", 0)
    Queue("critical", connection=rt.redis, serializer=JSONSerializer).push_job_id(str(job_id))  # a stray copy
    procs.worker("critical")
    wait_for(status_is(rt, job_id, "succeeded"), what="job to succeed")
    wait_for(lambda: Queue("critical", connection=rt.redis).count == 0, what="queue to drain")
    assert len(effects(rt, "t6")) == 1


def test_postponed_job_spends_no_attempt(clean: Runtime, procs: Processes, org_id: int) -> None:
    job_id = submit_one(clean, org_id, breaker, "t7", 2)
    procs.worker("critical")
    wait_for(status_is(clean, job_id, "succeeded"), what="postponed job to succeed")
    # max_attempts is 1: two postponements did not use it up
    assert (ledger(clean, job_id).attempts, ledger(clean, job_id).max_attempts) == (1, 1)
    assert outcomes(clean, job_id) == ["postponed", "postponed", "succeeded"]


def test_cli_lists_and_requeues_dead_letters(clean: Runtime, procs: Processes, org_id: int) -> None:
    job_id = submit_one(clean, org_id, flaky, "t8", 1, True)
    procs.worker("critical")
    wait_for(status_is(clean, job_id, "dead"), what="job to be dead-lettered")
    listing = procs.run("dlq", "list")
    assert f"1\tcritical\ttests.flaky\tPermanentError\t{job_id}..{job_id}" in listing
    shown = procs.run("dlq", "show", str(job_id))
    assert "1/3 attempts" in shown and "simulated failure" in shown
    procs.run("dlq", "requeue", str(job_id))
    wait_for(status_is(clean, job_id, "succeeded"), what="requeued job to succeed")
    assert "not dead" in procs.run("dlq", "requeue", str(job_id), expect_code=1)
