"""medication_* metrics move when a worker process decides administrations, and reach /metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask.testing import FlaskClient

from app.api.administration_schemas import AdministrationIn
from app.runtime import Runtime
from app.services.administrations import receive
from tests.conftest import Processes, wait_for
from tests.integration.api.conftest import Key
from tests.integration.test_metrics import (  # noqa: F401 - fixtures
    mp_client,
    multiproc_dir,
    scrape,
    scraper,
    series,
    value,
)
from tests.support.clinic import Clinic, add_allergy, seed_clinic
from workers.metrics import MULTIPROC_ENV


def arrive(runtime: Runtime, clinic: Clinic, **overrides: Any) -> None:
    record = AdministrationIn.model_validate(clinic.record(**overrides)).model_dump()
    with runtime.sessions.begin() as session:
        receive(session, record, organisation_id=clinic.organisation_id, api_client_id=None, request_id=None)


def test_decisions_in_a_worker_process_are_counted(mp_client: FlaskClient, multiproc_dir: Path,  # noqa: F811
                                                   clean: Runtime, procs: Processes, org_id: int,
                                                   scraper: Key) -> None:  # noqa: F811
    with clean.sessions.begin() as session:
        clinic = seed_clinic(session, org_id)
        allergic = seed_clinic(session, org_id)
        add_allergy(session, allergic, "penicillin", "severe")
    arrive(clean, clinic)  # recorded
    arrive(clean, clinic, given_at="2026-11-30T08:20:00+00:00")  # duplicate
    arrive(clean, clinic, given_at="2026-11-30T14:00:00+00:00", dose_amount=1000, quantity=2)  # wrong dose
    arrive(clean, allergic)  # allergy
    procs.worker("critical", env={MULTIPROC_ENV: str(multiproc_dir)})
    wait_for(lambda: value(scrape(mp_client, scraper), "medication_admin_latency_seconds_count") == 4,
             timeout=60, what="four decisions")
    samples = scrape(mp_client, scraper)
    assert value(samples, "medication_admin_success_total") == 1
    assert series(samples, "medication_admin_failure_total") == {
        frozenset({("error_type", "duplicate_prevented")}): 1,
        frozenset({("error_type", "wrong_dose_blocked")}): 1,
        frozenset({("error_type", "allergy_blocked")}): 1,
    }
    assert value(samples, "medication_duplicate_prevented_total") == 1
    assert value(samples, "medication_allergy_conflict_prevented_total", severity="CRITICAL") == 1
