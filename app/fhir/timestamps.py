"""HL7 v2 DT/DTM/TS values to FHIR date, dateTime and instant strings, keeping their precision.

A time of day without an offset is the sender's local time (HL7 v2.5 2.A.22): given the zone
the sender is in, it gets that zone's offset on that date (DST included); without one, UTC is
assumed and said.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import Literal

Kind = Literal["date", "dateTime", "instant"]

_TS = re.compile(
    r"(\d{4})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:\.(\d{1,4}))?)?)?)?)?)?"
    r"(?:([+-])(\d{2})(\d{2}))?"
)
_TM = re.compile(r"(\d{2})(?:(\d{2})(?:(\d{2})(?:\.(\d{1,4}))?)?)?(?:[+-]\d{4})?")
UNPARSEABLE = "unparseable date omitted"
NO_ZONE = "no time zone, UTC assumed"
IMPRECISE = "not precise enough for an instant, omitted"


@dataclass(frozen=True, slots=True)
class Converted:
    """A FHIR value (None when omitted) and the problem met, if any (never the value itself)."""

    value: str | None
    problem: str | None = None


def convert(raw: str, kind: Kind, zone: tzinfo | None = None) -> Converted:
    """Convert an HL7 timestamp (YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ]) to a FHIR `kind`; `zone`: the sender's."""
    m = _TS.fullmatch(raw.strip())
    if m is None:
        return Converted(None, UNPARSEABLE)
    year, month, day, hour, minute, second, fraction, sign, zh, zm = m.groups()
    if not _valid(year, month, day, hour, minute, second, zh, zm):
        return Converted(None, UNPARSEABLE)
    date = "-".join(p for p in (year, month, day) if p)
    if kind == "date" or (hour is None and kind == "dateTime"):
        return Converted(date)
    if hour is None or day is None:
        return Converted(None, IMPRECISE)
    clock = f"{hour}:{minute or '00'}:{second or '00'}" + (f".{fraction}" if fraction else "")
    if sign is not None:
        return Converted(f"{date}T{clock}{'Z' if zh == '00' and zm == '00' else f'{sign}{zh}:{zm}'}")
    if zone is None:
        return Converted(f"{date}T{clock}Z", NO_ZONE)
    local = datetime(int(year), int(month), int(day), int(hour), int(minute or 0), int(second or 0))
    return Converted(f"{date}T{clock}{_offset(zone, local)}")


def _offset(zone: tzinfo, local: datetime) -> str:
    """The zone's offset at a local wall time: an ambiguous time (clocks going back) is read as the
    first of the two, a skipped one (clocks going forward) with the offset before the change."""
    offset = zone.utcoffset(local) or timedelta(0)
    minutes = int(offset.total_seconds() // 60)
    if minutes == 0:
        return "Z"
    sign, minutes = ("+" if minutes > 0 else "-"), abs(minutes)
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def convert_time(raw: str) -> Converted:
    """Convert an HL7 TM value (HH[MM[SS[.S]]]) to a FHIR time."""
    m = _TM.fullmatch(raw.strip())
    if m is None or int(m[1]) > 23 or int(m[2] or 0) > 59 or int(m[3] or 0) > 59:
        return Converted(None, UNPARSEABLE)
    fraction = f".{m[4]}" if m[4] else ""
    return Converted(f"{m[1]}:{m[2] or '00'}:{m[3] or '00'}{fraction}")


def plus_minutes(instant: str, minutes: float) -> str:
    """An instant `minutes` after another, in the same time zone notation."""
    moment = datetime.fromisoformat(instant) + timedelta(minutes=minutes)
    text = moment.isoformat(timespec="seconds")
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def minutes_between(start: str, end: str) -> int:
    """Whole minutes from one instant to another (negative when end is earlier)."""
    first = datetime.fromisoformat(start)
    last = datetime.fromisoformat(end)
    return int((last - first).total_seconds() // 60)


def _valid(year: str, month: str | None, day: str | None, hour: str | None, minute: str | None,
           second: str | None, zh: str | None, zm: str | None) -> bool:
    if int(year) < 1:
        return False
    if month is not None and not 1 <= int(month) <= 12:
        return False
    if day is not None and month is not None \
            and not 1 <= int(day) <= calendar.monthrange(int(year), int(month))[1]:
        return False
    if int(hour or 0) > 23 or int(minute or 0) > 59 or int(second or 0) > 59:
        return False
    return zh is None or (int(zh) <= 14 and int(zm or 0) <= 59)
