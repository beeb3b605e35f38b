"""rq-dashboard at /admin/rq for operators: an admin API key by HTTP Basic, or a login session."""

from __future__ import annotations

import hmac
import secrets
import time
from typing import Any
from urllib.parse import urlsplit

import rq_dashboard
from flask import (
    Blueprint,
    Flask,
    Request,
    Response,
    current_app,
    jsonify,
    redirect,
    render_template_string,
    request,
    session,
    url_for,
)
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from redis.exceptions import RedisError
from rq import Queue, Worker
from rq.serializers import JSONSerializer
from rq_dashboard.web import config as dashboard_config
from rq_dashboard.web import push_rq_connection
from werkzeug.wrappers import Response as Redirect

from app.api import app_runtime
from app.api.problems import Problem
from app.models import ApiClient
from app.queues import QUEUE_NAMES
from app.runtime import Runtime
from app.services.clients import authenticate
from app.services.jobs import JobNotFoundError, JobStateError, requeue_dead

PREFIX = "/admin/rq"
SESSION_SECONDS = 8 * 3600
MIN_SECRET_KEY_LENGTH = 32
_CHALLENGE = {"WWW-Authenticate": 'Basic realm="triage-admin"'}
_PRIVATE = {"Cache-Control": "no-store", "X-Frame-Options": "DENY", "Content-Security-Policy": "frame-ancestors 'none'"}
_FORM = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Triage admin</title></head>
<body><h1>Triage admin</h1>{% if message %}<p role="alert">{{ message }}</p>{% endif %}
<form method="post" action="{{ url_for('triage_admin.login') }}"><input type="hidden" name="csrf" value="{{ csrf }}">
<label>Admin API key <input type="password" name="key" id="key" autocomplete="off" required autofocus></label>
<button type="submit" id="sign-in">Sign in</button></form></body></html>"""

blueprint = Blueprint("triage_admin", __name__, url_prefix="/admin")


class _JSONWorker(Worker):
    """rq-dashboard 0.9 lists workers without a serializer, so a busy worker's JSON job broke workers.json."""

    @classmethod
    def all(cls, *args: Any, **kwargs: Any) -> list[Any]:
        """Every worker, reading current jobs with the JSON serializer."""
        kwargs.setdefault("serializer", JSONSerializer)
        return super().all(*args, **kwargs)


def login_enabled() -> bool:
    """Sessions only with a strong SECRET_KEY; without one only HTTP Basic works (fail closed)."""
    return len(current_app.config.get("SECRET_KEY") or "") >= MIN_SECRET_KEY_LENGTH


def _session_client() -> int | None:
    """The admin client of a live session (revoked keys and old sessions lose it at once)."""
    client_id, since = session.get("admin_client"), session.get("admin_since", 0)
    if not login_enabled() or not isinstance(client_id, int) or time.time() - since > SESSION_SECONDS:
        return None
    with app_runtime().sessions() as db:
        client = db.get(ApiClient, client_id)
        return client_id if client and not client.revoked and "admin" in client.scopes else None


def _access() -> int:
    """200 for an admin, 403 for another valid key, 401 without valid credentials."""
    auth = request.authorization
    if auth is not None and auth.type == "basic":
        with app_runtime().sessions() as db:
            caller = authenticate(db, auth.password or "")
        return 401 if caller is None else 200 if caller.allows("admin") else 403
    return 200 if _session_client() is not None else 401


def _cross_site() -> bool:
    """Whether another site could have sent this request (browsers also replay cached Basic credentials)."""
    origin = request.headers.get("Origin")
    return request.headers.get("Sec-Fetch-Site") in ("cross-site", "same-site") or (
        origin is not None and urlsplit(origin).netloc != request.host
    )


def _guard() -> Redirect | Response | None:
    """Runs first on every dashboard request, POST actions and static files included."""
    status = _access()
    if status == 403:
        raise Problem(403, "Forbidden", "This API key lacks the 'admin' scope.")
    if status == 401:
        if not request.authorization and "text/html" in {m for m, _ in request.accept_mimetypes}:
            return redirect(url_for("triage_admin.login"))
        raise Problem(401, "Unauthorized", "An admin API key is required (HTTP Basic password).", headers=_CHALLENGE)
    if request.endpoint == "rq_dashboard.requeue_all" and request.method == "GET":
        raise Problem(405, "Method Not Allowed", "Requeue with POST.")
    if request.method not in ("GET", "HEAD", "OPTIONS") and _cross_site():
        raise Problem(403, "Forbidden", "Cross-site dashboard actions are refused.")
    if request.endpoint in _REQUEUES:
        return _requeue_through_ledger()
    if (request.view_args or {}).get("instance_number", 0) != 0:
        raise Problem(404, "Not Found", "There is one Redis instance.")
    try:  # rq lists a queue only once something was enqueued on it: list the whole catalogue
        app_runtime().redis.sadd(Queue.redis_queues_keys, *(Queue.redis_queue_namespace_prefix + n for n in QUEUE_NAMES))
    except RedisError:
        pass  # the dashboard shows its own connection error
    return None


_REQUEUES = ("rq_dashboard.requeue_job_view", "rq_dashboard.requeue_all")


def _requeue_through_ledger() -> Response:
    """Dashboard requeues go through the ledger (fresh attempts, enqueued after commit), like the API's."""
    args = request.view_args or {}
    if request.endpoint == "rq_dashboard.requeue_job_view":
        ids = [args["job_id"]]
    else:
        ids = Queue(args["queue_name"], connection=app_runtime().redis).failed_job_registry.get_job_ids(cleanup=False)
    count = 0
    for job_id in ids:
        if not str(job_id).isdigit():
            continue
        try:
            with app_runtime().sessions.begin() as db:
                requeue_dead(db, int(job_id))
            count += 1
        except (JobNotFoundError, JobStateError):
            continue
    if request.endpoint == "rq_dashboard.requeue_job_view":
        return jsonify(status="OK" if count else "ERROR")
    return jsonify(status="OK", count=count)


def _page(message: str = "", status: int = 200) -> tuple[str, int, dict[str, str]]:
    """The login form with a fresh per-session CSRF token."""
    session["csrf"] = secrets.token_urlsafe(32)
    return render_template_string(_FORM, csrf=session["csrf"], message=message), status, _PRIVATE


@blueprint.route("/login", methods=["GET", "POST"])
def login() -> Any:
    """GET: the form; POST: check the admin key and start a session."""
    if not login_enabled():
        raise Problem(503, "Service Unavailable", "Dashboard login is disabled (no SECRET_KEY); use HTTP Basic.")
    if request.method == "GET":
        return _page()
    expected = session.get("csrf", "")
    if not expected or not hmac.compare_digest(expected.encode(), request.form.get("csrf", "").encode()):
        return _page("The form expired; try again.", 400)
    with app_runtime().sessions() as db:
        caller = authenticate(db, request.form.get("key", ""))
    if caller is None or not caller.allows("admin"):
        return _page("That is not a valid admin API key.", 401 if caller is None else 403)
    session.clear()
    session.update(admin_client=caller.client_id, admin_since=int(time.time()))
    return redirect(url_for("rq_dashboard.queues_overview"), 303)


@blueprint.route("/logout", methods=["GET", "POST"])
def logout() -> Redirect:
    """End the session."""
    if login_enabled():
        session.clear()
    return redirect(url_for("triage_admin.login"), 303)


class AdminOnlySessions(SecureCookieSessionInterface):
    """The login cookie exists only under /admin: API requests (bearer keys) open no session, which
    spares every one of them building a signing serializer and reading cookies it never uses."""

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        """A null session outside /admin (Flask then saves nothing)."""
        if not request.path.startswith("/admin/"):
            return self.null_session_class()
        return super().open_session(app, request)


def register_dashboard(app: Flask) -> None:
    """Mount rq-dashboard (JSON serializer, delete disabled) and the admin login; idempotent."""
    if "rq_dashboard" in app.blueprints:
        return
    runtime: Runtime = app.extensions["triage"]
    # rq-dashboard 0.9 keeps these module-global: what `rq-dashboard --json` sets, and the workers fix.
    dashboard_config.serializer = JSONSerializer
    rq_dashboard.web.Worker = _JSONWorker
    app.config.update(
        RQ_DASHBOARD_REDIS_URL=(runtime.settings.redis_url,),
        RQ_DASHBOARD_DISABLE_DELETE=True,  # dead letters are purged through the audited admin API
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
    )
    app.redis_conn = runtime.redis  # type: ignore[attr-defined]  # where rq-dashboard's views look
    app.session_interface = AdminOnlySessions()
    app.register_blueprint(rq_dashboard.blueprint, url_prefix=PREFIX)
    app.register_blueprint(blueprint)
    # Our guard runs first; rq-dashboard's push_rq_connection would open a new Redis client per request.
    hooks = app.before_request_funcs.setdefault("rq_dashboard", [])
    hooks[:] = [_guard, *(hook for hook in hooks if hook is not push_rq_connection)]
    for name in ("rq_dashboard", "triage_admin"):
        app.after_request_funcs.setdefault(name, []).append(_private)
    for limiter in app.extensions.get("limiter", ()):  # polling would eat the per-IP anonymous budget
        limiter.exempt(rq_dashboard.blueprint)  # every request is authenticated; /admin/login stays limited


def _private(response: Response) -> Response:
    """Never cached, never framed."""
    response.headers.update(_PRIVATE)
    return response
