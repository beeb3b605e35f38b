"""rq-dashboard at /admin/rq: admin-only (HTTP Basic or login session), the platform's queues, a real browser."""

from __future__ import annotations

import base64
import re
import secrets
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from rq.registry import FailedJobRegistry
from werkzeug.serving import make_server

from app import create_app
from app.api.dashboard import register_dashboard
from app.queues import QUEUE_NAMES
from app.runtime import Runtime
from app.services.clients import authenticate, revoke_client
from app.services.jobs import submit
from tests.conftest import Processes, effects, ledger, wait_for
from tests.integration.api.conftest import Key
from tests.integration.api.test_jobs_api import assert_problem
from tests.support.kinds import flaky, slow

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}


def dashboard_app(runtime: Runtime) -> Flask:
    """The API app with a session key and the dashboard (mounted here until create_app does it)."""
    app = create_app(runtime=runtime)
    app.config["SECRET_KEY"] = secrets.token_urlsafe(32)
    if "rq_dashboard" not in app.blueprints:
        register_dashboard(app)
    return app


@pytest.fixture()
def app(clean: Runtime) -> Flask:
    return dashboard_app(clean)


def basic(key: Key, user: str = "operator") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{key.token}".encode()).decode()}


def log_in(client: FlaskClient, key: Key) -> int:
    """Submit the login form as a browser would; return the response status."""
    form = client.get("/admin/login")
    assert form.status_code == 200 and form.headers["Cache-Control"] == "no-store"
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.get_data(as_text=True))
    assert csrf
    return client.post("/admin/login", data={"csrf": csrf.group(1), "key": key.token}).status_code


def queue_names(client: FlaskClient, headers: dict[str, str] | None = None) -> list[str]:
    response = client.get("/admin/rq/0/data/queues.json", headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    return [q["name"] for q in response.get_json()["queues"]]


def dead_job(runtime: Runtime, procs: Processes, org_id: int, token: str) -> int:
    """A job that fails permanently on its first run (and succeeds on its second)."""
    with runtime.sessions.begin() as session:
        job_id = submit(session, flaky, token, 1, True, organisation_id=org_id).id
    procs.worker(*QUEUE_NAMES)
    wait_for(lambda: ledger(runtime, job_id).status == "dead", what="job to be dead-lettered")
    return job_id


def test_without_credentials_browsers_are_sent_to_login_and_others_get_401(client: FlaskClient, admin: Key) -> None:
    for method, path in (("get", "/admin/rq/"), ("get", "/admin/rq/0/data/queues.json"),
                         ("get", "/admin/rq/static/js/jquery-3.5.1.min.js"), ("post", "/admin/rq/job/1/requeue"),
                         ("post", "/admin/rq/queue/critical/failed/empty")):
        response = getattr(client, method)(path)
        assert_problem(response, 401)
        assert response.headers["WWW-Authenticate"] == 'Basic realm="triage-admin"'
    page = client.get("/admin/rq/", headers=HTML)
    assert page.status_code == 302 and page.headers["Location"] == "/admin/login"
    wrong = {"Authorization": "Basic " + base64.b64encode(b"operator:trg_nope_nope").decode()}
    assert_problem(client.get("/admin/rq/", headers={**wrong, **HTML}), 401)  # a failed Basic login is re-challenged
    assert_problem(client.get("/admin/rq/", headers=admin.headers), 401)  # Bearer is the API's, not the dashboard's
    assert_problem(client.get("/admin/rq/5/view"), 401)  # our guard runs before rq-dashboard's own hooks
    assert_problem(client.get("/admin/rq/5/view", headers=basic(admin)), 404)


def test_a_key_without_the_admin_scope_is_403(client: FlaskClient, alice: Key) -> None:
    for method, path in (("get", "/admin/rq/"), ("get", "/admin/rq/0/data/workers.json"),
                         ("post", "/admin/rq/job/1/requeue")):
        assert_problem(getattr(client, method)(path, headers=basic(alice)), 403)
    assert log_in(client, alice) == 403
    assert_problem(client.get("/admin/rq/0/data/queues.json"), 401)  # and no session came of it


def test_an_admin_key_over_basic_sees_queues_workers_and_the_failed_registry(
    app: Flask, client: FlaskClient, admin: Key, clean: Runtime, procs: Processes, org_id: int
) -> None:
    page = client.get("/admin/rq/", headers=basic(admin, user="anyone"))
    assert page.status_code == 200 and "RQ dashboard" in page.get_data(as_text=True)
    assert page.headers["Cache-Control"] == "no-store" and page.headers["X-Frame-Options"] == "DENY"
    assert queue_names(client, basic(admin)) == sorted(QUEUE_NAMES)  # listed even before anything was enqueued
    assert app.redis_conn is clean.redis  # type: ignore[attr-defined]  # not a new Redis client per request

    job_id = dead_job(clean, procs, org_id, "dash1")
    workers = client.get("/admin/rq/0/data/workers.json", headers=basic(admin)).get_json()["workers"]
    assert [w["queues"] for w in workers] == [list(QUEUE_NAMES)]
    critical = next(q for q in client.get("/admin/rq/0/data/queues.json", headers=basic(admin)).get_json()["queues"]
                    if q["name"] == "critical")
    assert critical["failed_job_registry_count"] == 1
    failed = client.get("/admin/rq/0/data/jobs/critical/failed/8/asc/1.json", headers=basic(admin)).get_json()
    assert [j["id"] for j in failed["jobs"]] == [str(job_id)]
    detail = client.get(f"/admin/rq/0/data/job/{job_id}.json", headers=basic(admin)).get_json()  # JSON serializer
    assert detail["description"] == f"tests.flaky #{job_id}" and "simulated failure" in detail["exc_info"]
    assert client.get(f"/admin/rq/0/view/job/{job_id}", headers=basic(admin)).status_code == 200

    # Deleting is disabled (purges go through the audited admin API); requeueing works, same-site only.
    for path in (f"/admin/rq/job/{job_id}/delete", "/admin/rq/queue/critical/failed/empty"):
        assert client.post(path, headers=basic(admin)).get_json() == {"status": "DISABLED"}
    assert FailedJobRegistry("critical", connection=clean.redis).get_job_ids() == [str(job_id)]
    assert_problem(client.get("/admin/rq/requeue/critical", headers=basic(admin)), 405)
    cross = {**basic(admin), "Sec-Fetch-Site": "cross-site"}
    assert_problem(client.post(f"/admin/rq/job/{job_id}/requeue", headers=cross), 403)
    foreign = {**basic(admin), "Origin": "https://evil.example"}
    assert_problem(client.post(f"/admin/rq/job/{job_id}/requeue", headers=foreign), 403)
    same = {**basic(admin), "Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"}
    assert client.post(f"/admin/rq/job/{job_id}/requeue", headers=same).get_json() == {"status": "OK"}
    wait_for(lambda: ledger(clean, job_id).status == "succeeded", what="the dashboard-requeued job to succeed")


def test_login_session_works_until_logout_or_revocation(client: FlaskClient, admin: Key, clean: Runtime) -> None:
    assert client.post("/admin/login", data={"key": admin.token}).status_code == 400  # no CSRF token
    assert client.post("/admin/login", data={"csrf": "forged", "key": admin.token}).status_code == 400
    assert log_in(client, Key("trg_nope_nope", admin.organisation_id)) == 401
    form = client.get("/admin/login")
    token = re.search(r'name="csrf" value="([^"]+)"', form.get_data(as_text=True)).group(1)  # type: ignore[union-attr]
    cookie = form.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    response = client.post("/admin/login", data={"csrf": token, "key": admin.token})
    assert response.status_code == 303 and response.headers["Location"] == "/admin/rq/"
    assert queue_names(client) == sorted(QUEUE_NAMES)
    assert client.get("/admin/rq/", headers=HTML).status_code == 200
    assert_problem(client.post("/admin/rq/job/1/requeue", headers={"Sec-Fetch-Site": "cross-site"}), 403)

    assert client.get("/admin/logout").headers["Location"] == "/admin/login"
    assert_problem(client.get("/admin/rq/0/data/queues.json"), 401)

    assert log_in(client, admin) == 303
    assert queue_names(client) == sorted(QUEUE_NAMES)
    with clean.sessions.begin() as session:
        caller = authenticate(session, admin.token)
        assert caller is not None and revoke_client(session, caller.client_id)
    assert_problem(client.get("/admin/rq/0/data/queues.json"), 401)
    assert client.get("/admin/rq/", headers=HTML).headers["Location"] == "/admin/login"


def test_only_admin_pages_open_the_login_session(client: FlaskClient, app: Flask) -> None:
    from flask.sessions import NullSession, SecureCookieSession

    for path, kind in (("/v1/jobs", NullSession), ("/health/live", NullSession), ("/admin/login", SecureCookieSession),
                       ("/admin/rq/", SecureCookieSession)):
        with app.test_request_context(path) as ctx:
            assert type(app.session_interface.open_session(app, ctx.request)) is kind, path


def test_without_a_secret_key_login_is_disabled_and_basic_still_works(
    app: Flask, client: FlaskClient, admin: Key
) -> None:
    app.config["SECRET_KEY"] = None
    assert_problem(client.get("/admin/login"), 503)
    assert_problem(client.post("/admin/login", data={"key": admin.token}), 503)
    assert queue_names(client, basic(admin)) == sorted(QUEUE_NAMES)
    app.config["SECRET_KEY"] = "too-short"
    assert_problem(client.get("/admin/login"), 503)


def test_a_busy_workers_json_job_is_shown(
    client: FlaskClient, admin: Key, clean: Runtime, procs: Processes, org_id: int
) -> None:
    with clean.sessions.begin() as session:
        job_id = submit(session, slow, "busy", 60, organisation_id=org_id).id
    procs.worker("reports")
    wait_for(lambda: effects(clean, "busy", "start"), what="the slow job to start")
    response = client.get("/admin/rq/0/data/workers.json", headers=basic(admin))
    assert response.status_code == 200, response.get_data(as_text=True)
    [worker] = response.get_json()["workers"]
    assert worker["state"] == "busy" and worker["current_job"]["job_id"] == str(job_id)
    assert worker["current_job"]["call_string"].endswith("('busy', 60)")


def test_polling_the_dashboard_is_not_rate_limited_but_login_is(clean: Runtime, admin: Key) -> None:
    settings = replace(clean.settings, anonymous_rate_limit="3 per minute")
    client = dashboard_app(replace(clean, settings=settings)).test_client()
    for _ in range(10):
        assert queue_names(client, basic(admin)) == sorted(QUEUE_NAMES)
    statuses = [client.get("/admin/login").status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]


@pytest.fixture()
def live_server(app: Flask) -> Iterator[str]:
    """The app served over real HTTP on a free local port, in a thread."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=10)


def test_a_browser_logs_in_and_sees_the_queues(live_server: str, admin: Key, tmp_path: Path) -> None:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("needs Debian's chromium and chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000",
                     f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=str(CHROMEDRIVER)))
    try:
        driver.get(live_server + "/admin/rq/")
        WebDriverWait(driver, 20).until(lambda d: d.current_url == live_server + "/admin/login")
        driver.find_element(By.ID, "key").send_keys(admin.token)
        driver.find_element(By.ID, "sign-in").click()
        WebDriverWait(driver, 20).until(lambda d: d.current_url == live_server + "/admin/rq/")
        WebDriverWait(driver, 20).until(  # rq-dashboard's JavaScript renders the rows from queues.json
            lambda d: [r.text.split()[0] for r in d.find_elements(By.CSS_SELECTOR, "#queues tr[data-role=queue]")]
            == sorted(QUEUE_NAMES),
            message="the platform's queues to appear on the dashboard",
        )
        screenshot = tmp_path / "dashboard.png"
        assert driver.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 10_000
        errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert [m for m in errors if "favicon.ico" not in m] == []  # every asset and JSON call answered
    finally:
        driver.quit()

