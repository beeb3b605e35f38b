"""Relative report periods ("last_week", "yesterday" …) made into dates when a report is requested.

A scheduled report keeps the relative name in its parameters; each run resolves it against the day
it runs on, in the schedule's time zone, so "every Monday 07:00, last_week" reports the week just
ended. The resolved report keeps the name too (`period`) beside its `from` and `to` dates.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from typing import Any


def _month_start(day: date) -> date:
    return day.replace(day=1)


def _last_month(today: date) -> tuple[date, date]:
    end = _month_start(today) - timedelta(days=1)
    return _month_start(end), end


#: Each relative period: (first day, last day) for the day it is resolved on. Weeks start on Monday.
PERIODS: dict[str, Callable[[date], tuple[date, date]]] = {
    "today": lambda today: (today, today),
    "yesterday": lambda today: (today - timedelta(days=1), today - timedelta(days=1)),
    "last_7_days": lambda today: (today - timedelta(days=7), today - timedelta(days=1)),
    "last_30_days": lambda today: (today - timedelta(days=30), today - timedelta(days=1)),
    "week_to_date": lambda today: (today - timedelta(days=today.weekday()), today),
    "last_week": lambda today: (today - timedelta(days=today.weekday() + 7), today - timedelta(days=today.weekday() + 1)),
    "month_to_date": lambda today: (_month_start(today), today),
    "last_month": _last_month,
}


def resolve(parameters: dict[str, Any], today: date) -> dict[str, Any]:
    """The parameters with a relative `period` turned into `from`/`to` dates (others unchanged)."""
    name = parameters.get("period")
    if name is None:
        return parameters
    first, last = PERIODS[name](today)
    return {**parameters, "from": first.isoformat(), "to": last.isoformat()}
