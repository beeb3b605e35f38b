"""Opaque cursors for newest-first lists: the id of the last item on the page."""

from __future__ import annotations

import base64

from app.api.problems import FieldError, Problem


def decode_cursor(cursor: str | None) -> int | None:
    """The id a cursor stands for (422 for a cursor this API did not issue)."""
    if cursor is None:
        return None
    try:
        return int(base64.urlsafe_b64decode(cursor.encode()).decode())
    except ValueError:
        raise Problem(422, "Unprocessable Content", "The cursor is not one this API issued.", "validation",
                      [FieldError("query", "cursor", "invalid cursor")]) from None


def encode_cursor(last_id: int) -> str:
    """The cursor of the page after the item with this id."""
    return base64.urlsafe_b64encode(str(last_id).encode()).decode()
