"""The cost of auditing: a PHI read with and without its audit record, and audit rows written per second.

    BENCH_DATABASE_URL=... BENCH_REDIS_URL=... .venv/bin/python bench/audit.py \\
        [--requests 500] [--warmup 50] [--rate 40] [--seconds 5]

1. Two gunicorn servers (2 sync workers each) on the bench targets: `app.wsgi:app` (audited) and
   `bench.wsgi_unaudited:app` (`auditing.record_success` and the after-request hook patched to
   no-ops in that process only). One sender, sequential, at a steady --rate, alternates between them
   with `GET /v1/patients/{id}` and a `clinical:read` key; after --warmup requests each, --requests
   each are timed from send to the response's last byte (a new connection each: gunicorn's sync
   workers close it). Prints p50/p95/p99/max per server and the audit rows the read wrote.
2. `audit.record` / `record_many` from this process, for --seconds each: (a) one writer, one record
   per transaction; (b) 4 threads on one organisation's chain (each waits for the chain head's row
   lock, held until the holder commits); (c) 4 threads on 4 organisations' chains; (d) one writer,
   `record_many` batches of 100 per transaction. Prints rows/s and transaction p50/p99.
Then `audit.verify` walks every chain written. Audit records cannot be truncated, so each run uses
new organisations (`bench-audit-<run>-…`) whose chains start empty.
"""

from __future__ import annotations

import argparse
import http.client
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import date
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.fernet import Fernet
from sqlalchemy import func, select, text

from bench.common import (
    CLIENT_NAME,
    ROOT,
    Target,
    add_target_args,
    load_note,
    percentile_ms,
    reset,
    runtime,
    table,
    target_from,
    wait_until,
)
from bench.hl7 import cpu_seconds, free_port

SERVERS = (("audited", "app.wsgi:app"), ("not audited", "bench.wsgi_unaudited:app"))


def organisation(rt: Any, name: str) -> int:
    """A new organisation's id (its audit chain is empty)."""
    from app.services.organisations import ensure_organisation

    with rt.sessions.begin() as session:
        return int(ensure_organisation(session, name).id)


def reader(rt: Any, organisation_id: int) -> tuple[str, int]:
    """A `clinical:read` key of the organisation and one of its patients' ids."""
    from app.models import Patient
    from app.services import clinical
    from app.services.clients import create_client

    with rt.sessions.begin() as session:
        _, token = create_client(session, organisation_id=organisation_id, name="bench-audit", scopes=["clinical:read"])
        patient = clinical.create(session, Patient, {"mrn": "B1", "given_name": "Ada", "family_name": "Bench",
                                                     "date_of_birth": date(2012, 1, 1)}, organisation_id=organisation_id)
        return token, int(patient.id)


def gunicorn(target: Target, app: str, port: int) -> subprocess.Popen[bytes]:
    """gunicorn with 2 sync workers serving `app`, in its own process group."""
    env = target.env(TRIAGE_RATE_LIMIT="1000000 per minute", TRIAGE_SECRET_KEY=secrets.token_urlsafe(48),
                     TRIAGE_ENCRYPTION_KEYS=Fernet.generate_key().decode())  # throwaway: nothing is encrypted
    command = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "2",
               "--log-level", "warning", app]
    return subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True)


def get(port: int, path: str, token: str) -> tuple[float, int]:
    """(seconds from send to the last byte, status) of one GET."""
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
        response = conn.getresponse()
        response.read()
    finally:
        conn.close()
    return time.perf_counter() - started, response.status


def ready(port: int) -> bool:
    """Whether the server answers its liveness probe."""
    try:
        return get(port, "/health/live", "")[1] == 200
    except OSError:
        return False


def latencies(ports: list[int], path: str, token: str, *, count: int, warmup: int, rate: float) -> dict[str, Any]:
    """Alternate sequential GETs between the servers at `rate` overall; each server's timed latencies."""
    timed: list[list[float]] = [[] for _ in ports]
    errors, late = [0] * len(ports), 0
    start = time.perf_counter() + 0.1
    for i in range((warmup + count) * len(ports)):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        server = i % len(ports)
        seconds, status = get(ports[server], path, token)
        if i >= warmup * len(ports):
            late += delay < -0.001
            timed[server].append(seconds)
            errors[server] += status != 200
    return {"timed": [sorted(t) for t in timed], "errors": errors, "late": late}


def entry(organisation_id: int, n: int) -> Any:
    """An audit entry shaped like a PHI read's."""
    from app.services.audit import AuditEntry

    return AuditEntry(action="patient.read", outcome="success", actor_type="client", actor_id="client:1",
                      organisation_id=organisation_id, resource_type="Patient", resource_id=str(n % 1000),
                      patient_id=str(n % 1000), request_id=uuid.uuid4().hex, source_ip="127.0.0.1",
                      user_agent="bench-audit")


def backends(rt: Any, n: int) -> list[int]:
    """PIDs of this process's PostgreSQL backends, after opening at least n pooled connections."""
    held = [rt.engine.connect() for _ in range(n)]
    for conn in held[1:]:
        conn.close()
    pids = held[0].execute(text("SELECT pid FROM pg_stat_activity WHERE application_name = :me"),
                           {"me": CLIENT_NAME}).scalars().all()
    held[0].close()
    return list(pids)


def write(rt: Any, chains: list[int], *, seconds: float, batch: int = 1) -> dict[str, Any]:
    """One thread per chain id writes `batch` records per transaction until time is up."""
    from app.services import audit

    rows, spans = [0] * len(chains), [[] for _ in chains]
    gate = threading.Barrier(len(chains) + 1)

    def writer(k: int, chain: int, deadline: float) -> None:
        gate.wait()
        while time.perf_counter() < deadline:
            begun = time.perf_counter()
            with rt.sessions.begin() as session:
                if batch == 1:
                    audit.record(session, entry(chain, rows[k]))
                else:
                    audit.record_many(session, [entry(chain, rows[k] + j) for j in range(batch)])
            spans[k].append(time.perf_counter() - begun)
            rows[k] += batch

    pids = backends(rt, len(chains))
    cpu = time.process_time(), cpu_seconds(pids)
    started = time.perf_counter()
    threads = [threading.Thread(target=writer, args=(k, chain, started + seconds)) for k, chain in enumerate(chains)]
    for thread in threads:
        thread.start()
    gate.wait()
    for thread in threads:
        thread.join()
    return {"rows": sum(rows), "seconds": time.perf_counter() - started, "spans": sorted(s for k in spans for s in k),
            "client cpu": time.process_time() - cpu[0], "postgres cpu": cpu_seconds(pids) - cpu[1]}


def audit_rows(rt: Any, organisation_id: int) -> int:
    """Audit records of an organisation."""
    from app.models import AuditEvent

    with rt.sessions() as session:
        return int(session.scalar(select(func.count()).where(AuditEvent.organisation_id == organisation_id)))


def measure_reads(rt: Any, target: Target, run: str, args: argparse.Namespace) -> int:
    """Part 1: print the latency table; return the organisation whose chain the audited server wrote."""
    org = organisation(rt, f"bench-audit-{run}-api")
    token, patient = reader(rt, org)
    ports = [free_port() for _ in SERVERS]
    servers = [gunicorn(target, app, port) for (_, app), port in zip(SERVERS, ports)]
    try:
        for server, port in zip(servers, ports):
            wait_until(lambda s=server, p=port: s.poll() is not None or ready(p), timeout=30, interval=0.1)
            if server.poll() is not None:
                raise SystemExit(f"gunicorn {server.args[-1]} exited with {server.returncode}")
        found = latencies(ports, f"/v1/patients/{patient}", token, count=args.requests, warmup=args.warmup,
                          rate=args.rate)
    finally:
        for server in servers:
            os.killpg(server.pid, signal.SIGTERM)
        for server in servers:
            server.wait(timeout=30)
    rows = [(name, len(t), *(f"{percentile_ms(t, p):.2f}" for p in (50, 95, 99)), f"{t[-1] * 1000:.2f}", e)
            for (name, _), t, e in zip(SERVERS, found["timed"], found["errors"])]
    print(f"GET /v1/patients/{{id}}, clinical:read key, gunicorn 2 sync workers per server, one sequential sender "
          f"at {args.rate:.0f} req/s alternating between the servers, {args.warmup} warm-up requests each "
          f"({found['late']} sends started >1 ms late); {load_note()}")
    print(table(rows, ["server", "requests", "p50 ms", "p95 ms", "p99 ms", "max ms", "errors"]))
    audited, plain = found["timed"]
    print(f"audit cost: p50 +{percentile_ms(audited, 50) - percentile_ms(plain, 50):.2f} ms, "
          f"p95 +{percentile_ms(audited, 95) - percentile_ms(plain, 95):.2f} ms; audit rows written: "
          f"{audit_rows(rt, org)} (audited requests sent: {args.warmup + args.requests}; the other server: none)")
    return org


def measure_writes(rt: Any, run: str, seconds: float) -> list[int]:
    """Part 2: print the rows/s table; return the organisations whose chains were written."""
    orgs = [organisation(rt, f"bench-audit-{run}-w{k}") for k in range(7)]
    cases = [("(a) 1 writer, 1 record/txn", orgs[:1], 1), ("(b) 4 threads, 1 chain", orgs[1:2] * 4, 1),
             ("(c) 4 threads, 4 chains", orgs[2:6], 1), ("(d) 1 writer, record_many 100/txn", orgs[6:7], 100)]
    rows = []
    for label, chains, batch in cases:
        found = write(rt, chains, seconds=seconds, batch=batch)
        n, spans = found["rows"], found["spans"]
        rows.append((label, n, f"{n / found['seconds']:,.0f}", f"{percentile_ms(spans, 50):.2f}",
                     f"{percentile_ms(spans, 99):.2f}", f"{found['client cpu'] / n * 1e6:.0f}",
                     f"{found['postgres cpu'] / n * 1e6:.0f}"))
    print(f"\naudit.record / record_many from this process (SQLAlchemy, threads), {seconds:.0f} s each; {load_note()}")
    print(table(rows, ["case", "rows", "rows/s", "txn p50 ms", "txn p99 ms", "client CPU µs/row",
                       "PostgreSQL CPU µs/row"]))
    return orgs


def check(rt: Any, orgs: list[int]) -> bool:
    """Verify each chain written; print what was checked."""
    from app.services import audit

    started, checked, ok = time.perf_counter(), 0, True
    with rt.sessions() as session:
        for org in orgs:
            result = audit.verify(session, org)
            checked += result.records_checked
            if not result.ok:
                ok = False
                print(f"chain {org} BROKEN: {result.first_break}")
    took = time.perf_counter() - started
    print(f"\naudit.verify: {len(orgs)} chains, {checked:,} records in {took:.1f} s "
          f"({checked / took:,.0f} records/s): {'the chains hold' if ok else 'BROKEN'}")
    return ok


def main() -> None:
    """Part 1, part 2, then verify."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_target_args(parser)
    parser.add_argument("--requests", type=int, default=500, help="timed requests per server")
    parser.add_argument("--warmup", type=int, default=50, help="untimed requests per server first")
    parser.add_argument("--rate", type=float, default=40.0, help="requests per second, both servers together")
    parser.add_argument("--seconds", type=float, default=5.0, help="per write case")
    args = parser.parse_args()
    target = target_from(args)
    rt = runtime(target)
    reset(rt, target)
    run = f"{time.strftime('%Y%m%d%H%M%S')}-{os.getpid()}"
    orgs = [measure_reads(rt, target, run, args), *measure_writes(rt, run, args.seconds)]
    ok = check(rt, orgs)
    rt.close()
    if not ok:
        sys.exit("audit chain verification failed")


if __name__ == "__main__":
    main()
