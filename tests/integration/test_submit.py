"""Submitting work: the ledger row is the acceptance; Redis sees it only after commit."""

from __future__ import annotations

import math
import shutil
from dataclasses import replace

import pytest
from rq import Queue
from rq.serializers import JSONSerializer
from sqlalchemy import func, select

from app.models import Job
from app.queues import UnknownQueueError
from app.runtime import Runtime
from app.services.jobs import InvalidJobArgumentsError, JobNotFoundError, submit, view
from jobs.spec import UnknownJobKindError
from tests.conftest import wait_for
from tests.support.kinds import effect
from tests.support.servers import answers, free_port, start_redis, stop
from workers.reconciler import reconciler_for


def job_count(runtime: Runtime) -> int:
    with runtime.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(Job)) or 0)


def redis_job_ids(runtime: Runtime, queue: str = "critical") -> list[str]:
    return Queue(queue, connection=runtime.redis).get_job_ids()


def test_commit_enqueues_with_the_ledger_id_and_marks_it_queued(clean: Runtime, org_id: int) -> None:
    with clean.sessions.begin() as session:
        job = submit(session, effect, "a", organisation_id=org_id)
        assert redis_job_ids(clean) == []  # not before commit
    assert redis_job_ids(clean) == [str(job.id)]
    with clean.sessions() as session:
        shown = view(session, job.id, organisation_id=org_id)
    assert (shown.kind, shown.queue, shown.status, shown.attempts, shown.max_attempts) == (
        "tests.effect", "critical", "queued", 0, 5,
    )


def test_rolled_back_transaction_leaves_no_job_anywhere(clean: Runtime, org_id: int) -> None:
    with pytest.raises(RuntimeError), clean.sessions.begin() as session:
        submit(session, effect, "a", organisation_id=org_id)
        raise RuntimeError("request failed after submitting")
    assert job_count(clean) == 0
    assert redis_job_ids(clean) == []
    # the next transaction on a fresh session does not inherit the discarded job
    with clean.sessions.begin() as session:
        kept = submit(session, effect, "b", organisation_id=org_id)
    assert redis_job_ids(clean) == [str(kept.id)]


def test_savepoints_push_nothing_early_and_a_rolled_back_one_drops_only_its_jobs(clean: Runtime,
                                                                                 org_id: int) -> None:
    with clean.sessions.begin() as session:
        with session.begin_nested():
            first = submit(session, effect, "released", organisation_id=org_id)
        assert redis_job_ids(clean) == []  # released savepoint: the transaction is still open
        with pytest.raises(RuntimeError), session.begin_nested():
            with session.begin_nested():
                submit(session, effect, "inner, released then rolled back", organisation_id=org_id)
            raise RuntimeError("this record failed")
        last = submit(session, effect, "after", organisation_id=org_id)
        assert redis_job_ids(clean) == []
    assert redis_job_ids(clean) == [str(first.id), str(last.id)]
    assert job_count(clean) == 2


def test_view_hides_other_organisations_jobs(clean: Runtime, org_id: int) -> None:
    from app.services.organisations import ensure_organisation

    with clean.sessions.begin() as session:
        other = ensure_organisation(session, "other-org").id
        job = submit(session, effect, "a", organisation_id=org_id)
    with clean.sessions() as session, pytest.raises(JobNotFoundError):
        view(session, job.id, organisation_id=other)


def test_idempotency_key_is_unique_per_organisation(clean: Runtime, org_id: int) -> None:
    from sqlalchemy.exc import IntegrityError

    with clean.sessions.begin() as session:
        submit(session, effect, "a", organisation_id=org_id, idempotency_key="k1")
    with pytest.raises(IntegrityError), clean.sessions.begin() as session:
        submit(session, effect, "a", organisation_id=org_id, idempotency_key="k1")
    assert len(redis_job_ids(clean)) == 1


@pytest.mark.parametrize(
    ("func", "args", "kwargs", "error"),
    [
        (print, ("a",), {}, UnknownJobKindError),
        ("no.such.kind", (), {}, UnknownJobKindError),
        (effect, (object(),), {}, InvalidJobArgumentsError),
        (effect, (math.nan,), {}, InvalidJobArgumentsError),
        (effect, ({1: "non-string key"},), {}, InvalidJobArgumentsError),
        (effect, ("a",), {"queue": "no-such-queue"}, UnknownQueueError),
    ],
    ids=["undeclared-function", "unknown-kind-name", "object-argument", "nan", "int-key", "unknown-queue"],
)
def test_bad_submissions_fail_clearly_and_write_nothing(clean, org_id, func, args, kwargs, error) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error), clean.sessions.begin() as session:
        submit(session, func, *args, organisation_id=org_id, **kwargs)
    assert job_count(clean) == 0
    assert clean.redis.keys("rq:job:*") == []


def test_submit_by_kind_name_uses_the_declared_function(clean: Runtime, org_id: int) -> None:
    with clean.sessions.begin() as session:
        job = submit(session, "tests.effect", "x", organisation_id=org_id)
    rq_job = Queue("critical", connection=clean.redis, serializer=JSONSerializer).fetch_job(str(job.id))
    assert rq_job is not None and rq_job.func_name == "tests.support.kinds.effect"


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")
def test_work_accepted_while_redis_is_down_is_kept_and_enqueued_later(clean: Runtime, org_id: int) -> None:
    port = free_port()
    server = start_redis(port)
    runtime = Runtime.build(replace(clean.settings, redis_url=f"redis://127.0.0.1:{port}/0"))
    try:
        wait_for(lambda: answers(port), timeout=10, what="throwaway redis")
        stop(server)
        with runtime.sessions.begin() as session:
            job_id = submit(session, effect, "outage", organisation_id=org_id).id
        with clean.sessions() as session:
            assert view(session, job_id, organisation_id=org_id).status == "pending"
        server = start_redis(port)
        wait_for(lambda: answers(port), timeout=10, what="redis back")
        reconciler = reconciler_for(runtime)
        reconciler.grace = 0
        assert reconciler.restore_losses() == 1
        assert Queue("critical", connection=runtime.redis).get_job_ids() == [str(job_id)]
        with clean.sessions() as session:
            assert view(session, job_id, organisation_id=org_id).status == "queued"
    finally:
        stop(server)
        runtime.close()
