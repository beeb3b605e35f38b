"""Turning validated values into the short strings printed in reports."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date, datetime

from pydantic import JsonValue

from app.reports.data import Scalar

_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?$")


def when(value: str) -> str:
    """An ISO date-time as 'YYYY-MM-DD HH:MM' (as given: no zone conversion)."""
    return f"{datetime.fromisoformat(value):%Y-%m-%d %H:%M}"


def day(value: str | None, empty: str = "—") -> str:
    """An ISO date as 'YYYY-MM-DD', or `empty` when absent."""
    return date.fromisoformat(value).isoformat() if value else empty


def age_on(birth: str, today: date) -> int:
    """Whole years from the ISO date `birth` to `today`."""
    born = date.fromisoformat(birth)
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def scalar(value: Scalar | JsonValue) -> str:
    """A JSON value as text: booleans as Yes/No, None as an em dash, lists comma-joined."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "Yes" if value else "No"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return ", ".join(scalar(item) for item in value) or "—"
    if isinstance(value, dict):
        return "; ".join(f"{label}: {text}" for label, text in flatten(value))
    if isinstance(value, str) and _DATETIME.match(value):
        try:
            return when(value)
        except ValueError:  # shaped like a date-time but not one (e.g. month 13): print as is
            return value
    return str(value)


def label(key: str) -> str:
    """A data key as a heading: 'prevented_action' -> 'Prevented action'."""
    words = key.replace("_", " ").replace("-", " ").strip()
    return words[:1].upper() + words[1:] if words else key


def flatten(mapping: dict[str, JsonValue], prefix: str = "") -> Iterator[tuple[str, str]]:
    """(label, text) pairs for a free-form mapping; nested keys become 'Outer › Inner'."""
    for key, value in mapping.items():
        name = f"{prefix} › {label(key)}" if prefix else label(key)
        if isinstance(value, dict) and value:
            yield from flatten(value, name)
        else:
            yield name, scalar(value)


def plural(count: int, noun: str) -> str:
    """'1 row', '5,000 rows'."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"
