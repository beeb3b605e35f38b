"""When each dose of a requirement falls due, is overdue, or is waived."""

from __future__ import annotations

from datetime import date

from app.models import ImmunizationRequirement
from app.services.immunizations import standing

MMR = ImmunizationRequirement(id=1, vaccine="MMR", codes=["03"], doses=2, first_dose_age_days=365,
                              interval_days=28, grace_days=30)
BORN = date(2020, 1, 1)


def test_nothing_is_overdue_before_the_first_dose_falls_due() -> None:
    found = standing(MMR, BORN, [], None, date(2020, 12, 1))
    assert found.overdue == () and found.next_due == date(2020, 12, 31) and found.received == 0


def test_every_missing_dose_past_its_grace_is_overdue() -> None:
    found = standing(MMR, BORN, [], None, date(2022, 1, 1))
    assert found.overdue == ((1, date(2020, 12, 31)), (2, date(2021, 1, 28)))


def test_the_next_dose_falls_due_after_the_one_actually_given() -> None:
    late_first = date(2021, 6, 1)
    found = standing(MMR, BORN, [late_first], None, date(2021, 7, 20))
    assert found.received == 1 and found.next_due == date(2021, 6, 29) and found.overdue == ()
    assert standing(MMR, BORN, [late_first], None, date(2021, 8, 1)).overdue == ((2, date(2021, 6, 29)),)


def test_all_doses_received_means_nothing_due() -> None:
    found = standing(MMR, BORN, [date(2021, 1, 2), date(2021, 2, 1), date(2021, 5, 1)], None, date(2030, 1, 1))
    assert found.received == 2 and found.next_due is None and found.overdue == ()


def test_an_exemption_waives_overdue_doses() -> None:
    found = standing(MMR, BORN, [], "medical", date(2030, 1, 1))
    assert found.overdue == () and found.exempt == "medical"
