"""Medication administrations end to end: throughput with 2 workers, and latency under a low-priority flood.

    .venv/bin/python bench/administrations.py [--records 2000] [--flood 5000] [--rate 20] [--seconds 10]

1. Throughput: `--records` administrations are received in batches of 100 per transaction (as
   `POST /v1/administrations/batch` does), then two `triage worker --child critical` processes
   decide them; prints records decided per second (first claim to last decision, from the ledger).
2. Priority: `--flood` low-priority jobs (5 ms each) fill the `reports` and `maintenance` queues,
   two all-queue workers start on them, and administrations arrive over HTTP (gunicorn, 2
   workers) at `--rate` per second. Latency is from the moment the request was due (open loop)
   to the decision's commit (`decided_at`, same host clock); prints p50/p95/p99/max and how much
   of the flood was still waiting at the end (it must not have been served first).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import signal
import sys
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import text

from bench.api_latency import _ready, _start_gunicorn
from bench.common import (
    add_target_args,
    percentile_ms,
    reset,
    runtime,
    stop,
    submit_durable,
    target_from,
    triage_worker,
    wait_until,
)

PATIENTS = 200


def seed(rt: Any, org_id: int) -> list[tuple[int, int]]:
    """PATIENTS patients, each with a prescription of one medication; returns (patient, prescription) ids."""
    from app.models import Medication, Patient, Prescription
    from app.services.clinical import create

    with rt.engine.begin() as conn:
        conn.execute(text("TRUNCATE patients, medications, allergies, inventory_lots, events RESTART IDENTITY CASCADE"))
    pairs = []
    with rt.sessions.begin() as session:
        med = create(session, Medication, {"name": "Cetirizine", "form": "tablet", "strength": Decimal(5),
                                           "unit": "mg"}, organisation_id=org_id)
        for n in range(PATIENTS):
            patient = create(session, Patient, {"student_number": f"B-{n}", "given_name": "Bench",
                                                "family_name": f"P{n}", "date_of_birth": date(2012, 1, 1)},
                             organisation_id=org_id)
            rx = create(session, Prescription, {"patient_id": patient.id, "medication_id": med.id,
                                                "dose_amount": Decimal(5), "dose_unit": "mg", "route": "oral",
                                                "prn": True, "duplicate_window_minutes": 1,
                                                "start_date": date(2020, 1, 1), "prescriber": "Dr B"},
                        organisation_id=org_id)
            pairs.append((patient.id, rx.id))
    return pairs


def record(pairs: list[tuple[int, int]], i: int) -> dict[str, Any]:
    """The i-th record: round-robin over patients, each patient's doses 2 minutes apart."""
    patient_id, rx_id = pairs[i % len(pairs)]
    given = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=2 * (i // len(pairs)))
    return {"record_id": str(uuid.uuid4()), "patient_id": patient_id, "prescription_id": rx_id,
            "dose_amount": 5, "dose_unit": "mg", "route": "oral", "given_at": given.isoformat(),
            "administered_by": "Bench Nurse", "device_id": "bench"}


def decided(rt: Any) -> int:
    with rt.engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM administrations WHERE status <> 'received'")).scalar_one())


def throughput(rt: Any, target: Any, org_id: int, pairs: list[tuple[int, int]], n: int) -> None:
    from app.api.administration_schemas import AdministrationIn
    from app.services.administrations import receive

    for start in range(0, n, 100):
        with rt.sessions.begin() as session:
            for i in range(start, min(n, start + 100)):
                values = AdministrationIn.model_validate(record(pairs, i)).model_dump()
                receive(session, values, organisation_id=org_id, api_client_id=None, request_id=None)
    workers = [triage_worker(target, ["critical"]) for _ in range(2)]
    try:
        wait_until(lambda: decided(rt) >= n, timeout=600, interval=0.2)
    finally:
        stop(workers)
    with rt.engine.connect() as conn:
        span, recorded = conn.execute(text(
            "SELECT extract(epoch FROM max(a.decided_at) - min(j.started_at)),"
            " count(*) FILTER (WHERE a.status = 'recorded') FROM administrations a JOIN jobs j ON j.id = a.job_id"
        )).one()
    print(f"throughput: {n} administrations decided by 2 critical workers in {float(span):.2f} s = "
          f"{n / float(span):.0f}/s ({recorded} recorded)")


def under_flood(rt: Any, target: Any, org_id: int, pairs: list[tuple[int, int]], args: argparse.Namespace) -> None:
    from app.services.clients import create_client
    from bench.kinds import busy

    submit_durable(rt, busy, args.flood // 2, organisation_id=org_id, args=(0.005,))
    submit_durable(rt, busy, args.flood - args.flood // 2, organisation_id=org_id, args=(0.005,), queue="reports")
    with rt.sessions.begin() as session:
        _, token = create_client(session, organisation_id=org_id, name="bench-device",
                                 scopes=["administrations:write"])
    env = target.env(TRIAGE_RATE_LIMIT="1000000 per minute", TRIAGE_SECRET_KEY=secrets.token_urlsafe(48))
    server = _start_gunicorn(env, args.port)
    workers = [triage_worker(target, []) for _ in range(2)]  # all queues, in priority order
    due_at: dict[int, float] = {}
    try:
        wait_until(lambda: _ready(args.port), timeout=30)
        conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=10)
        total = int(args.rate * args.seconds)
        start = time.time() + 0.5
        for i in range(args.records, args.records + total):
            at = start + (i - args.records) / args.rate
            time.sleep(max(0.0, at - time.time()))
            conn.request("POST", "/v1/administrations", body=json.dumps(record(pairs, i)),
                         headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json",
                                  "Idempotency-Key": uuid.uuid4().hex})
            response = conn.getresponse()
            body = json.loads(response.read())
            if response.status == 202:
                due_at[body["administration"]["id"]] = at
        wait_until(lambda: decided(rt) >= args.records + len(due_at), timeout=120, interval=0.1)
        with rt.engine.connect() as conn_db:
            waiting = conn_db.execute(text("SELECT count(*) FROM jobs WHERE kind = 'bench.busy' AND status "
                                           "IN ('queued', 'pending')")).scalar_one()
            rows = conn_db.execute(text("SELECT id, extract(epoch FROM decided_at) FROM administrations "
                                        "WHERE id = ANY(:ids)"), {"ids": list(due_at)}).all()
    finally:
        stop(workers)
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    latencies = sorted(float(epoch) - due_at[adm_id] for adm_id, epoch in rows)

    def pct(p: float) -> float:
        return percentile_ms(latencies, p)

    print(f"under a flood of {args.flood} low-priority jobs ({waiting} still waiting at the end), "
          f"{len(latencies)} administrations at {args.rate:.0f}/s over HTTP, 2 all-queue workers:")
    print(f"request→decided ms: p50 {pct(50):.0f}  p95 {pct(95):.0f}  p99 {pct(99):.0f}  "
          f"max {latencies[-1] * 1000:.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_target_args(parser)
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--flood", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--port", type=int, default=8766)
    args = parser.parse_args()
    target = target_from(args)
    rt = runtime(target)
    org_id = reset(rt, target)
    pairs = seed(rt, org_id)
    throughput(rt, target, org_id, pairs, args.records)
    under_flood(rt, target, org_id, pairs, args)


if __name__ == "__main__":
    main()
