"""Errors as application/problem+json (RFC 9457), for every error the API can return."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flask import Flask, Response, json
from pydantic import ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException

PROBLEM_TYPE_BASE = "https://triage.dev/problems/"
CONTENT_TYPE = "application/problem+json"


@dataclass
class FieldError:
    """One invalid field: where it is (body, query, header, path) and what is wrong with it."""

    location: str
    field: str
    reason: str


@dataclass
class Problem(Exception):
    """An error response; raise it from any view or service boundary."""

    status: int
    title: str
    detail: str = ""
    slug: str = ""
    errors: list[FieldError] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    extensions: dict[str, Any] = field(default_factory=dict)  # extra members (RFC 9457 §3.2)

    def to_response(self) -> Response:
        """The problem+json response."""
        body: dict[str, Any] = {
            "type": PROBLEM_TYPE_BASE + (self.slug or _slug(self.title)),
            "title": self.title,
            "status": self.status,
            "detail": self.detail or self.title,
        }
        if self.errors:
            body["errors"] = [e.__dict__ for e in self.errors]
        body.update(self.extensions)
        response = Response(json.dumps(body), status=self.status, mimetype=CONTENT_TYPE)
        response.headers.update(self.headers)
        return response


def _slug(title: str) -> str:
    return "-".join(title.lower().replace("'", "").split())


def from_validation(exc: ValidationError, location: str) -> Problem:
    """422 listing each field pydantic rejected, with its location and reason."""
    errors = [
        FieldError(location, ".".join(str(p) for p in err["loc"]) or "(root)", err["msg"]) for err in exc.errors()
    ]
    return Problem(422, "Unprocessable Content", "The request has invalid fields.", "validation", errors)


def register_problems(app: Flask) -> None:
    """Route every error, including werkzeug's HTML ones, through problem+json."""

    @app.errorhandler(Problem)
    def _problem(exc: Problem) -> Response:
        return exc.to_response()

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        status = exc.code or 500
        response = Problem(status, exc.name, exc.description or exc.name).to_response()
        for name, value in exc.get_headers():
            if name.lower() not in ("content-type", "content-length"):
                response.headers[name] = value
        return response

    @app.errorhandler(OperationalError)
    @app.errorhandler(RedisConnectionError)
    def _unavailable(exc: Exception) -> Response:
        # A dependency is down: nothing was accepted (the transaction did not commit); retry later.
        app.logger.warning("Dependency unavailable: %s", type(exc).__name__)
        return Problem(503, "Service Unavailable", "A backing service is unavailable; retry later.",
                       headers={"Retry-After": "5"}).to_response()

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        app.logger.exception("Unhandled %s", type(exc).__name__)
        return Problem(500, "Internal Server Error", "An unexpected error occurred.").to_response()
