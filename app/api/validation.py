"""Request bodies and query strings validated by pydantic models; failures become problems."""

from __future__ import annotations

from typing import TypeVar

from flask import request
from pydantic import BaseModel, ValidationError

from app.api.problems import FieldError, Problem, from_validation

M = TypeVar("M", bound=BaseModel)


def body(model: type[M]) -> M:
    """The JSON body as `model`: 415 if not JSON, 400 if malformed, 422 if invalid."""
    if not request.is_json:
        raise Problem(415, "Unsupported Media Type", "Send the body as application/json.",
                      errors=[FieldError("header", "Content-Type", "must be application/json")])
    data = request.get_json(silent=True)
    if data is None:
        raise Problem(400, "Bad Request", "The body is not valid JSON.", "malformed-json",
                      [FieldError("body", "(root)", "malformed JSON")])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise from_validation(exc, "body") from None


def query(model: type[M]) -> M:
    """The query string as `model` (422 listing each bad parameter)."""
    try:
        return model.model_validate(request.args.to_dict())
    except ValidationError as exc:
        raise from_validation(exc, "query") from None
