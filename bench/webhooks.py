"""Webhook deliveries end to end: deliveries per second to a local receiver with 2 workers.

    .venv/bin/python bench/webhooks.py [--events 2000] [--batch 100]

An organisation gets one endpoint (`*`) pointing at a threaded HTTP receiver started here, on
127.0.0.1, that answers 200 at once and counts requests. `--events` events are emitted through
`app.services.events.emit`, `--batch` per transaction (each creates one delivery and its ledger
job on the `webhooks` queue); then two `triage worker --child webhooks` processes start and the
benchmark polls `webhook_deliveries` until every delivery is `delivered`. Prints deliveries per
second (wall: worker spawn → all delivered; drain: first job start → last `delivered_at`), the
p50/p95 of event `created_at` → `delivered_at` (every event waits in the queue from its emission,
so this is mostly queueing) and the receiver's request count, which must equal `--events`.

Workers and this process run with TRIAGE_EGRESS_ALLOW_LOOPBACK=1 (plain HTTP to loopback) and a
fixed bench-only Fernet key in TRIAGE_ENCRYPTION_KEYS.

Not measured: a receiver answering 503 to the first 20% of requests. With the default breaker
(5 consecutive failures open it for 60 s, then one trial call), 400 failures would take hours.
"""

from __future__ import annotations

import argparse
import base64
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import text

from bench.common import (
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

#: A fixed Fernet key for the benchmark's throwaway endpoint secrets (never use it elsewhere).
BENCH_KEY = base64.urlsafe_b64encode(b"triage-bench-only-key-not-secret").decode()
ENV = {"TRIAGE_EGRESS_ALLOW_LOOPBACK": "1", "TRIAGE_ENCRYPTION_KEYS": BENCH_KEY}


class Receiver(ThreadingHTTPServer):
    """A webhook receiver on 127.0.0.1 (a free port) that answers 200 at once and counts requests."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.received = 0
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        """The URL to register as the endpoint."""
        return f"http://127.0.0.1:{self.server_address[1]}/hook"

    def count(self) -> None:
        """Count one received request (handler threads call this)."""
        with self._lock:
            self.received += 1


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the workers' connection pools reuse connections

    def do_POST(self) -> None:
        """Read the body, count the request, answer 200 with an empty body."""
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        assert isinstance(self.server, Receiver)
        self.server.count()
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request log line."""


def seed(rt: Any, org_id: int, url: str) -> int:
    """Empty the event and webhook tables and register one endpoint for every event type; its id."""
    from app.secrets_at_rest import SecretBox
    from app.services.webhook_endpoints import create

    with rt.engine.begin() as conn:
        conn.execute(text("TRUNCATE events, webhook_endpoints, webhook_deliveries, webhook_attempts "
                          "RESTART IDENTITY CASCADE"))
    with rt.sessions.begin() as session:
        made = create(session, SecretBox(rt.settings.require_encryption_keys()),
                      {"url": url, "event_types": ["*"], "description": "bench receiver"},
                      organisation_id=org_id, allow_loopback=True)
        return int(made.endpoint.id)


def emit_events(rt: Any, org_id: int, n: int, batch: int) -> float:
    """Emit n `administration.recorded` events, `batch` per transaction; seconds taken."""
    from app.services.events import emit

    started = time.perf_counter()
    for start in range(0, n, batch):
        with rt.sessions.begin() as session:
            for i in range(start, min(n, start + batch)):
                emit(session, organisation_id=org_id, type="administration.recorded", subject=f"bench-{i}",
                     payload={"administration_id": i + 1, "code": "recorded"})
    return time.perf_counter() - started


def delivered(rt: Any) -> int:
    """How many deliveries are `delivered`."""
    with rt.engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM webhook_deliveries WHERE status = 'delivered'"))
                   .scalar_one())


def run(rt: Any, target: Target, org_id: int, n: int, batch: int) -> None:
    """Emit n events, deliver them with 2 webhooks workers, print the figures."""
    receiver = Receiver()
    threading.Thread(target=receiver.serve_forever, name="receiver", daemon=True).start()
    try:
        seed(rt, org_id, receiver.url)
        emit_seconds = emit_events(rt, org_id, n, batch)
        with rt.engine.connect() as conn:
            made = int(conn.execute(text("SELECT count(*) FROM webhook_deliveries")).scalar_one())
        if made != n:
            raise SystemExit(f"expected {n} deliveries, emit created {made}")
        started = time.perf_counter()
        workers = [triage_worker(target, ["webhooks"], extra_env=ENV) for _ in range(2)]
        try:
            wait_until(lambda: delivered(rt) >= n, timeout=600, interval=0.1)
            wall = time.perf_counter() - started
        finally:
            stop(workers)
        with rt.engine.connect() as conn:
            drain = float(conn.execute(text(
                "SELECT extract(epoch FROM (SELECT max(delivered_at) FROM webhook_deliveries)"
                " - (SELECT min(started_at) FROM job_attempts))")).scalar_one())
            latencies = sorted(float(s) for s in conn.execute(text(
                "SELECT extract(epoch FROM d.delivered_at - e.created_at) FROM webhook_deliveries d"
                " JOIN events e ON e.id = d.event_id")).scalars())
            attempts = int(conn.execute(text("SELECT count(*) FROM webhook_attempts")).scalar_one())
    finally:
        receiver.shutdown()
        receiver.server_close()
    print(f"emit: {n} events (1 delivery + 1 ledger job each), {batch} per transaction, in {emit_seconds:.2f} s "
          f"= {n / emit_seconds:.0f}/s")
    print(f"deliver: {n} deliveries by 2 webhooks workers: wall {wall:.2f} s = {n / wall:.0f}/s, "
          f"drain {drain:.2f} s = {n / drain:.0f}/s ({attempts} attempts)")
    print(f"event created_at → delivered_at ms: p50 {percentile_ms(latencies, 50):.0f}  "
          f"p95 {percentile_ms(latencies, 95):.0f}  max {latencies[-1] * 1000:.0f}")
    print(f"receiver: {receiver.received} requests ({'=' if receiver.received == n else '≠'} {n} events); "
          f"{load_note()}")


def main() -> None:
    """Parse arguments, reset the bench targets and run the benchmark."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add_target_args(parser)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()
    target = target_from(args)
    rt = runtime(target, **ENV)
    org_id = reset(rt, target)
    run(rt, target, org_id, args.events, args.batch)


if __name__ == "__main__":
    main()
