"""Outbound HL7 to a real MLLP server started by the test: order, one in flight, AE/AR/timeouts."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from app import create_app
from app.models import OutboundMessage
from app.runtime import Runtime
from jobs.hl7_inbound import transform_message
from tests.conftest import Processes, wait_for
from tests.integration.api.conftest import Key
from tests.support.mllp_server import MllpServer, mllp_server

MESSAGE = "MSH|^~\\&|TRIAGE|HOSP|LAB|LAB|20260101120000||ADT^A08|{control}|P|2.5\rPID|1||{control}^^^HOSP^MR||DOE^JOHN"


@pytest.fixture()
def lab() -> Iterator[MllpServer]:
    with mllp_server() as server:
        yield server


@pytest.fixture()
def outbound_app(clean: Runtime, lab: MllpServer) -> Flask:
    settings = replace(clean.settings, hl7_destinations=(("lab", f"127.0.0.1:{lab.port}"),))
    return create_app(runtime=replace(clean, settings=settings))


def worker(procs: Processes, lab: MllpServer, **env: str) -> None:
    procs.worker("hl7.outbound", env={"TRIAGE_HL7_DESTINATIONS": f"lab=127.0.0.1:{lab.port}", **env})


def send(client: FlaskClient, key: Key, **body: Any) -> Any:
    return client.post("/v1/hl7/outbound", json={"destination": "lab", **body}, headers=key.headers)


def rows(runtime: Runtime) -> list[OutboundMessage]:
    with runtime.sessions() as session:
        return list(session.scalars(select(OutboundMessage).order_by(OutboundMessage.id)))


def test_messages_arrive_in_order_one_at_a_time(outbound_app: Flask, alice: Key, clean: Runtime, lab: MllpServer,
                                               procs: Processes) -> None:
    with outbound_app.test_client() as client:
        for n in range(6):
            assert send(client, alice, message=MESSAGE.format(control=f"M{n}")).status_code == 202
    worker(procs, lab)
    worker(procs, lab)
    wait_for(lambda: [r.status for r in rows(clean)] == ["sent"] * 6, what="every message sent")
    assert lab.control_ids() == [f"M{n}" for n in range(6)]
    assert lab.most_connections == 1
    assert all(r.ack_code == "AA" for r in rows(clean))


def test_ae_is_retried_ar_is_dead_and_the_next_message_still_goes(
        outbound_app: Flask, alice: Key, clean: Runtime, lab: MllpServer, procs: Processes) -> None:
    lab.script.extend(["AE", "AA", "AR"])
    with outbound_app.test_client() as client:
        for control in ("RETRIED", "REFUSED", "AFTER"):
            send(client, alice, message=MESSAGE.format(control=control))
    worker(procs, lab)
    wait_for(lambda: [r.status for r in rows(clean)] == ["sent", "dead", "sent"], what="AE retried, AR dead")
    retried, refused, _ = rows(clean)
    assert retried.attempts == 2 and refused.ack_code == "AR" and "rejected" in (refused.error or "")
    assert lab.control_ids() == ["RETRIED", "RETRIED", "REFUSED", "AFTER"]


def test_no_ack_in_time_is_retried(outbound_app: Flask, alice: Key, clean: Runtime, lab: MllpServer,
                                   procs: Processes) -> None:
    lab.script.append(None)
    with outbound_app.test_client() as client:
        send(client, alice, message=MESSAGE.format(control="SLOW"))
    worker(procs, lab, TRIAGE_HL7_ACK_TIMEOUT="1")
    wait_for(lambda: [r.status for r in rows(clean)] == ["sent"], what="the retry after a timeout")
    [row] = rows(clean)
    assert row.attempts == 2 and lab.control_ids() == ["SLOW", "SLOW"]


def test_bad_requests_are_refused(outbound_app: Flask, alice: Key) -> None:
    with outbound_app.test_client() as client:
        unknown = client.post("/v1/hl7/outbound", json={"destination": "nowhere", "message": MESSAGE.format(
            control="X")}, headers=alice.headers)
        assert unknown.status_code == 422 and unknown.json["errors"][0]["field"] == "destination"
        broken = send(client, alice, message="PID|1||x")
        assert broken.status_code == 422 and broken.json["errors"][0]["field"] == "message"
        both = send(client, alice, message=MESSAGE.format(control="Y"), resource="Patient/1")
        assert both.status_code == 422
        assert send(client, alice, resource="Patient/nope").status_code == 404


def test_a_stored_patient_is_sent_as_adt_a08(outbound_app: Flask, alice: Key, clean: Runtime, lab: MllpServer,
                                            procs: Processes) -> None:
    inbound = MESSAGE.format(control="IN1").replace("ADT^A08", "ADT^A01")
    with outbound_app.test_client() as client:
        accepted = client.post("/v1/hl7/messages", data=inbound.encode(),
                               headers={**alice.headers, "Content-Type": "x-application/hl7-v2+er7"})
        transform_message(accepted.json["message_id"])
        patient = client.get("/v1/fhir/Patient", query_string={"identifier": "IN1"}, headers=alice.headers).json
        sent = send(client, alice, resource=f"Patient/{patient['entry'][0]['resource']['id']}")
        assert sent.status_code == 202 and sent.json["message_type"] == "ADT^A08"
    worker(procs, lab)
    wait_for(lambda: [r.status for r in rows(clean)] == ["sent"], what="the rendered ADT")
    [message] = lab.received
    pid = next(s for s in message.decode().split("\r") if s.startswith("PID"))
    assert pid.split("|")[3].startswith("IN1^^^") and pid.split("|")[5].startswith("DOE^JOHN")
