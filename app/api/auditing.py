"""The request side of the audit log: one audit record per request to an audited endpoint.

An endpoint is audited when its Operation names an `audit` action ("patient.read"). A request
that succeeds writes its record inside the view's own transaction (`transactional` and
`idempotent` call `record_success` before they commit), so a change and its record commit
together, and a read's record is committed before the response leaves; if that commit fails, the
success record is gone with it and the request gets an error record like any failed one. A request that fails
(401, 403, 404, 422, 500 …) writes one record — outcome `denied` for 401/403/404/429, `error`
otherwise — in a transaction of its own, before the response goes out; if that write fails, the
request fails (503). When the database itself is down, a request that failed anyway keeps its own
answer (a 503 disclosing nothing) and the missing record is logged. Failed authentication and authorisation are audited on every endpoint
(`auth.failed`, `auth.forbidden`). Records hold identifiers only: no bodies, no clinical content.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, current_app, g, request
from sqlalchemy.exc import OperationalError

from app.api import app_runtime
from app.api.problems import Problem
from app.services import audit

log = logging.getLogger(__name__)
_DENIED = (401, 403, 404, 429)
_UNAVAILABLE = Problem(503, "Service Unavailable", "The audit log is unavailable; retry later.",
                       headers={"Retry-After": "5"})


def subject(*, resource_id: Any = None, patient_id: Any = None) -> None:
    """Name what this request touched, once the view knows it (a row's id, its patient)."""
    found = g.setdefault("audit_subject", {})
    if resource_id is not None:
        found["resource_id"] = str(resource_id)
    if patient_id is not None:
        found["patient_id"] = str(patient_id)


def _operation() -> Any:
    view = current_app.view_functions.get(request.endpoint) if request.endpoint else None
    operation = getattr(view, "openapi", None)
    return operation if operation is not None and operation.audit else None


def _path_id() -> str | None:
    ids = [str(v) for k, v in (request.view_args or {}).items() if k.endswith("id") or k == "name"]
    return ids[0] if ids else None


def _entry(action: str, resource_type: str | None, outcome: str) -> audit.AuditEntry:
    caller, found = g.get("caller"), g.get("audit_subject", {})
    patient = (found.get("patient_id") or (request.view_args or {}).get("patient_id") or request.args.get("patient_id")
               or request.args.get("patient"))
    patient = str(patient) if patient is not None else None
    return audit.AuditEntry(
        action=action, outcome=outcome, actor_type="client",
        actor_id=f"client:{caller.client_id}" if caller else None,
        organisation_id=caller.organisation_id if caller else None, resource_type=resource_type,
        resource_id=found.get("resource_id") or _path_id(), patient_id=patient[:64] if patient else None,
        request_id=g.get("request_id"), source_ip=request.remote_addr,
        user_agent=request.user_agent.string[:300] or None)


def _status(result: Any) -> int:
    """The status a view's return value stands for (a helper returning a plain value: success)."""
    if isinstance(result, Response):
        return result.status_code
    if isinstance(result, tuple) and len(result) > 1 and isinstance(result[1], int):
        return result[1]
    return 200


def record_success(session: Any, result: Any) -> None:
    """The audit record of a successful request to an audited endpoint, in the request's transaction
    (`result`: what the view, or a transactional helper of it, returned)."""
    operation = _operation()
    if operation is None or _status(result) >= 400 or g.get("audited") or g.get("audit_staged"):
        return
    audit.record(session, _entry(operation.audit, operation.audit_resource, "success"))
    g.audit_staged = True  # written once the transaction commits (`committed`); if it fails, `_after` writes the error


def committed() -> None:
    """The request's transaction committed, and with it the success record it staged."""
    if g.pop("audit_staged", False):
        g.audited = True


def _after(response: Response) -> Response:
    if g.get("audited"):
        return response
    operation, status = _operation(), response.status_code
    if operation is not None:
        outcome = "success" if status < 400 else "denied" if status in _DENIED else "error"
        entry = _entry(operation.audit, operation.audit_resource, outcome)
    elif status in (401, 403):
        entry = _entry("auth.failed" if status == 401 else "auth.forbidden", None, "denied")
    else:
        return response
    runtime = app_runtime()
    try:
        with runtime.sessions.begin() as session:
            audit.record(session, entry)
    except OperationalError:
        if status < 400:  # nothing may be disclosed without its record
            return _UNAVAILABLE.to_response()
        log.warning("Audit record of a failed request not written: the database is unavailable")
        return response  # the request failed anyway, disclosing nothing: keep its answer (e.g. 503)
    g.audited = True
    return response


def register_auditing(app: Flask) -> None:
    """Audit every request to an audited endpoint, and every failed authentication or authorisation."""
    app.after_request(_after)
