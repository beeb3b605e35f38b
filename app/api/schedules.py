"""Operators' view of the schedules (scope `admin`): every entry, its next run and last outcome."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime

from flask import Blueprint, Response, jsonify
from pydantic import BaseModel

from app.api import app_runtime
from app.api.auth import requires
from app.api.idempotency import db, transactional
from app.api.openapi import Operation, documented
from schedules import sync
from schedules.process import all_entries, build_scheduler

blueprint = Blueprint("schedules", __name__, url_prefix="/v1/admin")


class ScheduleOut(BaseModel):
    """A schedule: its cron (UTC), the job kind it submits, next run, last run's status."""

    id: str
    cron: str
    kind: str
    description: str
    next_run_at: datetime | None
    last_status: str | None
    last_run_at: datetime | None


class ScheduleList(BaseModel):
    """Every declared schedule."""

    items: list[ScheduleOut]


@blueprint.get("/schedules")
@requires("admin")
@documented(Operation("Every schedule with its next run time and last outcome", response=ScheduleList,
                      tags=("admin",)))
@transactional
def list_schedules() -> Response:
    """Next runs come from rq-scheduler in Redis, outcomes from the ledger."""
    runtime = app_runtime()
    found = sync.views(db(), build_scheduler(runtime), all_entries(runtime))
    return jsonify(ScheduleList(items=[ScheduleOut(**asdict(v)) for v in found]).model_dump(mode="json"))
