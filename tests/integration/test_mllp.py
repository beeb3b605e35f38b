"""The MLLP listener as a real process, driven by a real socket client.

Every public sample gets the ACK code expected.tsv names; frames split and merged; duplicates
answered once; non-ASCII names; oversize; many connections; idle timeout; SIGTERM drains;
PostgreSQL stopped (a throwaway cluster) gets AE, never AA.
"""

from __future__ import annotations

import signal
import socket
import ssl
import subprocess
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import select, text

from app.mllp_frames import FrameReader, frame
from app.models import Hl7Message
from app.runtime import Runtime
from tests.conftest import Processes, wait_for
from tests.integration.api.test_outages import throwaway  # noqa: F401 - the fixture
from tests.support.hl7_samples import expected_acks, sample
from tests.support.mllp import connected, msa, wait_for_port
from tests.support.servers import Postgres, free_port

ACKS = expected_acks()
ADT = b"MSH|^~\\&|APP|FAC|TRIAGE|HOSP|20260101120000||ADT^A01|%s|P|2.5\rPID|1||%s^^^MRN^MR||DOE^JOHN||19800101|M"


def listen(procs: Processes, **env: str) -> tuple[int, subprocess.Popen[bytes]]:
    port = free_port()
    proc = procs.start("mllp", env={"TRIAGE_MLLP_PORT": str(port), **env})
    wait_for_port(port)
    return port, proc


def messages(runtime: Runtime) -> list[Hl7Message]:
    with runtime.sessions() as session:
        return list(session.scalars(select(Hl7Message).order_by(Hl7Message.id)))


def test_every_sample_gets_its_expected_ack(procs: Processes, clean: Runtime) -> None:
    port, _ = listen(procs)
    with connected(port) as client:
        for name, code in sorted(ACKS.items()):
            client.send(sample(name))
            assert msa(client.ack())[1] == code, name
    stored = messages(clean)
    assert len(stored) == len(ACKS)
    assert sorted(m.status for m in stored if m.ack_code == "AR") == ["rejected", "rejected"]
    accepted = [m for m in stored if m.ack_code == "AA"]
    assert all(m.status == "accepted" and m.job_id for m in accepted)
    assert {m.transport for m in stored} == {"mllp"}


def test_split_and_merged_frames_with_stray_bytes(procs: Processes, clean: Runtime) -> None:
    port, _ = listen(procs)
    frames = b"".join(b"\x0b" + ADT % (b"C%d" % i, b"%d" % i) + b"\x1c\r\n" for i in range(6))
    with connected(port) as client:
        client.send_raw(frames[:3])
        client.send_raw(frames[3:200])
        client.send_raw(frames[200:])
        assert [msa(client.ack())[2] for _ in range(6)] == [f"C{i}" for i in range(6)]
    assert len(messages(clean)) == 6


def test_a_repeated_control_id_is_answered_again_and_stored_once(procs: Processes, clean: Runtime) -> None:
    port, _ = listen(procs)
    with connected(port) as client:
        client.send(ADT % (b"SAME", b"1"))
        first = client.ack()
        client.send(ADT % (b"SAME", b"1"))
        assert client.ack() == first
    assert len(messages(clean)) == 1
    with clean.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM jobs WHERE kind = 'hl7.transform'")).scalar_one() == 1
        audited = conn.execute(text("SELECT action, actor_id, resource_id FROM audit_events")).all()
    assert [tuple(r) for r in audited] == [("hl7_message.create", "mllp", str(messages(clean)[0].id))]  # stored once


def test_non_ascii_names_in_utf8_and_latin1(procs: Processes, clean: Runtime) -> None:
    port, _ = listen(procs)
    latin = ("MSH|^~\\&|A|F|R|RF|20260101||ADT^A01|L1|P|2.5\rPID|1||9^^^MRN||MÜLLER^JOSÉ").encode("latin-1")
    with connected(port) as client:
        client.send(sample("adt_a01_05.hl7"))
        assert msa(client.ack())[1] == "AA"
        client.send(latin)
        assert msa(client.ack())[1] == "AA"
    utf8, latin1 = messages(clean)
    assert bytes(utf8.raw) == sample("adt_a01_05.hl7") and utf8.charset == "utf-8"
    assert latin1.charset == "latin-1" and "MÜLLER" in bytes(latin1.raw).decode("latin-1")


def test_an_oversize_message_gets_ar_and_the_connection_goes_on(procs: Processes, clean: Runtime) -> None:
    port, _ = listen(procs, TRIAGE_HL7_MAX_BYTES="2000")
    big = ADT % (b"BIG", b"1") + b"\rOBX|1|TX|||" + b"x" * 50_000
    with connected(port) as client:
        client.send(big)
        ack = client.ack()
        assert msa(ack)[1] == "AR" and "maximum size" in ack
        client.send(ADT % (b"SMALL", b"2"))
        assert msa(client.ack())[1] == "AA"
    oversize = messages(clean)[0]
    assert oversize.status == "rejected" and oversize.size == len(big) and len(oversize.raw) == 2000


def test_many_connections_at_once(procs: Processes, clean: Runtime) -> None:
    port, _ = listen(procs)

    def sender(n: int) -> list[list[str]]:
        with connected(port) as client:
            answers = []
            for i in range(5):
                client.send(ADT % (b"P%d-%d" % (n, i), b"%d" % n))
                answers.append(msa(client.ack())[1:3])
            return answers

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(sender, range(20)))
    # Frames of many connections are taken together: each connection still gets its own ACKs, in order.
    assert results == [[["AA", f"P{n}-{i}"] for i in range(5)] for n in range(20)]
    assert len(messages(clean)) == 100
    procs.worker("hl7.inbound")  # the frames taken together share transform jobs: each message is processed
    wait_for(lambda: all(m.status == "processed" for m in messages(clean)), timeout=60, what="every transform")


def test_idle_connections_are_closed(procs: Processes, clean: Runtime) -> None:
    port, _ = listen(procs, TRIAGE_MLLP_IDLE_TIMEOUT="1")
    with connected(port) as client:
        assert client.closed_by_peer(timeout=10)


def test_sigterm_stops_accepting_and_exits_after_answering(procs: Processes, clean: Runtime) -> None:
    port, proc = listen(procs)
    with connected(port) as client:
        client.send(ADT % (b"LAST", b"1"))
        assert msa(client.ack())[1] == "AA"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    assert [m.control_id for m in messages(clean)] == ["LAST"]


def test_postgres_down_answers_ae_never_aa(procs: Processes, throwaway: tuple[Postgres, Runtime]) -> None:  # noqa: F811
    server, runtime = throwaway
    port, _ = listen(procs, DATABASE_URL=server.url)
    with connected(port) as client:
        client.send(ADT % (b"UP", b"1"))
        assert msa(client.ack())[1] == "AA"
        server.stop()
        client.send(ADT % (b"DOWN", b"1"))
        ack = client.ack()
        assert msa(ack)[1] == "AE" and "\rERR|" in ack
        server.start()
        client.send(ADT % (b"DOWN", b"1"))
        assert msa(client.ack())[1] == "AA"
    with runtime.sessions() as session:
        assert sorted(session.scalars(select(Hl7Message.control_id))) == ["DOWN", "UP"]


def test_unsupported_types_are_stored_or_rejected_by_setting(procs: Processes, clean: Runtime) -> None:
    odd = b"MSH|^~\\&|A|F|R|RF|20260101||QRY^Q01|Q1|P|2.5\rQRD|1"
    port, _ = listen(procs)
    with connected(port) as client:
        client.send(odd)
        assert msa(client.ack())[1] == "AA"
    strict_port, _ = listen(procs, TRIAGE_HL7_REJECT_UNSUPPORTED="1")
    with connected(strict_port) as client:
        client.send(odd.replace(b"Q1", b"Q2"))
        ack = client.ack()
        assert msa(ack)[1] == "AR" and "|200^" in ack
    assert [m.status for m in messages(clean)] == ["unsupported", "rejected"]


def test_a_sender_not_on_the_allow_list_is_rejected(procs: Processes, clean: Runtime) -> None:
    port, _ = listen(procs, TRIAGE_MLLP_ALLOWED_SENDERS="TRUSTED")
    with connected(port) as client:
        client.send(ADT % (b"X1", b"1"))
        assert msa(client.ack())[1] == "AR"
        client.send((ADT % (b"X2", b"1")).replace(b"|FAC|", b"|TRUSTED|"))
        assert msa(client.ack())[1] == "AA"



def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "mllp.crt", directory / "mllp.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_mllp_over_tls(procs: Processes, clean: Runtime, tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    port, _ = listen(procs, TRIAGE_MLLP_TLS_CERT=str(cert), TRIAGE_MLLP_TLS_KEY=str(key))
    context = ssl.create_default_context(cafile=str(cert))
    with socket.create_connection(("127.0.0.1", port), timeout=15) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as sock:
        sock.sendall(frame(ADT % (b"TLS1", b"1")))
        reader, acks = FrameReader(100_000), []
        while not acks:
            acks = reader.feed(sock.recv(65536))
    assert msa(acks[0].data.decode())[1] == "AA"
    assert [m.control_id for m in messages(clean)] == ["TLS1"]


def test_the_same_control_id_on_two_connections_at_once_is_processed_once(procs: Processes, clean: Runtime) -> None:
    port, _ = listen(procs)

    def send() -> str:
        with connected(port) as client:
            client.send(ADT % (b"TWICE", b"1"))
            return client.ack()

    with ThreadPoolExecutor(max_workers=2) as pool:
        first, second = pool.map(lambda _: send(), range(2))
    assert first == second and msa(first)[1] == "AA"
    assert len(messages(clean)) == 1


def test_a_nul_byte_in_the_header_gets_an_answer(procs: Processes, clean: Runtime) -> None:
    port, _ = listen(procs)
    with connected(port) as client:
        client.send(ADT % (b"N\x00UL", b"1"))
        assert msa(client.ack())[1] in ("AA", "AR")
        client.send(ADT % (b"NEXT", b"2"))  # the connection is still there
        assert msa(client.ack())[1] == "AA"
