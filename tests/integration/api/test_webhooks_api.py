"""Webhook endpoints over the API: secrets shown once, SSRF refusals, scopes and tenants, deliveries."""

from __future__ import annotations

import socket
from dataclasses import replace
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from app import create_app
from app.models import WebhookEndpoint
from app.runtime import Runtime
from app.secrets_at_rest import SecretBox
from app.services import egress
from tests.integration.api.conftest import Key

HOOK = "http://127.0.0.1:9/hook"  # never called in these tests


def _create(client: FlaskClient, key: Key, **fields: Any) -> Any:
    body = {"url": HOOK, "event_types": ["administration.*"], **fields}
    return client.post("/v1/webhooks/endpoints", json=body, headers=key.headers)


def test_the_secret_is_shown_once_and_stored_encrypted(client: FlaskClient, alice: Key, clean: Runtime) -> None:
    made = _create(client, alice, description="ward 3 EHR")
    assert made.status_code == 201, made.json
    secret = made.json["secret"]
    assert secret.startswith("whsec_") and len(secret) > 40
    read = client.get(made.headers["Location"], headers=alice.headers)
    assert read.status_code == 200 and "secret" not in read.json
    assert secret not in read.get_data(as_text=True)
    with clean.sessions.begin() as session:
        row = session.scalars(select(WebhookEndpoint)).one()
        assert secret not in row.secret_ciphertext
        assert SecretBox(clean.settings.encryption_keys).open(row.secret_ciphertext) == secret


def test_endpoints_are_listed_changed_and_deleted(client: FlaskClient, alice: Key) -> None:
    endpoint_id = _create(client, alice).json["id"]
    listed = client.get("/v1/webhooks/endpoints", headers=alice.headers).json
    assert [e["id"] for e in listed["items"]] == [endpoint_id]
    changed = client.patch(f"/v1/webhooks/endpoints/{endpoint_id}", headers=alice.headers,
                           json={"event_types": ["*"], "rate_limit_per_minute": 60, "enabled": False})
    assert changed.status_code == 200
    assert changed.json["event_types"] == ["*"] and changed.json["enabled"] is False
    assert changed.json["disabled_reason"] == "disabled by the organisation"
    enabled = client.patch(f"/v1/webhooks/endpoints/{endpoint_id}", headers=alice.headers, json={"enabled": True})
    assert enabled.json["enabled"] is True and enabled.json["disabled_reason"] is None
    assert client.delete(f"/v1/webhooks/endpoints/{endpoint_id}", headers=alice.headers).status_code == 204
    assert client.get(f"/v1/webhooks/endpoints/{endpoint_id}", headers=alice.headers).status_code == 404


def test_invalid_fields_are_named(client: FlaskClient, alice: Key) -> None:
    unknown = _create(client, alice, event_types=["nothing.like.this"])
    assert unknown.status_code == 422
    assert unknown.json["errors"][0]["field"] == "event_types"
    schedule = _create(client, alice, retry_schedule=[5, -1])
    assert schedule.status_code == 422 and "retry_schedule" in schedule.json["errors"][0]["field"]


def test_another_organisation_sees_nothing(client: FlaskClient, alice: Key, bob: Key) -> None:
    endpoint_id = _create(client, alice).json["id"]
    assert client.get(f"/v1/webhooks/endpoints/{endpoint_id}", headers=bob.headers).status_code == 404
    assert client.patch(f"/v1/webhooks/endpoints/{endpoint_id}", headers=bob.headers,
                        json={"enabled": False}).status_code == 404
    assert client.post(f"/v1/webhooks/endpoints/{endpoint_id}/rotate-secret", headers=bob.headers,
                       json={}).status_code == 404
    assert client.get("/v1/webhooks/endpoints", headers=bob.headers).json["items"] == []


def test_the_scope_is_required(client: FlaskClient, reader: Key) -> None:
    assert _create(client, reader).status_code == 403
    assert client.get("/v1/webhooks/deliveries", headers=reader.headers).status_code == 403


@pytest.fixture()
def strict_app(clean: Runtime) -> Flask:
    """The production egress policy: HTTPS to public addresses only."""
    return create_app(runtime=replace(clean, settings=replace(clean.settings, egress_allow_loopback=False)))


@pytest.mark.parametrize("url", [
    "https://127.0.0.1/hook",
    "https://10.0.0.1/hook",
    "https://169.254.169.254/latest/meta-data",
    "https://[::1]/hook",
    "https://localhost/hook",  # a name that resolves to loopback
    "http://example.org/hook",  # not HTTPS
    "https://user:pw@example.org/hook",
])
def test_urls_to_private_addresses_are_refused(strict_app: Flask, alice: Key, url: str) -> None:
    with strict_app.test_client() as client:
        refused = _create(client, alice, url=url)
    assert refused.status_code == 422, refused.json
    assert refused.json["errors"][0]["field"] == "url"


def _resolving_to(address: str) -> egress.Resolver:
    def resolve(host: str, port: int, **_: Any) -> list[tuple[Any, ...]]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    return resolve


@pytest.mark.parametrize("address", ["127.0.0.1", "10.0.0.1", "169.254.169.254", "192.168.1.20", "100.64.0.1"])
def test_a_hostname_resolving_to_a_private_address_is_refused(address: str) -> None:
    with pytest.raises(egress.EgressRefusedError, match="non-public"):
        egress.check("https://hooks.example.org/x", allow_loopback=False, resolver=_resolving_to(address))


def test_a_hostname_resolving_to_a_public_address_passes() -> None:
    egress.check("https://hooks.example.org/x", allow_loopback=False, resolver=_resolving_to("93.184.216.34"))


def test_delivery_refuses_a_name_that_now_resolves_privately() -> None:
    """The check runs again at delivery, on the address that would be connected to (DNS rebinding)."""
    with pytest.raises(egress.EgressRefusedError):
        egress.post("https://hooks.example.org/x", b"{}", {}, timeout=1, allow_loopback=False,
                    resolver=_resolving_to("169.254.169.254"))


def test_loopback_is_allowed_only_by_the_development_setting(client: FlaskClient, alice: Key) -> None:
    assert _create(client, alice, url="http://127.0.0.1:9/hook").status_code == 201
    assert _create(client, alice, url="http://10.0.0.1/hook").status_code == 422


def test_rotation_returns_a_new_secret_and_an_overlap(client: FlaskClient, alice: Key) -> None:
    made = _create(client, alice).json
    rotated = client.post(f"/v1/webhooks/endpoints/{made['id']}/rotate-secret", headers=alice.headers,
                          json={"overlap_seconds": 3600})
    assert rotated.status_code == 200
    assert rotated.json["secret"].startswith("whsec_") and rotated.json["secret"] != made["secret"]
    assert rotated.json["previous_secret_expires_at"]


def test_admin_breakers_need_admin_and_unknown_is_404(client: FlaskClient, alice: Key, admin: Key) -> None:
    assert client.get("/v1/admin/breakers", headers=alice.headers).status_code == 403
    assert client.get("/v1/admin/breakers", headers=admin.headers).json == {"items": []}
    assert client.post("/v1/admin/breakers/nope/reset", headers=admin.headers).status_code == 404


def _resolving_to_v6(address: str) -> egress.Resolver:
    def resolve(host: str, port: int, **_: Any) -> list[tuple[Any, ...]]:
        return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port, 0, 0))]

    return resolve


@pytest.mark.parametrize("address", ["::ffff:10.0.0.1", "64:ff9b::a00:1", "2002:a00:1::", "fe80::1", "fc00::1"])
def test_ipv6_forms_of_private_addresses_are_refused(address: str) -> None:
    with pytest.raises(egress.EgressRefusedError, match="non-public"):
        egress.check("https://hooks.example.org/x", allow_loopback=False, resolver=_resolving_to_v6(address))


def test_a_name_that_does_not_resolve_is_refused_at_registration_and_retried_at_delivery() -> None:
    def fails(*_: Any, **__: Any) -> list[tuple[Any, ...]]:
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    with pytest.raises(egress.EgressRefusedError, match="does not resolve"):
        egress.check("https://hooks.example.org/x", allow_loopback=False, resolver=fails)
    with pytest.raises(egress.EgressFailedError):
        egress.post("https://hooks.example.org/x", b"{}", {}, timeout=1, allow_loopback=False, resolver=fails)


def test_a_disabled_endpoint_cannot_be_pinged_or_recovered(client: FlaskClient, alice: Key) -> None:
    endpoint_id = _create(client, alice, enabled=False).json["id"]
    assert client.post(f"/v1/webhooks/endpoints/{endpoint_id}/test", headers=alice.headers).status_code == 409
    recovered = client.post(f"/v1/webhooks/endpoints/{endpoint_id}/recover", headers=alice.headers,
                            query_string={"since": "2026-01-01T00:00:00Z"})
    assert recovered.status_code == 409
