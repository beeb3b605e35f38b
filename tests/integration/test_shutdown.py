"""Drain on SIGTERM, recovery after SIGKILL, the watchdog, and supervised recycling: real signals."""

from __future__ import annotations

import signal
from dataclasses import replace

from rq import Queue
from rq.registry import FailedJobRegistry

from app.runtime import Runtime
from app.services.jobs import submit
from tests.conftest import Processes, effects, ledger, orphans, outcomes, wait_for
from tests.support.kinds import effect, slow, stubborn
from tests.support.servers import answers, free_port, start_redis, stop
from workers.lease import WATCHDOG_EXIT


def submit_one(runtime: Runtime, org_id: int, func, *args) -> int:  # type: ignore[no-untyped-def]
    with runtime.sessions.begin() as session:
        return submit(session, func, *args, organisation_id=org_id).id


def started(runtime: Runtime, token: str):  # type: ignore[no-untyped-def]
    return lambda: effects(runtime, token, "start")


def test_sigterm_lets_the_job_in_hand_finish(clean: Runtime, procs: Processes, org_id: int) -> None:
    job_id = submit_one(clean, org_id, slow, "d1", 1.5)
    worker = procs.worker("reports", env={"TRIAGE_DRAIN_SECONDS": "10"})
    wait_for(started(clean, "d1"), what="job to start")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
    row = ledger(clean, job_id)
    assert (row.status, row.attempts) == ("succeeded", 1)
    assert len(effects(clean, "d1", "end")) == 1


def test_sigterm_past_the_deadline_requeues_without_spending_an_attempt(
    clean: Runtime, procs: Processes, org_id: int
) -> None:
    job_id = submit_one(clean, org_id, slow, "d2", 60)
    first = procs.worker("reports", env={"TRIAGE_DRAIN_SECONDS": "1"})
    wait_for(started(clean, "d2"), what="job to start")
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=30) == 0
    row = ledger(clean, job_id)
    assert (row.status, row.attempts) == ("queued", 0)
    assert Queue("reports", connection=clean.redis).get_job_ids()[:1] == [str(job_id)]
    assert outcomes(clean, job_id) == ["interrupted"]
    procs.worker("reports")
    wait_for(lambda: ledger(clean, job_id).status == "succeeded", what="another worker to finish the job")
    assert ledger(clean, job_id).attempts == 1
    assert effects(clean, "d2", "end")


def test_second_sigterm_interrupts_at_once(clean: Runtime, procs: Processes, org_id: int) -> None:
    job_id = submit_one(clean, org_id, slow, "d3", 60)
    worker = procs.worker("reports", env={"TRIAGE_DRAIN_SECONDS": "120"})
    wait_for(started(clean, "d3"), what="job to start")
    worker.send_signal(signal.SIGTERM)
    wait_for(lambda: b"draining" in (procs.log(worker)), what="worker to start draining")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
    assert (ledger(clean, job_id).status, ledger(clean, job_id).attempts) == ("queued", 0)


def test_sigkilled_worker_job_is_completed_by_another_within_30s(
    clean: Runtime, procs: Processes, org_id: int
) -> None:
    job_id = submit_one(clean, org_id, slow, "d4", 60)
    doomed = procs.worker("reports")
    wait_for(started(clean, "d4"), what="job to start")
    procs.worker("reports")
    procs.start("scheduler")
    procs.kill(doomed, signal.SIGKILL)
    wait_for(lambda: ledger(clean, job_id).status == "succeeded", timeout=30, what="recovery within 30 s")
    row = ledger(clean, job_id)
    assert row.attempts == 2  # the crashed attempt counts; nothing more
    assert outcomes(clean, job_id) == ["crashed", "succeeded"]
    assert len(effects(clean, "d4", "end")) == 1
    wait_for(lambda: not orphans(), what="the killed worker's RQ scheduler to exit with it")


def test_job_ignoring_its_timeout_is_killed_and_dead_lettered(clean: Runtime, procs: Processes, org_id: int) -> None:
    job_id = submit_one(clean, org_id, stubborn, "d5")
    procs.start("worker", "reports")  # supervised: the killed process is replaced
    procs.start("scheduler")
    wait_for(lambda: ledger(clean, job_id).status == "dead", timeout=60, what="watchdog kill and dead letter")
    row = ledger(clean, job_id)
    assert (row.attempts, row.last_error_type) == (1, "WorkerLost")
    assert len(effects(clean, "d5", "start")) == 1
    assert FailedJobRegistry("reports", connection=clean.redis).get_job_ids() == [str(job_id)]
    wait_for(lambda: not orphans(), what="the killed worker's RQ scheduler to exit with it")


def test_supervisor_recycles_workers_and_drains_on_sigterm(clean: Runtime, procs: Processes, org_id: int) -> None:
    with clean.sessions.begin() as session:
        ids = [submit(session, effect, f"r{i}", organisation_id=org_id).id for i in range(12)]
    supervisor = procs.start("worker", "critical", "--max-jobs", "4")
    wait_for(lambda: all(ledger(clean, i).status == "succeeded" for i in ids), what="all jobs done")
    assert len({row.pid for row in effects(clean)}) >= 3  # a fresh process every 4 jobs
    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(timeout=30) == 0


def test_worker_that_cannot_renew_its_lease_stops_its_job(clean: Runtime, procs: Processes, org_id: int) -> None:
    port = free_port()
    server = start_redis(port)
    try:
        wait_for(lambda: answers(port), timeout=10, what="throwaway redis")
        runtime = Runtime.build(replace(clean.settings, redis_url=f"redis://127.0.0.1:{port}/0"))
        job_id = submit_one(runtime, org_id, slow, "d6", 60)
        worker = procs.worker("reports", env={"REDIS_URL": f"redis://127.0.0.1:{port}/0"})
        wait_for(started(clean, "d6"), what="job to start")
        stop(server)  # its host loses Redis: the reconciler elsewhere may hand the job to another worker
        assert worker.wait(timeout=30) == WATCHDOG_EXIT
        assert ledger(clean, job_id).status == "running"  # left for the reconciler to recover
        assert effects(clean, "d6", "end") == []
        runtime.close()
    finally:
        stop(server)
