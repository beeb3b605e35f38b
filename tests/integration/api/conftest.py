"""API test fixtures: the app on the test services, and keys for two organisations."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from app.runtime import Runtime
from app.services.clients import SCOPES, create_client
from app.services.organisations import ensure_organisation


@dataclass(frozen=True)
class Key:
    """An API key and the organisation it belongs to."""

    token: str
    organisation_id: int

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def make_key(runtime: Runtime, org: str, scopes: list[str]) -> Key:
    with runtime.sessions.begin() as session:
        organisation = ensure_organisation(session, org)
        _, token = create_client(session, organisation_id=organisation.id, name=f"{org}-key", scopes=scopes)
        return Key(token, organisation.id)


@pytest.fixture()
def app(clean: Runtime) -> Flask:
    return create_app(runtime=clean)


@pytest.fixture()
def client(app: Flask) -> Iterator[FlaskClient]:
    with app.test_client() as test_client:
        yield test_client


@pytest.fixture()
def alice(clean: Runtime) -> Key:
    """Every scope but admin, in organisation A."""
    return make_key(clean, "org-a", sorted(SCOPES - {"admin"}))


@pytest.fixture()
def bob(clean: Runtime) -> Key:
    """Every scope but admin, in organisation B."""
    return make_key(clean, "org-b", sorted(SCOPES - {"admin"}))


@pytest.fixture()
def reader(clean: Runtime) -> Key:
    """Only jobs:read, in organisation A."""
    return make_key(clean, "org-a", ["jobs:read"])


@pytest.fixture()
def admin(clean: Runtime) -> Key:
    """An operator's key."""
    return make_key(clean, "operators", ["admin"])


@pytest.fixture()
def limited_app(clean: Runtime) -> Flask:
    """An app with a tiny rate limit."""
    settings = replace(clean.settings, rate_limit="3 per minute", anonymous_rate_limit="2 per minute")
    return create_app(runtime=replace(clean, settings=settings))
