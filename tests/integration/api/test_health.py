"""Health probes: live, ready (real Redis outage on a throwaway server), and the admin picture."""

from __future__ import annotations

import shutil
from dataclasses import replace

import pytest
from flask.testing import FlaskClient

from app import create_app
from app.runtime import Runtime
from tests.conftest import Processes, wait_for
from tests.integration.api.conftest import Key
from tests.integration.api.test_jobs_api import assert_problem
from tests.support.servers import answers, free_port, start_redis, stop


def test_live_needs_nothing(client: FlaskClient) -> None:
    assert client.get("/health/live").get_json() == {"status": "ok"}


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")
def test_ready_is_503_while_redis_is_stopped_and_200_when_it_is_back(clean: Runtime) -> None:
    port = free_port()
    server = start_redis(port)
    runtime = Runtime.build(replace(clean.settings, redis_url=f"redis://127.0.0.1:{port}/0"))
    try:
        wait_for(lambda: answers(port), timeout=10, what="throwaway redis")
        client = create_app(runtime=runtime).test_client()
        assert client.get("/health/ready").status_code == 200
        stop(server)
        response = client.get("/health/ready")
        assert response.status_code == 503
        assert response.get_json()["checks"] == {"database": "ok", "redis": "down"}
        server = start_redis(port)
        wait_for(lambda: client.get("/health/ready").status_code == 200, timeout=15, what="ready again")
    finally:
        stop(server)
        runtime.close()


def test_full_health_needs_admin(client: FlaskClient, alice: Key) -> None:
    assert_problem(client.get("/health"), 401)
    assert_problem(client.get("/health", headers=alice.headers), 403)


def test_full_health_reports_workers_per_queue_and_the_scheduler(
    client: FlaskClient, admin: Key, clean: Runtime, procs: Processes
) -> None:
    first = client.get("/health", headers=admin.headers).get_json()
    assert first["status"] == "degraded"
    assert first["components"]["database"]["status"] == "ok" and first["components"]["redis"]["status"] == "ok"
    assert first["components"]["workers"]["per_queue"]["critical"] == 0
    assert first["components"]["scheduler"]["alive"] == 0
    procs.worker()
    procs.start("scheduler")

    def healthy() -> bool:
        return client.get("/health", headers=admin.headers).get_json()["status"] == "ok"

    wait_for(healthy, what="workers on every queue and a scheduler")
    body = client.get("/health", headers=admin.headers).get_json()["components"]
    assert set(body["workers"]["per_queue"].values()) == {1} and body["scheduler"]["alive"] == 1
