"""Organisations (tenants)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import Organisation


def ensure_organisation(session: Session, name: str) -> Organisation:
    """The organisation with this name, created if it does not exist yet."""
    org = session.scalars(select(Organisation).where(Organisation.name == name)).one_or_none()
    if org is None:
        org = Organisation(name=name)
        session.add(org)
        session.flush()
    return org
