"""Latency of a job-creating POST at a steady rate, against gunicorn with 2 workers.

    .venv/bin/python bench/api_latency.py [--rate 200] [--seconds 15] [--connections 16]

Open-loop: request i is due at start + i/rate and its latency is measured from that due time, so
a slow server cannot hide queueing delay by slowing the sender (no coordinated omission).
Every request is `POST /v1/probes` with an Idempotency-Key: the full accept path (auth, rate
limit, idempotency lock, ledger insert, commit, enqueue after commit). Prints p50/p95/p99/max.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import queue
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ROOT, add_target_args, percentile_ms, reset, runtime, target_from, wait_until


def _start_gunicorn(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "2",
               "--log-level", "warning", "app.wsgi:app"]
    return subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True)


def _ready(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        conn.request("GET", "/health/live")
        return conn.getresponse().status == 200
    except OSError:
        return False


def _sender(port: int, token: str, due: queue.Queue[float | None], latencies: list[float], errors: list[int]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    body = json.dumps({"queue": "maintenance"})
    while (at := due.get()) is not None:
        delay = at - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json",
                   "Idempotency-Key": uuid.uuid4().hex}
        conn.request("POST", "/v1/probes", body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        latencies.append(time.perf_counter() - at)
        if response.status != 202:
            errors.append(response.status)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_target_args(parser)
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    target = target_from(args)
    rt = runtime(target)
    org_id = reset(rt, target)
    from app.services.clients import create_client

    with rt.sessions.begin() as session:
        _, token = create_client(session, organisation_id=org_id, name="bench", scopes=["jobs:write"])
    env = target.env(TRIAGE_RATE_LIMIT="1000000 per minute", TRIAGE_SECRET_KEY=secrets.token_urlsafe(48))
    server = _start_gunicorn(env, args.port)
    try:
        wait_until(lambda: _ready(args.port), timeout=30)
        due: queue.Queue[float | None] = queue.Queue()
        latencies: list[float] = []
        errors: list[int] = []
        threads = [threading.Thread(target=_sender, args=(args.port, token, due, latencies, errors))
                   for _ in range(args.connections)]
        for thread in threads:
            thread.start()
        total = int(args.rate * args.seconds)
        start = time.perf_counter() + 0.2
        for i in range(total):
            due.put(start + i / args.rate)
        for _ in threads:
            due.put(None)
        for thread in threads:
            thread.join()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    ordered = sorted(latencies)


    def pct(p: float) -> float:
        return percentile_ms(ordered, p)

    print(f"POST /v1/probes at {args.rate:.0f}/s for {args.seconds:.0f}s, gunicorn 2 workers, "
          f"{args.connections} connections: {len(ordered)} requests, {len(errors)} errors")
    print(f"latency ms: p50 {pct(50):.1f}  p95 {pct(95):.1f}  p99 {pct(99):.1f}  max {ordered[-1] * 1000:.1f}")


if __name__ == "__main__":
    main()
