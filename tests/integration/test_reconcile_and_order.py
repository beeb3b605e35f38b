"""The reconciler restores what Redis lost; priorities hold; many workers never run a job twice."""

from __future__ import annotations

from collections import Counter

from rq import Worker

from app.runtime import Runtime
from app.services.jobs import submit
from tests.conftest import Processes, effects, ledger, wait_for
from tests.support.kinds import effect, report_effect
from workers.reconciler import reconciler_for


def all_succeeded(runtime: Runtime, ids: list[int]):  # type: ignore[no-untyped-def]
    return lambda: all(ledger(runtime, i).status == "succeeded" for i in ids)


def test_reconciler_after_flushdb_runs_every_pending_job_once(clean: Runtime, procs: Processes, org_id: int) -> None:
    with clean.sessions.begin() as session:
        ids = [submit(session, effect, f"f{i}", organisation_id=org_id).id for i in range(50)]
    clean.redis.flushdb()  # Redis restarted and lost everything
    reconciler = reconciler_for(clean)
    reconciler.grace = 0
    assert reconciler.restore_losses() == 50
    assert reconciler.restore_losses() == 0  # a second pass finds nothing missing
    procs.worker("critical")
    procs.worker("critical")
    wait_for(all_succeeded(clean, ids), what="every restored job to run")
    counts = Counter(row.token for row in effects(clean))
    assert counts == Counter({f"f{i}": 1 for i in range(50)})


def test_reconciler_leaves_jobs_younger_than_the_grace_alone(clean: Runtime, org_id: int) -> None:
    with clean.sessions.begin() as session:
        submit(session, effect, "young", organisation_id=org_id)
    clean.redis.flushdb()
    reconciler = reconciler_for(clean)
    reconciler.grace = 3600
    assert reconciler.restore_losses() == 0


def test_critical_jobs_run_before_a_backlog_of_reports(clean: Runtime, procs: Processes, org_id: int) -> None:
    with clean.sessions.begin() as session:
        reports = [submit(session, report_effect, f"report{i}", organisation_id=org_id).id for i in range(20)]
        critical = [submit(session, effect, f"critical{i}", organisation_id=org_id).id for i in range(5)]
    procs.worker()  # all queues, in priority order
    wait_for(all_succeeded(clean, reports + critical), what="all jobs")
    order = [row.token for row in effects(clean)]
    assert order[:5] == [f"critical{i}" for i in range(5)]


def test_several_workers_on_one_queue_run_each_job_once(clean: Runtime, procs: Processes, org_id: int) -> None:
    for _ in range(3):
        procs.worker("critical")
    wait_for(lambda: Worker.count(connection=clean.redis) == 3, what="three workers listening")
    with clean.sessions.begin() as session:
        ids = [submit(session, effect, f"w{i}", organisation_id=org_id).id for i in range(300)]
    wait_for(all_succeeded(clean, ids), timeout=60, what="all jobs")
    rows = effects(clean)
    assert Counter(row.token for row in rows) == Counter({f"w{i}": 1 for i in range(300)})
    assert len({row.pid for row in rows}) == 3  # all three really took part
    assert all(ledger(clean, i).attempts == 1 for i in ids)


def test_triage_reconcile_command_restores_lost_jobs(clean: Runtime, procs: Processes, org_id: int) -> None:
    with clean.sessions.begin() as session:
        ids = [submit(session, effect, f"c{i}", organisation_id=org_id).id for i in range(5)]
    clean.redis.flushdb()
    output = procs.run("reconcile", env={"TRIAGE_RECONCILE_GRACE": "0"})
    assert "re-enqueued 5 lost job(s)" in output
    procs.worker("critical")
    wait_for(all_succeeded(clean, ids), what="restored jobs to run")
    assert len(effects(clean)) == 5
