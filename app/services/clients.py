"""API clients: keys generated once, stored hashed, scoped, revocable."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, func, select, update
from sqlalchemy.orm import Session

from app.models import ApiClient

#: Every scope a key may carry. `admin` opens the operators' surface.
SCOPES: frozenset[str] = frozenset(
    {
        "jobs:read",
        "jobs:write",
        "administrations:read",
        "administrations:write",
        "clinical:read",
        "clinical:write",
        "hl7:read",
        "hl7:write",
        "reports:read",
        "reports:write",
        "webhooks:manage",
        "metrics:read",
        "audit:read",
        "privacy:manage",
        "admin",
    }
)
_PREFIX = "trg"


class UnknownScopeError(ValueError):
    """A scope that is not in SCOPES."""


@dataclass(frozen=True)
class Caller:
    """An authenticated API client: who, for which organisation, allowed to do what."""

    client_id: int
    organisation_id: int
    name: str
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        """Whether this caller holds the scope (admin holds every scope)."""
        return scope in self.scopes or "admin" in self.scopes


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_client(session: Session, *, organisation_id: int, name: str, scopes: list[str]) -> tuple[ApiClient, str]:
    """A new client and its key; the key is returned here once and never stored."""
    unknown = set(scopes) - SCOPES
    if unknown:
        raise UnknownScopeError(f"unknown scope(s): {', '.join(sorted(unknown))}; known: {', '.join(sorted(SCOPES))}")
    prefix, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    client = ApiClient(
        organisation_id=organisation_id, name=name, key_prefix=prefix, key_hash=_digest(secret), scopes=sorted(scopes)
    )
    session.add(client)
    session.flush()
    return client, f"{_PREFIX}_{prefix}_{secret}"


_CLIENTS = ApiClient.__table__.c
#: Every request runs this; built once, a Core statement keeps its cache key and compiled form.
_BY_PREFIX = select(
    _CLIENTS.id, _CLIENTS.organisation_id, _CLIENTS.name, _CLIENTS.key_hash, _CLIENTS.scopes, _CLIENTS.revoked
).where(_CLIENTS.key_prefix == bindparam("prefix"))


def authenticate(session: Session | Connection, key: str) -> Caller | None:
    """The caller a key belongs to, or None (malformed, unknown, revoked or wrong secret).

    Read from the database on every call, never cached: a revoked key fails on its next request.
    """
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != _PREFIX:
        return None
    client = session.execute(_BY_PREFIX, {"prefix": parts[1]}).one_or_none()
    if client is None or client.revoked or not hmac.compare_digest(client.key_hash, _digest(parts[2])):
        return None
    return Caller(client.id, client.organisation_id, client.name, frozenset(client.scopes))


def revoke_client(session: Session, client_id: int) -> bool:
    """Revoke a client's key at once; False if there is no such active client."""
    result = session.execute(
        update(ApiClient)
        .where(ApiClient.id == client_id, ApiClient.revoked.is_(False))
        .values(revoked=True, revoked_at=func.now())
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def list_clients(session: Session) -> list[ApiClient]:
    """Every client, oldest first (keys are never shown)."""
    return list(session.scalars(select(ApiClient).order_by(ApiClient.id)))
