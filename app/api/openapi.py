"""OpenAPI 3.1 description built from the routes themselves, and a human page at /v1/docs."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from flask import Blueprint, Flask, Response, current_app, jsonify
from pydantic import BaseModel

F = TypeVar("F", bound=Callable[..., Any])
_REF = "#/components/schemas/{model}"

blueprint = Blueprint("openapi", __name__)


@dataclass(frozen=True)
class Operation:
    """What the docs say about one view."""

    summary: str
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    errors: tuple[int, ...] = (401, 403)
    idempotent: bool = False
    idempotency_required: bool = False
    tags: tuple[str, ...] = field(default_factory=tuple)
    audit: str | None = None  # the audit action each request records ("patient.read"): PHI endpoints
    audit_resource: str | None = None  # the resource type the audit record names


def documented(operation: Operation) -> Callable[[F], F]:
    """Attach an Operation to a view for the OpenAPI document."""

    def decorate(view: F) -> F:
        view.openapi = operation  # type: ignore[attr-defined]
        return view

    return decorate


def _schema(model: type[BaseModel], components: dict[str, Any]) -> dict[str, str]:
    schema = model.model_json_schema(ref_template=_REF)
    components.update(schema.pop("$defs", {}))
    components[model.__name__] = schema
    return {"$ref": _REF.format(model=model.__name__)}


def _parameters(rule: str, op: Operation, components: dict[str, Any]) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "integer" if conv == "int" else "string"}}
        for conv, name in re.findall(r"<(?:(\w+):)?(\w+)>", rule)
    ]
    if op.query is not None:
        schema = op.query.model_json_schema(ref_template=_REF)
        required = set(schema.get("required", []))
        for name, prop in schema.get("properties", {}).items():
            params.append({"name": name, "in": "query", "required": name in required, "schema": prop})
    if op.idempotent:
        params.append({"name": "Idempotency-Key", "in": "header", "required": op.idempotency_required, "schema": {"type": "string"},
                       "description": "Retry-safe key, scoped to the API client and kept at least 72 h."})
    return params


def _operation(rule: str, view: Any, components: dict[str, Any]) -> dict[str, Any]:
    op: Operation = view.openapi
    scope = getattr(view, "required_scope", None)
    responses: dict[str, Any] = {
        str(op.status): {
            "description": "OK" if op.status < 300 else "Accepted",
            **({"content": {"application/json": {"schema": _schema(op.response, components)}}} if op.response else {}),
        }
    }
    for status in (*op.errors, *((400, 415, 422) if op.body else ()), 429):
        responses[str(status)] = {"$ref": "#/components/responses/Problem"}
    spec: dict[str, Any] = {
        "summary": op.summary,
        "tags": list(op.tags),
        "parameters": _parameters(rule, op, components),
        "responses": responses,
        "security": [{"apiKey": []}] if scope else [],
    }
    if scope:
        spec["description"] = f"Requires scope `{scope}`."
    if op.audit:
        spec["x-audit-action"] = op.audit
        spec["description"] = spec.get("description", "") + " Every request is audited."
    if op.body is not None:
        spec["requestBody"] = {"required": True, "content": {"application/json": {"schema": _schema(op.body, components)}}}
    return spec


def build(app: Flask) -> dict[str, Any]:
    """The OpenAPI document for every documented route of the app."""
    components: dict[str, Any] = {}
    paths: dict[str, dict[str, Any]] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        view = app.view_functions.get(rule.endpoint)
        if view is None or not hasattr(view, "openapi"):
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            paths.setdefault(path, {})[method.lower()] = _operation(rule.rule, view, components)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Triage API", "version": "1", "description": _POLICY},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
            "responses": {"Problem": {"description": "An error (RFC 9457)",
                                      "content": {"application/problem+json": {"schema": {"type": "object"}}}}},
        },
    }


_POLICY = (
    "Authenticate with `Authorization: Bearer <api key>`. Errors are application/problem+json (RFC 9457) "
    "with an `errors` list naming each invalid field. Work-creating POSTs accept `Idempotency-Key`: the same "
    "key with the same request replays the first response (`Idempotent-Replayed: true`); with a different "
    "request it is rejected with 422; while the first is in flight, 409. Keys are scoped per API client and "
    "kept at least 72 hours. Rate limits are per API key (per IP without one); 429 carries Retry-After."
)


@blueprint.get("/v1/openapi.json")
def openapi_json() -> Response:
    """The OpenAPI document (public: it describes, it reveals no data)."""
    return jsonify(build(current_app))


@blueprint.get("/v1/docs")
def docs() -> Response:
    """A readable page of every endpoint, generated from the OpenAPI document."""
    spec = build(current_app)
    rows = []
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            rows.append(
                f"<tr><td><code>{method.upper()}</code></td><td><code>{html.escape(path)}</code></td>"
                f"<td>{html.escape(op['summary'])}</td><td>{html.escape(op.get('description', 'public'))}</td></tr>"
            )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>Triage API</title><style>"
        "body{font-family:sans-serif;margin:2em;max-width:70em}td{padding:.3em .8em;border-bottom:1px solid #ddd}"
        "</style></head><body><h1>Triage API v1</h1>"
        f"<p>{html.escape(_POLICY)}</p><p>Machine-readable: <a href='/v1/openapi.json'>/v1/openapi.json</a></p>"
        f"<table><tr><th>method</th><th>path</th><th>what</th><th>access</th></tr>{''.join(rows)}</table>"
        "</body></html>"
    )
    return Response(page, mimetype="text/html")
