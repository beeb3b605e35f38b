"""Latency of a job-creating POST at a steady rate, against gunicorn with 2 workers.

    .venv/bin/python bench/api_latency.py [--rate 200 [250 ...]] [--seconds 15] [--connections 32]

Open loop at a constant rate: request i is due at start + i/rate and its latency is measured from
that due time, so a slow server cannot hide queueing delay by slowing the sender (coordinated
omission is counted). The load generator is one asyncio process writing hand-made HTTP/1.1
requests on `--connections` keep-alive connections (a connection the server closes is reopened,
and that cost is part of the latency), so it takes little of the CPU the server shares with it.
Every request is `POST /v1/probes` with a fresh Idempotency-Key: the full accept path (auth, rate
limit, idempotency lock, ledger insert, idempotency record, synchronous commit, enqueue after
commit). Per rate it prints p50/p95/p99/max, errors, and CPU milliseconds per request of the
gunicorn workers, of this database's PostgreSQL backends and of the load generator, with the
machine's busy share and load average: what the 2 cores were spent on.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import http.client
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import text

from bench.common import (
    ROOT,
    add_target_args,
    load_note,
    percentile_ms,
    reset,
    runtime,
    target_from,
    wait_until,
)

#: A bench-only Fernet key: the app refuses to boot without one; nothing is encrypted here.
BENCH_KEY = base64.urlsafe_b64encode(b"triage-bench-only-key-not-secret").decode()
TICKS = os.sysconf("SC_CLK_TCK")


def _start_gunicorn(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    """gunicorn as deployed (gunicorn.conf.py in the repository root), 2 workers, on `port`."""
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


@dataclass
class Results:
    """What one rate's run measured."""

    latencies: list[float] = field(default_factory=list)
    due: list[float] = field(default_factory=list)  # when each request was due, in latencies' order
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, what: str) -> None:
        """Count a failed request by status or exception name."""
        self.errors[what] = self.errors.get(what, 0) + 1


class Request:
    """The bytes of one probe POST: fixed headers, a unique Idempotency-Key per request."""

    def __init__(self, port: int, token: str) -> None:
        body = json.dumps({"queue": "maintenance"}).encode()
        self._head = (f"POST /v1/probes HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
                      f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                      f"Idempotency-Key: {secrets.token_hex(8)}-").encode()
        self._body = b"\r\n\r\n" + body
        self._count = 0

    def next(self) -> bytes:
        """The next request's bytes."""
        self._count += 1
        return self._head + str(self._count).encode() + self._body


async def _response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one response; (status, whether the server keeps the connection open)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers.get("connection", "").lower() != "close"


class Connection:
    """One client connection, reopened when the server closes it."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def send(self, data: bytes) -> int:
        """Send one request and read its response; retry once if a kept-alive connection was closed."""
        for attempt in (1, 2):
            fresh = self._streams is None
            if self._streams is None:
                self._streams = await asyncio.open_connection("127.0.0.1", self._port)
            reader, writer = self._streams
            try:
                writer.write(data)
                status, keep = await _response(reader)
            except (ConnectionError, asyncio.IncompleteReadError):
                self.close()
                if fresh or attempt == 2:
                    raise
                continue  # the server closed an idle keep-alive connection before reading this request
            if not keep:
                self.close()
            return status
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Drop the connection."""
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


async def _sender(conn: Connection, request: Request, due: asyncio.Queue[float | None], results: Results) -> None:
    while (at := await due.get()) is not None:
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        try:
            status = await conn.send(request.next())
        except (OSError, asyncio.IncompleteReadError) as exc:
            results.error(type(exc).__name__)
        else:
            if status != 202:
                results.error(str(status))
        results.latencies.append(time.perf_counter() - at)
        results.due.append(at)


def _loop_factory() -> Any:
    """uvloop when installed (the generator then takes about half the CPU), else asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run_rate(port: int, token: str, rate: float, seconds: float, connections: int) -> Results:
    """Send rate × seconds probes, each due at its scheduled time; collect latencies and errors.

    The generator's garbage collector is off meanwhile: a full collection of this process's heap
    (the app's modules are imported here too) would stall sending and reading for tens of ms and
    show up as server latency.
    """
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            return runner.run(_run(port, token, rate, seconds, connections))
    finally:
        gc.enable()


async def _run(port: int, token: str, rate: float, seconds: float, connections: int) -> Results:
    request, results = Request(port, token), Results()
    due: asyncio.Queue[float | None] = asyncio.Queue()
    start = time.perf_counter() + 0.2
    for i in range(int(rate * seconds)):
        due.put_nowait(start + i / rate)
    for _ in range(connections):
        due.put_nowait(None)
    pool = [Connection(port) for _ in range(connections)]
    await asyncio.gather(*(_sender(conn, request, due, results) for conn in pool))
    for conn in pool:
        conn.close()
    return results


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def _children(parent: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == parent:
                found.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def _machine_jiffies() -> tuple[int, int, int]:
    """(busy, stolen, total) jiffies of all CPUs since boot; stolen: taken by the hypervisor."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle, steal = values[3] + values[4], values[7]
    return sum(values) - idle - steal, steal, sum(values)


class CpuMeter:
    """CPU seconds spent by the gunicorn workers, this database's backends and this process."""

    def __init__(self, rt: Any, server_pid: int) -> None:
        self._rt, self._server = rt, server_pid
        self._redis = int(rt.redis.info("server")["process_id"])

    def _backends(self) -> list[int]:
        with self._rt.engine.connect() as conn:
            return list(conn.execute(text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )).scalars())

    def sample(self) -> dict[str, Any]:
        """CPU seconds so far per process of each group, and the machine's busy/total jiffies."""
        busy, steal, total = _machine_jiffies()
        return {"gunicorn": {p: _cpu_seconds(p) for p in [self._server, *_children(self._server)]},
                "postgres": {p: _cpu_seconds(p) for p in self._backends()},
                "redis": {self._redis: _cpu_seconds(self._redis)},
                "generator": {0: time.process_time()}, "busy": busy, "steal": steal, "total": total}


def _windows(results: Results, width: float = 5.0) -> str:
    """p95 of each `width`-second slice of due times: shows whether a backlog built up and when."""
    start = min(results.due, default=0.0)
    slices: dict[int, list[float]] = {}
    for at, latency in zip(results.due, results.latencies, strict=True):
        slices.setdefault(int((at - start) // width), []).append(latency)
    return " ".join(f"{percentile_ms(sorted(v), 95):.0f}" for _, v in sorted(slices.items()))


def report(rate: float, seconds: float, connections: int, results: Results, before: dict[str, Any],
           after: dict[str, Any]) -> None:
    """Print one rate's figures."""
    ordered = sorted(results.latencies)
    n = len(ordered)

    def pct(p: float) -> float:
        return percentile_ms(ordered, p)

    def per_request(group: str) -> float:
        spent = sum(cpu - before[group].get(pid, 0.0) for pid, cpu in after[group].items())
        return spent * 1000 / max(n, 1)

    jiffies = max(after["total"] - before["total"], 1)
    busy = (after["busy"] - before["busy"]) / jiffies
    steal = (after["steal"] - before["steal"]) / jiffies
    ours = sum(per_request(group) for group in ("gunicorn", "postgres", "redis", "generator")) * n / 1000
    others = max(0.0, busy - ours * TICKS / jiffies)  # other processes, PostgreSQL's own, the kernel
    errors = sum(results.errors.values())
    print(f"POST /v1/probes at {rate:.0f}/s for {seconds:.0f}s, {connections} connections: {n} requests, "
          f"{errors} errors{' ' + str(results.errors) if errors else ''}")
    print(f"  latency ms: p50 {pct(50):.1f}  p95 {pct(95):.1f}  p99 {pct(99):.1f}  max {ordered[-1] * 1000:.1f}")
    print(f"  p95 ms per 5 s: {_windows(results)}")
    print(f"  CPU ms per request: gunicorn {per_request('gunicorn'):.2f}  postgres backends "
          f"{per_request('postgres'):.2f}  redis {per_request('redis'):.2f}  load generator "
          f"{per_request('generator'):.2f};  machine busy {busy:.0%}, of which anything else {others:.0%}; "
          f"stolen by the hypervisor {steal:.0%}; {load_note()}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_target_args(parser)
    parser.add_argument("--rate", type=float, nargs="+", default=[200.0], help="requests per second (one run each)")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--warmup-rate", type=float, default=100.0)
    parser.add_argument("--warmup-seconds", type=float, default=5.0)
    args = parser.parse_args()
    target = target_from(args)
    rt = runtime(target)
    org_id = reset(rt, target)
    from app.services.clients import create_client

    with rt.sessions.begin() as session:
        _, token = create_client(session, organisation_id=org_id, name="bench", scopes=["jobs:write"])
    env = target.env(TRIAGE_RATE_LIMIT="1000000 per minute", TRIAGE_SECRET_KEY=secrets.token_urlsafe(48),
                     TRIAGE_ENCRYPTION_KEYS=BENCH_KEY)
    server = _start_gunicorn(env, args.port)
    try:
        wait_until(lambda: _ready(args.port), timeout=30)
        meter = CpuMeter(rt, server.pid)
        # Warm-up, not reported: pools filled, first imports, code paths and SQL caches primed.
        run_rate(args.port, token, args.warmup_rate, args.warmup_seconds, args.connections)
        for rate in args.rate:
            time.sleep(1)
            before = meter.sample()
            results = run_rate(args.port, token, rate, args.seconds, args.connections)
            report(rate, args.seconds, args.connections, results, before, meter.sample())
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
