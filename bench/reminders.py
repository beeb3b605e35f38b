"""Reminders: how fast a medication-reminder pass runs over N active prescriptions.

    BENCH_DATABASE_URL=... BENCH_REDIS_URL=... .venv/bin/python bench/reminders.py [--prescriptions 10000]

Seeds N prescriptions (three doses a day, a tenth of the last doses already given), then times
`reminders.medication` twice: the first pass announces every due and missed dose (one event
each, 24 h of look-back), the second finds them all announced already (the rerun cost). Prints
reminders generated per second and each pass's seconds.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import insert, text

from bench.common import add_target_args, reset, runtime, target_from


def seed(rt: object, organisation_id: int, count: int, now: datetime) -> None:
    """N patients, each with one prescription at 08:00/14:00/20:00; some doses recorded."""
    from app.models import Administration, Medication, Patient, Prescription

    with rt.engine.begin() as conn:  # type: ignore[attr-defined]
        # No webhook subscribers: this measures finding and announcing reminders (each subscriber adds a
        # delivery and its job per reminder; see the webhooks benchmark for that cost).
        conn.execute(text("TRUNCATE webhook_attempts, webhook_deliveries, webhook_endpoints, events, administrations, "
                          "prescriptions, medications, patients RESTART IDENTITY CASCADE"))
        medication = conn.execute(insert(Medication).values(
            organisation_id=organisation_id, name="Amoxicillin", form="tablet", unit="mg",
            ingredients=[]).returning(Medication.id)).scalar_one()
        conn.execute(insert(Patient), [{"organisation_id": organisation_id, "mrn": f"B{n}", "given_name": "P",
                                        "family_name": str(n), "date_of_birth": date(2012, 1, 1)}
                                       for n in range(count)])
        conn.execute(insert(Prescription), [{
            "organisation_id": organisation_id, "patient_id": n + 1, "medication_id": medication, "dose_amount": 500,
            "dose_unit": "mg", "route": "oral", "times_of_day": ["08:00", "14:00", "20:00"], "prn": False,
            "active": True, "start_date": now.date() - timedelta(days=7), "prescriber": "Dr B"}
            for n in range(count)])
        last = now.replace(hour=8, minute=0, second=0, microsecond=0)
        conn.execute(insert(Administration), [{
            "organisation_id": organisation_id, "record_id": uuid.uuid4(), "content_hash": "x", "patient_id": n + 1,
            "prescription_id": n + 1, "dose_amount": 500, "dose_unit": "mg", "route": "oral", "given_at": last,
            "status": "recorded", "administered_by": "N", "device_id": "d"} for n in range(0, count, 10)])


def main() -> None:
    """Seed, then time two passes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prescriptions", type=int, default=10_000)
    add_target_args(parser)
    args = parser.parse_args()
    target = target_from(args)
    rt = runtime(target)
    from app.services import reminders

    organisation_id = reset(rt, target)
    now = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    seed(rt, organisation_id, args.prescriptions, now)
    for label in ("first pass", "rerun"):
        started = time.perf_counter()
        with rt.sessions.begin() as session:
            found = reminders.medication(session, now)
        seconds = time.perf_counter() - started
        total = found.due + found.missed
        print(f"{label}: {args.prescriptions} prescriptions, {total} reminders ({found.due} due, {found.missed} "
              f"missed) in {seconds:.2f} s — {total / seconds:,.0f} reminders/s, "
              f"{args.prescriptions / seconds:,.0f} prescriptions/s")
    rt.close()


if __name__ == "__main__":
    main()
