"""Messages taken in together (the MLLP listener's group commit) and their shared transform job."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from rq.timeouts import JobTimeoutException
from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError

from app import fhir
from app.mllp_frames import Frame
from app.models import Hl7Message, Job
from app.runtime import Runtime
from app.services import hl7_intake
from jobs import hl7_inbound
from jobs.errors import PermanentError
from tests.support.mllp import msa
from workers.mllp import MllpListener

ADT = "MSH|^~\\&|APP|FAC|TRIAGE|HOSP|20260101120000||ADT^A01|{control}|P|2.5\rPID|1||{mrn}^^^MRN^MR||DOE^JOHN||19800101|M"
POLICY = hl7_intake.Policy(max_bytes=100_000, duplicate_window_seconds=3600)


def adt(control: str, mrn: str = "1") -> Frame:
    raw = ADT.format(control=control, mrn=mrn).encode()
    return Frame(raw, len(raw))


@pytest.fixture()
def listener(clean: Runtime, org_id: int) -> MllpListener:
    return MllpListener(clean.use(), org_id, POLICY, idle_timeout=5)


def stored(runtime: Runtime) -> list[Hl7Message]:
    with runtime.sessions() as session:
        return list(session.scalars(select(Hl7Message).order_by(Hl7Message.id)))


def jobs(runtime: Runtime) -> list[tuple[str, list[Any]]]:
    with runtime.sessions() as session:
        return [(j.kind, j.arguments) for j in session.scalars(select(Job).order_by(Job.id))]


def fail_store_of(message_id: int, error: Exception, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make storing this message's resources raise `error` (the others are stored as usual)."""
    store = hl7_inbound._store

    def failing(session: Any, message: Any, result: Any) -> Any:
        if message.id == message_id:
            raise error
        return store(session, message, result)

    monkeypatch.setattr(hl7_inbound, "_store", failing)


def test_frames_taken_together_share_one_transaction_and_one_transform_job(listener: MllpListener,
                                                                          clean: Runtime) -> None:
    acks = listener.take_many([adt("A"), adt("B", "2"), Frame(b"not hl7", 7), adt("C", "3")])
    assert [msa(ack)[1:3] for ack in acks[:2] + acks[3:]] == [["AA", "A"], ["AA", "B"], ["AA", "C"]]
    assert msa(acks[2])[1] == "AR"
    messages = stored(clean)
    assert [m.status for m in messages] == ["accepted", "accepted", "rejected", "accepted"]
    accepted = [m.id for m in messages if m.status == "accepted"]
    assert jobs(clean) == [("hl7.transform_batch", [accepted])]
    assert {m.job_id for m in messages if m.status == "accepted"} == {1} and messages[2].job_id is None
    assert clean.redis.llen("rq:queue:hl7.inbound") == 1  # pushed once the transaction committed
    with clean.engine.connect() as conn:
        audited = conn.execute(text("SELECT resource_id, outcome FROM audit_events ORDER BY seq")).all()
    assert [tuple(r) for r in audited] == [(str(m.id), "denied" if m.status == "rejected" else "success")
                                           for m in messages]


def test_a_repeat_in_the_same_batch_or_after_it_gets_the_first_answer(listener: MllpListener, clean: Runtime) -> None:
    first, again = listener.take_many([adt("SAME"), adt("SAME")])
    assert first == again and msa(first)[1] == "AA"
    assert listener.take_many([adt("SAME"), adt("OTHER")])[0] == first
    assert [m.control_id for m in stored(clean)] == ["SAME", "OTHER"]
    assert [kind for kind, _ in jobs(clean)] == ["hl7.transform", "hl7.transform"]  # one accepted each time


def test_a_message_resent_after_an_ar_is_judged_afresh(listener: MllpListener, clean: Runtime) -> None:
    bad = ADT.format(control="FIX", mrn="1").replace("|P|2.5", "|X|2.5").encode()  # MSH-11 X: AR 202
    refused = listener.take(Frame(bad, len(bad)))
    assert msa(refused)[1] == "AR"
    fixed = listener.take(adt("FIX"))  # the same control id, corrected
    assert msa(fixed)[1] == "AA" and listener.take(adt("FIX")) == fixed  # and a repeat of that is a duplicate
    assert [(m.control_id, m.status) for m in stored(clean)] == [("FIX", "rejected"), ("FIX", "accepted")]


def test_an_unexpected_error_answers_ar_for_its_own_message_only(listener: MllpListener, clean: Runtime,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    judge = hl7_intake._judge

    def failing(raw: bytes, size: int, policy: hl7_intake.Policy) -> Any:
        if b"|BAD|" in raw:
            raise RuntimeError("a bug")
        return judge(raw, size, policy)

    monkeypatch.setattr(hl7_intake, "_judge", failing)
    acks = listener.take_many([adt("OK1"), adt("BAD"), adt("OK2", "2")])
    assert [msa(ack)[1:3] for ack in acks] == [["AA", "OK1"], ["AR", "BAD"], ["AA", "OK2"]]
    assert [m.control_id for m in stored(clean)] == ["OK1", "OK2"]


def test_a_batch_job_transforms_every_message_and_dead_letters_only_for_the_unmappable(
        listener: MllpListener, clean: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    listener.take_many([adt("M1"), adt("M2", "2"), adt("M3", "3")])
    ids = [m.id for m in stored(clean)]
    transform = fhir.transform

    def unmappable_m2(er7: str, zone: Any = None) -> fhir.MappingResult:
        if "|M2|" in er7:
            raise fhir.MappingError("PID-3 has no usable identifier")
        return transform(er7, zone)

    with monkeypatch.context() as patched:
        patched.setattr(fhir, "transform", unmappable_m2)
        with pytest.raises(PermanentError, match=f"{ids[1]}: PID-3"):
            hl7_inbound.transform_messages(ids)
    assert [m.status for m in stored(clean)] == ["processed", "failed", "processed"]
    hl7_inbound.transform_messages(ids)  # requeued after the mapping is fixed: only the failed one is redone
    after = stored(clean)
    assert [m.status for m in after] == ["processed"] * 3 and after[1].resources


def test_a_batch_job_tries_every_message_before_raising_an_error_to_be_retried(
        listener: MllpListener, clean: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    listener.take_many([adt("E1"), adt("E2", "2")])
    ids = [m.id for m in stored(clean)]
    fail_store_of(ids[0], ConnectionError("database went away"), monkeypatch)
    with pytest.raises(ConnectionError):
        hl7_inbound.transform_messages(ids)
    assert [m.status for m in stored(clean)] == ["accepted", "processed"]


def test_on_the_last_attempt_only_the_message_that_fails_is_left_failed(
        listener: MllpListener, clean: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    listener.take_many([adt("L1"), adt("L2", "2")])
    ids = [m.id for m in stored(clean)]
    with clean.engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET attempts = max_attempts"))  # this run is the job's last attempt
    fail_store_of(ids[0], RuntimeError("a bug"), monkeypatch)
    with pytest.raises(RuntimeError):
        hl7_inbound.transform_messages(ids)
    first, second = stored(clean)
    assert (first.status, second.status) == ("failed", "processed") and "RuntimeError" in (first.error or "")
    with clean.engine.connect() as conn:
        announced = conn.execute(text("SELECT type, payload->>'message_id' FROM events ORDER BY id")).all()
    assert sorted(tuple(e) for e in announced) == [("hl7.message.failed", str(ids[0])),
                                                   ("hl7.message.processed", str(ids[1]))]


def test_a_batch_that_runs_out_of_time_leaves_its_messages_failed_only_on_the_last_attempt(
        listener: MllpListener, clean: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    listener.take_many([adt("T1"), adt("T2", "2")])
    ids = [m.id for m in stored(clean)]

    def deadline(session: Any, message: Any, result: Any) -> Any:
        raise JobTimeoutException("Job exceeded its timeout of 60 s")

    monkeypatch.setattr(hl7_inbound, "_store", deadline)
    with pytest.raises(JobTimeoutException):
        hl7_inbound.transform_messages(ids)
    assert [m.status for m in stored(clean)] == ["accepted", "accepted"]  # retried later
    with clean.engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET attempts = max_attempts"))
    with pytest.raises(JobTimeoutException):
        hl7_inbound.transform_messages(ids)
    assert [(m.status, m.error) for m in stored(clean)] == [("failed", "transform failed: JobTimeoutException")] * 2


def test_a_database_outage_answers_ae_to_every_frame_of_the_batch(listener: MllpListener, clean: Runtime,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    def outage(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError("INSERT", {}, Exception("server closed the connection unexpectedly"))

    monkeypatch.setattr(hl7_intake, "receive_many", outage)
    acks = listener.take_many([adt("D1"), adt("D2", "2"), adt("D3", "3")])
    assert [msa(ack)[1:3] for ack in acks] == [["AE", "D1"], ["AE", "D2"], ["AE", "D3"]]
    assert all("\rERR|" in ack for ack in acks) and stored(clean) == []


def test_batches_about_the_same_people_at_once_make_one_patient_each(listener: MllpListener, clean: Runtime) -> None:
    listener.take_many([adt(f"X{i}", mrn) for i, mrn in enumerate("ABCDDCBA")])
    ids = [m.id for m in stored(clean)]
    batches = [ids[:4], ids[4:]]  # the same four people, in opposite orders
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(hl7_inbound.transform_messages, batches))
    assert {m.status for m in stored(clean)} == {"processed"}
    with clean.engine.connect() as conn:
        patients = conn.execute(text("SELECT count(*) FROM fhir_resources WHERE resource_type = 'Patient'")).scalar()
    assert patients == 4
