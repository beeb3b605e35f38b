"""Bearer API keys: who is calling, and whether their key carries the scope a view needs."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import Flask, g, request

from app.api import app_runtime
from app.api.problems import Problem
from app.services.clients import Caller, authenticate

F = TypeVar("F", bound=Callable[..., Any])
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="triage"'}


def bearer_key() -> str | None:
    """The API key from `Authorization: Bearer …`, if any."""
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    return key.strip() or None if scheme.lower() == "bearer" else None


def _load_caller() -> None:
    g.caller = None
    key = bearer_key()
    if key:
        runtime = app_runtime()
        with runtime.reads.connect() as conn:
            g.caller = authenticate(conn, key)


def register_auth(app: Flask) -> None:
    """Identify the caller on every request (rejection happens per view, by scope)."""
    app.before_request(_load_caller)


def current_caller() -> Caller:
    """The authenticated caller of this request (views behind `requires` only)."""
    caller: Caller = g.caller
    return caller


def requires(scope: str) -> Callable[[F], F]:
    """401 without a valid key, 403 without the scope."""

    def decorate(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            caller: Caller | None = g.get("caller")
            if caller is None:
                raise Problem(401, "Unauthorized", "A valid API key is required.", headers=_CHALLENGE)
            if not caller.allows(scope):
                raise Problem(403, "Forbidden", f"This API key lacks the '{scope}' scope.")
            return view(*args, **kwargs)

        wrapper.required_scope = scope  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate
