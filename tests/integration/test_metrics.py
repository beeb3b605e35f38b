"""/metrics: the scope it needs, job counters from a worker process, queue and ledger gauges."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import prometheus_client.values
import pytest
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.values import MultiProcessValue
from rq import Queue
from rq.job import Job as RqJob
from rq.utils import utcformat
from sqlalchemy import text

from app import create_app
from app.queues import QUEUE_NAMES
from app.runtime import Runtime
from app.services.jobs import submit
from app.services.operations import set_paused
from tests.conftest import Processes, ledger, wait_for
from tests.integration.api.conftest import Key, make_key
from tests.support.kinds import effect, flaky
from workers import metrics as job_metrics
from workers.metrics import MULTIPROC_ENV

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
CRITICAL_EFFECT = {"queue": "critical", "kind": "tests.effect"}
CRITICAL_FLAKY = {"queue": "critical", "kind": "tests.flaky"}


def _drop_job_metric_children() -> None:
    with warnings.catch_warnings():  # "not implemented in multi-process mode": the files stay, as wanted
        warnings.simplefilter("ignore", UserWarning)
        for metric in job_metrics.JOB_METRICS:
            metric.clear()


@pytest.fixture()
def multiproc_dir(tmp_path: Path) -> Iterator[Path]:
    """This process in multiprocess mode, as if PROMETHEUS_MULTIPROC_DIR had been set at its start.

    prometheus_client chooses how values are stored when it is imported, before any test runs:
    switch that choice for this test, and drop children the job metrics made earlier in memory.
    """
    directory = tmp_path / "prometheus"
    directory.mkdir()
    value_class = MultiProcessValue()  # type: ignore[no-untyped-call]
    _drop_job_metric_children()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(MULTIPROC_ENV, str(directory))
        patch.setattr(prometheus_client.values, "ValueClass", value_class)
        yield directory
        _drop_job_metric_children()
        value_class.close_all_files()


@pytest.fixture()
def client(clean: Runtime) -> Iterator[FlaskClient]:
    with create_app(runtime=clean).test_client() as test_client:
        yield test_client


@pytest.fixture()
def mp_client(multiproc_dir: Path, clean: Runtime) -> Iterator[FlaskClient]:
    """A client of an app built in multiprocess mode."""
    with create_app(runtime=clean).test_client() as test_client:
        yield test_client


@pytest.fixture()
def scraper(clean: Runtime) -> Key:
    return make_key(clean, "monitoring", ["metrics:read"])


def scrape(client: FlaskClient, key: Key) -> Samples:
    """Every sample /metrics returns, by name and labels."""
    response = client.get("/metrics", headers=key.headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.get_data(as_text=True))
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def series(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


def submit_one(runtime: Runtime, org_id: int, func: Any, *args: Any, queue: str | None = None) -> int:
    with runtime.sessions.begin() as session:
        return submit(session, func, *args, organisation_id=org_id, queue=queue).id


def test_metrics_need_a_key_with_the_metrics_scope(client: FlaskClient, clean: Runtime) -> None:
    anonymous = client.get("/metrics")
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
    reader = make_key(clean, "org-a", ["jobs:read"])
    assert client.get("/metrics", headers=reader.headers).status_code == 403
    for scope in ("metrics:read", "admin"):
        key = make_key(clean, f"ops-{scope}", [scope])
        response = client.get("/metrics", headers=key.headers)
        assert response.status_code == 200
        assert response.content_type.startswith("text/plain")
        assert "triage_queue_depth{" in response.get_data(as_text=True)


def test_job_counters_move_when_a_worker_process_runs_jobs(
    mp_client: FlaskClient, multiproc_dir: Path, clean: Runtime, procs: Processes, org_id: int, scraper: Key
) -> None:
    rt = clean
    ids = [submit_one(rt, org_id, effect, f"m-{i}") for i in range(3)]
    ids.append(submit_one(rt, org_id, flaky, "m-retry", 1))  # retrying, succeeded
    ids.append(submit_one(rt, org_id, flaky, "m-permanent", 1, True))  # dead
    ids.append(submit_one(rt, org_id, flaky, "m-exhausted", 5))  # retrying, retrying, dead

    procs.worker("critical", env={MULTIPROC_ENV: str(multiproc_dir)})
    wait_for(lambda: all(ledger(rt, j).status in ("succeeded", "dead") for j in ids), timeout=60,
             what="every job to finish")
    wait_for(lambda: sum(series(scrape(mp_client, scraper), "triage_job_duration_seconds_count").values()) == 9,
             timeout=10, what="the worker's last observation")
    assert mp_client.get("/health/live").status_code == 200

    samples = scrape(mp_client, scraper)
    assert series(samples, "triage_jobs_submitted_total") == {
        frozenset(CRITICAL_EFFECT.items()): 3, frozenset(CRITICAL_FLAKY.items()): 3
    }
    assert series(samples, "triage_jobs_started_total") == {
        frozenset(CRITICAL_EFFECT.items()): 3, frozenset(CRITICAL_FLAKY.items()): 6
    }
    assert series(samples, "triage_jobs_succeeded_total") == {
        frozenset(CRITICAL_EFFECT.items()): 3, frozenset(CRITICAL_FLAKY.items()): 1
    }
    assert series(samples, "triage_jobs_failed_total") == {
        frozenset({**CRITICAL_FLAKY, "outcome": "retrying"}.items()): 3,
        frozenset({**CRITICAL_FLAKY, "outcome": "dead"}.items()): 2,
    }
    assert series(samples, "triage_job_duration_seconds_count") == {
        frozenset({**CRITICAL_EFFECT, "outcome": "succeeded"}.items()): 3,
        frozenset({**CRITICAL_FLAKY, "outcome": "succeeded"}.items()): 1,
        frozenset({**CRITICAL_FLAKY, "outcome": "retrying"}.items()): 3,
        frozenset({**CRITICAL_FLAKY, "outcome": "dead"}.items()): 2,
    }
    assert value(samples, "triage_job_duration_seconds_bucket", **CRITICAL_EFFECT, outcome="succeeded", le="+Inf") == 3
    assert 0 < (value(samples, "triage_job_duration_seconds_sum", **CRITICAL_EFFECT, outcome="succeeded") or 0) < 30
    assert value(samples, "triage_dead_letters", queue="critical") == 2
    assert value(samples, "triage_queue_depth", queue="critical") == 0
    assert value(samples, "triage_workers", state="idle") == 1

    # HTTP metrics come from this process's files; /metrics itself is not tracked.
    assert value(samples, "flask_http_request_duration_seconds_count",
                 method="GET", status="200", url_rule="/health/live") == 1
    assert value(samples, "flask_http_request_total", method="GET", status="200") == 1
    assert not [labels for labels in series(samples, "flask_http_request_duration_seconds_count")
                if ("url_rule", "/metrics") in labels]


def test_queue_and_dead_letter_gauges_follow_redis_and_the_ledger(
    client: FlaskClient, clean: Runtime, org_id: int, scraper: Key
) -> None:
    rt = clean
    first, second = (submit_one(rt, org_id, effect, f"g-{i}") for i in range(2))
    submit_one(rt, org_id, effect, "g-webhooks", queue="webhooks")
    rt.redis.hset(RqJob.key_for(str(first)), "enqueued_at", utcformat(datetime.now(UTC) - timedelta(seconds=120)))
    rt.redis.zadd(Queue("critical", connection=rt.redis).scheduled_job_registry.key, {"999": 1e10})
    set_paused(rt.redis, "webhooks", True)
    with rt.engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET status = 'dead' WHERE id = :id"), {"id": second})

    samples = scrape(client, scraper)
    assert series(samples, "triage_queue_depth") == {
        frozenset({("queue", q)}): {"critical": 2, "webhooks": 1}.get(q, 0) for q in QUEUE_NAMES
    }
    assert 120 <= (value(samples, "triage_queue_oldest_job_age_seconds", queue="critical") or 0) < 150
    assert 0 <= (value(samples, "triage_queue_oldest_job_age_seconds", queue="webhooks") or -1) < 30
    assert value(samples, "triage_queue_oldest_job_age_seconds", queue="reports") == 0
    assert value(samples, "triage_queue_scheduled", queue="critical") == 1
    assert value(samples, "triage_queue_paused", queue="webhooks") == 1
    assert value(samples, "triage_queue_paused", queue="critical") == 0
    assert series(samples, "triage_dead_letters") == {
        frozenset({("queue", q)}): 1 if q == "critical" else 0 for q in QUEUE_NAMES
    }
    assert series(samples, "triage_workers") == {
        frozenset({("state", s)}): 0 for s in ("idle", "busy", "suspended", "started")
    }
    assert value(samples, "triage_metrics_source_up", source="redis") == 1
    assert value(samples, "triage_metrics_source_up", source="database") == 1


def test_single_process_mode_shows_this_process_only(
    client: FlaskClient, clean: Runtime, org_id: int, scraper: Key
) -> None:
    if getattr(prometheus_client.values.ValueClass, "_multiprocess", False):
        pytest.skip("PROMETHEUS_MULTIPROC_DIR was set when the tests started")
    before = value(scrape(client, scraper), "triage_jobs_submitted_total", **CRITICAL_EFFECT) or 0
    submit_one(clean, org_id, effect, "s-1")
    assert client.get("/health/live").status_code == 200
    samples = scrape(client, scraper)
    assert value(samples, "triage_jobs_submitted_total", **CRITICAL_EFFECT) == before + 1
    assert value(samples, "flask_http_request_duration_seconds_count",
                 method="GET", status="200", url_rule="/health/live") == 1
    assert value(samples, "triage_queue_depth", queue="critical") == 1
