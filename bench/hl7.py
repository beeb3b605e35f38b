"""HL7 v2 intake end to end: MLLP in → ACK → FHIR stored, with one listener and 2 transform workers.

    .venv/bin/python bench/hl7.py [--messages 5000] [--senders 8] [--patients 500] [--workers 2]

Starts one `triage mllp` listener on a free port of 127.0.0.1 and `--workers` (2) `triage worker
--child hl7.inbound` processes, waits until they are up, then `--senders` threads each open their own
connection and send their share of `--messages` one after another, waiting for each ACK. The
messages cycle through the fixture samples that a receiver answers AA (tests/fixtures/hl7/
expected.tsv), each with a unique MSH-10 and every PID-2/3/4 identifier, order, visit, appointment
and document number suffixed with one of `--patients` patient numbers (so patient matching updates
existing Patients as well as creating them, and each patient has their own orders). Prints: messages/s end to end (first send → every `hl7_messages` row `processed`, polled),
ACK latency p50/p95/p99 (send → ACK read) and ACKs/s, whether the 10,000 messages/minute target
is met, the ACK codes and the count processed (must equal the count sent: no AE/AR, no failures),
and the CPU used by the listener, the workers and their PostgreSQL backends (cores, via psutil).

The listener and workers get the bench targets, a bench-only TRIAGE_SECRET_KEY and Fernet key.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil
from sqlalchemy import text

from app.mllp_frames import Frame, FrameReader, frame
from bench.common import (
    CLIENT_NAME,
    ROOT,
    Target,
    add_target_args,
    load_note,
    percentile_ms,
    reset,
    runtime,
    stop,
    target_from,
    triage_worker,
    wait_until,
)

FIXTURES = ROOT / "tests" / "fixtures" / "hl7"
TARGET_PER_SECOND = 10_000 / 60  # the reference documents: 10,000 messages a minute
ENV = {"TRIAGE_SECRET_KEY": "bench-only-secret-key-not-for-any-real-deployment",
       "TRIAGE_ENCRYPTION_KEYS": base64.urlsafe_b64encode(b"triage-bench-only-key-not-secret").decode()}
_LINE_ENDS = re.compile(rb"(\r\n|\r|\n)")


def load_samples() -> list[bytes]:
    """The fixture messages a conformant receiver answers AA (UTF-8 BOM stripped, as senders do)."""
    rows = [line.split("\t") for line in (FIXTURES / "expected.tsv").read_text().splitlines()
            if line and not line.startswith("#")]
    return [(FIXTURES / name).read_bytes().removeprefix(b"\xef\xbb\xbf") for name, code, *_ in rows if code == "AA"]


#: The fields that name a patient's own things: PID-2..4 (identifiers), placer/filler order numbers
#: (ORC-2/3, OBR-2/3), the visit number (PV1-19), appointment ids (SCH-1/2), the document number (TXA-12).
PATIENT_FIELDS = {b"PID": (2, 3, 4), b"ORC": (2, 3), b"OBR": (2, 3), b"PV1": (19,), b"SCH": (1, 2), b"TXA": (12,)}


def rewrite(sample: bytes, control_id: str, patient: str) -> bytes:
    """The sample with MSH-10 = control_id and the first component of each repetition of the
    PATIENT_FIELDS suffixed `-patient`: each patient has their own orders, visits and documents, as in
    real traffic (else every copy of a sample would rewrite one DiagnosticReport, whoever it is about)."""
    sep, comp, rep = sample[3:4], sample[4:5], sample[5:6]
    parts = _LINE_ENDS.split(sample)
    for i, segment in enumerate(parts):
        fields = segment.split(sep)
        if fields[0] == b"MSH":
            fields[9] = control_id.encode()
        for n in PATIENT_FIELDS.get(fields[0], ()):
            if n < len(fields):
                reps = [r.split(comp, 1) for r in fields[n].split(rep)]
                fields[n] = rep.join(comp.join([r[0] + b"-" + patient.encode() if r[0] else r[0], *r[1:]])
                                     for r in reps)
        parts[i] = sep.join(fields)
    return b"".join(parts)


def make_messages(n: int, patients: int) -> list[tuple[str, bytes]]:
    """n (control id, message) pairs: sample i % S for patient (i // S) % patients."""
    samples = load_samples()
    return [(f"BENCH{i:07d}", rewrite(samples[i % len(samples)], f"BENCH{i:07d}",
                                      f"B{(i // len(samples)) % patients}")) for i in range(n)]


@dataclass
class Sender:
    """What one sender thread saw: ACK latencies (s), MSA-1 codes, MSA-2 mismatches, first send, last ACK."""

    latencies: list[float] = field(default_factory=list)
    codes: Counter[str] = field(default_factory=Counter)
    mismatched: int = 0
    first_send: float = 0.0
    last_ack: float = 0.0

    def run(self, port: int, messages: list[tuple[str, bytes]], start: threading.Barrier) -> None:
        """Send the messages on one connection, each after the previous ACK."""
        reader = FrameReader(limit=1_000_000)
        with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            start.wait()
            self.first_send = time.perf_counter()
            for control_id, message in messages:
                sent = time.perf_counter()
                sock.sendall(frame(message))
                acks: list[Frame] = []
                while not acks:
                    chunk = sock.recv(65536)
                    if not chunk:
                        raise ConnectionError("the listener closed the connection")
                    acks = reader.feed(chunk)
                self.latencies.append(time.perf_counter() - sent)
                msa = next(s for s in re.split(r"\r\n|\r|\n", acks[0].data.decode()) if s.startswith("MSA"))
                fields = msa.split(msa[3])
                self.codes[fields[1]] += 1
                self.mismatched += fields[2] != control_id
            self.last_ack = time.perf_counter()


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listening(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:port."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def statuses(rt: Any) -> Counter[str]:
    """hl7_messages rows per status."""
    with rt.engine.connect() as conn:
        return Counter(dict(conn.execute(text("SELECT status, count(*) FROM hl7_messages GROUP BY status")).all()))


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by these processes (gone ones count 0)."""
    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def backends(rt: Any) -> list[int]:
    """PIDs of the PostgreSQL backends serving the bench database, except this process's."""
    with rt.engine.connect() as conn:
        return list(conn.execute(text("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                                      "AND application_name <> :me"), {"me": CLIENT_NAME}).scalars())


def cpu_use(rt: Any, listener: subprocess.Popen[bytes], workers: list[subprocess.Popen[bytes]]) -> dict[str, float]:
    """CPU seconds so far of the listener, the workers, the database's backends and this process."""
    return {"listener": cpu_seconds([listener.pid]), "workers": cpu_seconds([w.pid for w in workers]),
            "postgres": cpu_seconds(backends(rt)), "this client": cpu_seconds([os.getpid()])}


def run(rt: Any, target: Target, n: int, senders: int, patients: int, worker_count: int = 2) -> None:
    """Send n messages over MLLP with `senders` connections, transform them with the workers, print figures."""
    from rq import Worker

    messages = make_messages(n, patients)
    port = free_port()
    env = {**ENV, "TRIAGE_MLLP_HOST": "127.0.0.1", "TRIAGE_MLLP_PORT": str(port)}
    listener = subprocess.Popen([sys.executable, "-m", "app.cli", "mllp"], cwd=ROOT, env=target.env(**env))
    workers = [triage_worker(target, ["hl7.inbound"], extra_env=env) for _ in range(worker_count)]
    try:
        wait_until(lambda: listening(port), timeout=60, interval=0.1)
        wait_until(lambda: Worker.count(connection=rt.redis) >= worker_count, timeout=60, interval=0.1)
        shares = [messages[i::senders] for i in range(senders)]
        results = [Sender() for _ in range(senders)]
        barrier = threading.Barrier(senders + 1, timeout=60)
        threads = [threading.Thread(target=r.run, args=(port, share, barrier), name=f"sender-{i}")
                   for i, (r, share) in enumerate(zip(results, shares))]
        for thread in threads:
            thread.start()
        cpu = [cpu_use(rt, listener, workers)]
        barrier.wait()
        for thread in threads:
            thread.join()
        if sum(len(r.latencies) for r in results) != n:
            raise SystemExit("a sender stopped before all its messages were ACKed (see its traceback)")
        cpu.append(cpu_use(rt, listener, workers))
        at_last_ack = statuses(rt)
        wait_until(lambda: statuses(rt)["processed"] >= n or statuses(rt)["failed"] > 0, timeout=1200, interval=0.1)
        done = time.perf_counter()
        cpu.append(cpu_use(rt, listener, workers))
    finally:
        stop([listener, *workers])
    first_send = min(r.first_send for r in results)
    wall, ack_wall = done - first_send, max(r.last_ack for r in results) - first_send
    latencies = sorted(s for r in results for s in r.latencies)
    codes = sum((r.codes for r in results), Counter[str]())
    final = statuses(rt)
    with rt.engine.connect() as conn:
        span, resources, patients_stored = conn.execute(text(
            "SELECT extract(epoch FROM (SELECT max(processed_at) - min(received_at) FROM hl7_messages)),"
            " (SELECT count(*) FROM fhir_resources),"
            " (SELECT count(*) FROM fhir_resources WHERE resource_type = 'Patient')")).one()
    rate = n / wall
    print(f"{n} messages ({len(load_samples())} AA samples, {patients} patient numbers) by {senders} senders, "
          f"1 listener, {worker_count} hl7.inbound workers; {load_note()}")
    print(f"end to end (first send → all processed): {wall:.2f} s = {rate:.0f} messages/s "
          f"(ledger: first received_at → last processed_at {float(span):.2f} s = {n / float(span):.0f}/s)")
    print(f"ACKs: {len(latencies)} in {ack_wall:.2f} s = {len(latencies) / ack_wall:.0f}/s; latency ms p50 "
          f"{percentile_ms(latencies, 50):.1f}  p95 {percentile_ms(latencies, 95):.1f}  "
          f"p99 {percentile_ms(latencies, 99):.1f}  max {latencies[-1] * 1000:.1f}")
    print(f"at the last ACK {at_last_ack['accepted']} messages were still waiting for their transform")
    print(f"ACK codes {dict(codes)}, MSA-2 mismatches {sum(r.mismatched for r in results)}; hl7_messages "
          f"{dict(final)}; {resources} FHIR resources ({patients_stored} Patients)")
    for (a, b), label, seconds in (((0, 1), "sending (first send → last ACK)", ack_wall),
                                   ((1, 2), "draining (last ACK → all processed)", wall - ack_wall)):
        print(f"CPU, cores, while {label}: " + ", ".join(f"{k} {(cpu[b][k] - cpu[a][k]) / seconds:.2f}"
                                                        for k in cpu[0]))
    ok = codes == Counter({"AA": n}) and final["processed"] == n and sum(final.values()) == n
    print(f"processed = sent: {'yes' if ok else 'NO'}; target 10,000/min ({TARGET_PER_SECOND:.0f}/s): "
          f"{'met' if rate >= TARGET_PER_SECOND else 'NOT met'} ({rate * 60:,.0f}/min)")
    if not ok:
        raise SystemExit("some messages were not ACKed AA or not processed")


def main() -> None:
    """Parse arguments, reset the bench targets and run the benchmark."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add_target_args(parser)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--senders", type=int, default=8)
    parser.add_argument("--patients", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2, help="hl7.inbound worker processes")
    args = parser.parse_args()
    target = target_from(args)
    rt = runtime(target, **ENV)
    reset(rt, target)
    with rt.engine.begin() as conn:
        conn.execute(text("TRUNCATE hl7_messages, fhir_resources, events RESTART IDENTITY CASCADE"))
        # Statistics of the emptied tables, so that every run plans from the same state whatever an
        # earlier run or session left (autovacuum, which would keep them current, is off on the bench
        # server): like a new organisation before its first autoanalyze.
        conn.execute(text("ANALYZE hl7_messages, fhir_resources, events, jobs, job_attempts"))
    run(rt, target, args.messages, args.senders, args.patients, args.workers)


if __name__ == "__main__":
    main()
