"""One transaction per work-creating request, with Idempotency-Key replay (IETF draft semantics).

- same key, same request  → the first response again, with `Idempotent-Replayed: true`;
- same key, other request → 422 (the key was used for something else);
- same key while the first request is still being processed → 409 (retry later).
Keys are scoped per API client and kept at least 72 hours. The stored response is written in the
same transaction as the work it created, so a replay never points at work that was rolled back.

One statement takes a per-key advisory lock and reads any stored response. Its snapshot predates
the lock, so a first request that commits in between goes unseen; the unique (client, key) index
then stops the second at the store, its work is rolled back and it answers 409 like any request
that came while the first was in flight: there is never a second job.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import Response, g, json, make_response, request
from sqlalchemy import Row, Table, Text, and_, bindparam, cast, func, insert, literal, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.api import app_runtime, auditing
from app.api.auth import current_caller
from app.api.problems import FieldError, Problem
from app.models import IdempotencyRecord

F = TypeVar("F", bound=Callable[..., Any])
HEADER = "Idempotency-Key"
_REPLAYED_HEADERS = ("Location", "Content-Type")

# Built once (each request runs them): Core statements keep their cache keys and compiled forms.
_TABLE: Table = IdempotencyRecord.__table__  # type: ignore[assignment]
_RECORDS = _TABLE.c
_ONE = select(literal(1).label("one")).subquery()
_CLAIM = select(
    func.pg_try_advisory_xact_lock(func.hashtextextended(bindparam("name", type_=Text), 0)).label("locked"),
    _RECORDS.request_hash, _RECORDS.response_status, _RECORDS.response_body, _RECORDS.response_headers,
).select_from(_ONE.outerjoin(_TABLE, and_(_RECORDS.api_client_id == bindparam("client"),
                                          _RECORDS.key == bindparam("key"))))
_UNIQUE_KEY = "uq_idempotency_client_key"
# The response body goes in as the JSON text the view produced, cast by PostgreSQL: not parsed
# back into Python and serialised again.
_STORE = insert(_TABLE).values(response_body=cast(bindparam("body", type_=Text), JSONB))


def db() -> Session:
    """The request's session (views behind `transactional` or `idempotent`)."""
    session: Session = g.db
    return session


def _request_hash() -> str:
    digest = hashlib.sha256(f"{request.method} {request.path}\n".encode())
    digest.update(request.get_data(cache=True))
    return digest.hexdigest()


def _replay(record: Row[Any]) -> Response:
    response = Response(json.dumps(record.response_body), status=record.response_status)
    response.headers.update(record.response_headers)
    response.headers["Idempotent-Replayed"] = "true"
    return response


def _key(required: bool) -> str | None:
    key = request.headers.get(HEADER)
    if key is None and required:
        raise Problem(400, "Idempotency-Key Required", f"This endpoint requires an {HEADER} header.",
                      errors=[FieldError("header", HEADER, "required")])
    if key is not None and not 1 <= len(key) <= 255:
        raise Problem(422, "Unprocessable Content", f"{HEADER} must be 1 to 255 characters.", "validation",
                      [FieldError("header", HEADER, "must be 1 to 255 characters")])
    return key


def transactional(view: F) -> F:
    """Run the view in one transaction (g.db), committed after it returns; jobs enqueue after."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        runtime = app_runtime()
        with runtime.sessions.begin() as session:
            g.db = session
            result = view(*args, **kwargs)
            auditing.record_success(session, result)
        auditing.committed()
        return result

    return wrapper  # type: ignore[return-value]


def idempotent(required: bool = False) -> Callable[[F], F]:
    """Make a work-creating POST safe to retry with an Idempotency-Key."""

    def decorate(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            key = _key(required)
            runtime = app_runtime()
            with runtime.sessions.begin() as session:
                g.db = session
                result = view(*args, **kwargs) if key is None else _once(session, key, view, args, kwargs)
                auditing.record_success(session, result)
            auditing.committed()
            return result

        return wrapper  # type: ignore[return-value]

    return decorate


def _in_flight() -> Problem:
    return Problem(409, "Conflict", "A request with this Idempotency-Key is still being processed.",
                   "idempotency-in-flight", headers={"Retry-After": "1"})


def _once(session: Session, key: str, view: Callable[..., Any], args: Any, kwargs: Any) -> Response:
    client_id = current_caller().client_id
    claim = session.execute(_CLAIM, {"name": f"idempotency:{client_id}:{key}", "client": client_id,
                                     "key": key}).one()
    if not claim.locked:
        raise _in_flight()
    request_hash = _request_hash()
    if claim.request_hash is not None:
        if claim.request_hash != request_hash:
            raise Problem(422, "Unprocessable Content", "This Idempotency-Key was used for a different request.",
                          "idempotency-key-reused", [FieldError("header", HEADER, "reused with another request")])
        return _replay(claim)
    response = make_response(view(*args, **kwargs))
    if response.status_code < 500 and response.is_json:
        _store(session, client_id, key, request_hash, response)
    return response


def _store(session: Session, client_id: int, key: str, request_hash: str, response: Response) -> None:
    try:
        session.execute(_STORE, {
            "api_client_id": client_id, "key": key, "request_hash": request_hash,
            "response_status": response.status_code, "body": response.get_data(as_text=True),
            "response_headers": {h: response.headers[h] for h in _REPLAYED_HEADERS if h in response.headers},
        })
    except IntegrityError as error:
        if getattr(error.orig, "diag", None) is None or error.orig.diag.constraint_name != _UNIQUE_KEY:  # type: ignore[union-attr]
            raise
        raise _in_flight() from None  # the first request committed after our claim's snapshot
