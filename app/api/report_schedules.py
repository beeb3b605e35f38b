"""Scheduled reports (scopes `reports:write` to change, `reports:read` to read): cron, time zone, report,
parameters and an optional webhook endpoint for its `report.ready`. Changes reach rq-scheduler at once."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from flask import Blueprint, Response, jsonify, url_for
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from app.api import app_runtime
from app.api.auth import current_caller, requires
from app.api.clinical_schemas import Patch, Strict
from app.api.idempotency import db, transactional
from app.api.openapi import Operation, documented
from app.api.problems import FieldError, Problem, from_validation
from app.api.reports import PARAMETERS
from app.api.validation import body
from app.services import report_schedules
from schedules import sync
from schedules.process import all_entries, build_scheduler

log = logging.getLogger(__name__)
blueprint = Blueprint("report_schedules", __name__, url_prefix="/v1")
_TAGS = ("reports",)
Cron = Annotated[str, Field(min_length=9, max_length=100, description="five fields, e.g. `0 6 * * 1-5`")]
Zone = Annotated[str, Field(min_length=1, max_length=64, description="IANA time zone, e.g. Europe/London")]


class ScheduleIn(Strict):
    """A report to make on a schedule."""

    cron: Cron
    timezone: Zone = "UTC"
    report_type: Literal[tuple(PARAMETERS)]  # type: ignore[valid-type]
    parameters: dict[str, Any] = Field(default_factory=dict)
    endpoint_id: int | None = None
    enabled: bool = True
    description: Annotated[str, Field(max_length=500)] | None = None


class SchedulePatch(Patch):
    """Fields of a schedule to change."""

    nullable: ClassVar[frozenset[str]] = frozenset({"endpoint_id", "description"})
    cron: Cron | None = None
    timezone: Zone | None = None
    parameters: dict[str, Any] | None = None
    endpoint_id: int | None = None
    enabled: bool | None = None
    description: Annotated[str, Field(max_length=500)] | None = None


class ScheduleOut(BaseModel):
    """A schedule and when it runs next."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    cron: str
    timezone: str
    report_type: str
    parameters: dict[str, Any]
    endpoint_id: int | None
    enabled: bool
    description: str | None
    next_run_at: datetime | None
    created_at: datetime
    updated_at: datetime


def _out(row: Any) -> dict[str, Any]:
    upcoming = report_schedules.next_run(row) if row.enabled else None
    out = ScheduleOut.model_validate({**{k: getattr(row, k) for k in ScheduleOut.model_fields if k != "next_run_at"},
                                      "next_run_at": upcoming})
    return out.model_dump(mode="json")


def _guarded(run: Any) -> Any:
    try:
        return run()
    except report_schedules.ScheduleNotFoundError:
        raise Problem(404, "Not Found", "No such report schedule.") from None
    except report_schedules.InvalidScheduleError as exc:
        raise Problem(422, "Unprocessable Content", str(exc), "validation",
                      [FieldError("body", exc.field, str(exc))]) from None


def _parameters(report_type: str, parameters: dict[str, Any]) -> dict[str, Any]:
    try:
        checked = TypeAdapter(PARAMETERS[report_type]).validate_python(parameters)
    except ValidationError as exc:
        raise from_validation(exc, "body") from None
    return checked.model_dump(mode="json", by_alias=True, exclude_none=True)


def _resync() -> None:
    """Bring rq-scheduler in line now (the scheduler would within a minute anyway)."""
    runtime = app_runtime()
    try:
        sync.sync(build_scheduler(runtime), all_entries(runtime))
    except (RedisError, SQLAlchemyError) as exc:  # committed: the scheduler syncs it within a minute
        log.warning("Report schedules: not synced now (%s); the scheduler will", type(exc).__name__)


@blueprint.post("/report-schedules")
@requires("reports:write")
@documented(Operation("Schedule a report (cron in a time zone); each run makes a report and a report.ready event",
                      audit="report_schedule.create", audit_resource="ReportSchedule",
                      body=ScheduleIn, response=ScheduleOut, status=201, errors=(401, 403, 422), tags=_TAGS))
def create_schedule() -> tuple[Response, int, dict[str, str]]:
    """422 names the field at fault: a bad cron, an unknown time zone, parameters, endpoint."""
    values = body(ScheduleIn).model_dump()
    values["parameters"] = _parameters(values["report_type"], values["parameters"])
    created = _store(lambda: report_schedules.create(db(), values, organisation_id=current_caller().organisation_id))
    _resync()
    return jsonify(created), 201, {"Location": url_for("report_schedules.get_schedule", schedule_id=created["id"])}


@transactional
def _store(run: Any) -> dict[str, Any]:
    return _out(_guarded(run))


@blueprint.get("/report-schedules")
@requires("reports:read")
@documented(Operation("The organisation's report schedules", audit="report_schedule.list",
                      audit_resource="ReportSchedule", tags=_TAGS))
@transactional
def list_schedules() -> Response:
    """With their next run times."""
    rows = report_schedules.listed(db(), organisation_id=current_caller().organisation_id)
    return jsonify({"items": [_out(r) for r in rows]})


@blueprint.get("/report-schedules/<int:schedule_id>")
@requires("reports:read")
@documented(Operation("One report schedule", audit="report_schedule.read", audit_resource="ReportSchedule",
                      response=ScheduleOut, errors=(401, 403, 404), tags=_TAGS))
@transactional
def get_schedule(schedule_id: int) -> Response:
    """With its next run time."""
    return jsonify(_out(_guarded(lambda: report_schedules.get(db(), schedule_id,
                                                               organisation_id=current_caller().organisation_id))))


@blueprint.patch("/report-schedules/<int:schedule_id>")
@requires("reports:write")
@documented(Operation("Change a report schedule",
                      audit="report_schedule.update", audit_resource="ReportSchedule", body=SchedulePatch, response=ScheduleOut,
                      errors=(401, 403, 404, 422), tags=_TAGS))
def patch_schedule(schedule_id: int) -> Response:
    """Cron, time zone, parameters, endpoint, enabled, description."""
    values = body(SchedulePatch).model_dump(exclude_unset=True)
    organisation_id = current_caller().organisation_id

    def change() -> Any:
        row = report_schedules.get(db(), schedule_id, organisation_id=organisation_id)
        if "parameters" in values:
            values["parameters"] = _parameters(row.report_type, values["parameters"])
        return report_schedules.update(db(), schedule_id, values, organisation_id=organisation_id)

    changed = _store(change)
    _resync()
    return jsonify(changed)


@blueprint.delete("/report-schedules/<int:schedule_id>")
@requires("reports:write")
@documented(Operation("Delete a report schedule (gone from rq-scheduler)",
                      audit="report_schedule.delete", audit_resource="ReportSchedule", status=204, errors=(401, 403, 404),
                      tags=_TAGS))
def delete_schedule(schedule_id: int) -> tuple[str, int]:
    """Reports it already made stay."""
    _remove(schedule_id)
    _resync()
    return "", 204


@transactional
def _remove(schedule_id: int) -> None:
    _guarded(lambda: report_schedules.delete(db(), schedule_id, organisation_id=current_caller().organisation_id))
