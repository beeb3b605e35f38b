"""Where a durable no-op job's time goes: A/B runs of proposed worker tunings, and raw RQ beside them.

Usage (from the repository root; PostgreSQL + Redis as in bench/common.py):

    .venv/bin/python bench/profile_worker.py                       # default variants, 1 and 2 processes
    .venv/bin/python bench/profile_worker.py --jobs 3000 --processes 2 --repeat 3 \
        --variants "baseline;hiredis;no-scheduler;rq-simple"
    .venv/bin/python bench/profile_worker.py --cprofile /tmp/w.prof --variants baseline --processes 1

A variant is a comma-separated list of patches from bench/tuning.py ("baseline" = none), or
"rq-simple" / "rq-worker" for plain `rq worker` processes on a plain queue ("rq-simple,hiredis"
too). "hiredis" puts BENCH_HIREDIS_PATH (default /tmp/hiredis-site, made with
`pip install --no-deps --target /tmp/hiredis-site hiredis`) on the workers' PYTHONPATH, so the
shared venv is left alone. Each run resets the
ledger and the Redis db, submits N jobs (durable variants) or enqueue_many's N (raw RQ), starts
P burst worker processes and reports: wall jobs/s (process start to exit) and drain jobs/s
(first job start to last job end, from the ledger or RQ's job hashes), and CPU ms per job of
the worker processes and of the database's backends (less sensitive to other load on the machine
than rates). Figures are medians over --repeat runs, interleaved so background load hits every
variant alike.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common, tuning

DEFAULT_VARIANTS = "baseline;hiredis;ledger-conn;rq-simple;rq-simple,hiredis"
RAW = {"rq-simple": "rq.worker.SimpleWorker", "rq-worker": "rq.worker.Worker"}


class CpuMeter:
    """CPU seconds (user + system) used by worker processes and by our database's backends.

    Polls psutil every 50 ms and keeps each process's last reading, so processes that exit are
    still counted (up to their last 50 ms). Redis CPU is left out: the server is shared.
    """

    def __init__(self, rt: Any, workers: list[subprocess.Popen[bytes]]) -> None:
        import threading

        self._conn = rt.engine.connect()  # one connection: its own backend is excluded below
        self._pids = [w.pid for w in workers]
        self._last: dict[tuple[str, int], float] = {}
        # Backends that exist already (this process's own pool) count from their current reading.
        self._base = {("postgres", pid): cpu for pid in self._backends() if (cpu := self._cpu(pid)) is not None}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _backends(self) -> list[int]:
        from sqlalchemy import text

        rows = self._conn.execute(text(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )).scalars().all()
        self._conn.rollback()
        return list(rows)

    @staticmethod
    def _cpu(pid: int) -> float | None:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            return None
        return float(times.user + times.system)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            for kind, pids in (("worker", self._pids), ("postgres", self._backends())):
                for pid in pids:
                    cpu = self._cpu(pid)
                    if cpu is not None:
                        self._last[(kind, pid)] = cpu

    def stop(self) -> dict[str, float]:
        """Stop polling; CPU seconds per kind."""
        self._stop.set()
        self._thread.join()
        self._conn.close()
        totals = {"worker": 0.0, "postgres": 0.0}
        for key, seconds in self._last.items():
            totals[key[0]] += seconds - self._base.get(key, 0.0)
        return totals


@dataclass
class Run:
    """One timed run of a variant."""

    wall_per_s: float
    drain_per_s: float
    worker_cpu_ms: float  # per job
    postgres_cpu_ms: float  # per job


def _start(rt: Any, target: common.Target, variant: str, jobs: int, processes: int, log_level: str,
           cprofile: str | None) -> tuple[list[subprocess.Popen[bytes]], list[str]]:
    """Load the jobs and start the workers for one variant; returns (processes, raw RQ job ids)."""
    org = common.reset(rt, target)
    parts = variant.split(",")
    env = target.env(log_level=log_level)
    if "hiredis" in parts:
        env["PYTHONPATH"] = os.environ.get("BENCH_HIREDIS_PATH", "/tmp/hiredis-site") + os.pathsep + env["PYTHONPATH"]
    raw = [p for p in parts if p in RAW]
    if raw:
        _, ids = common.enqueue_raw(rt.redis, "bench", jobs)
        command = [sys.executable, "-m", "rq.cli", "worker", "-u", target.redis_url, "-S", "json",
                   "--logging_level", log_level, "--burst", "-w", RAW[raw[0]], "bench"]
        return [subprocess.Popen(command, cwd=common.ROOT, env=env) for _ in range(processes)], ids
    from jobs.spec import spec_for

    common.submit_durable(rt, spec_for("bench.noop").func, jobs, organisation_id=org, batch=500)
    command = tuning.worker_command("" if variant == "baseline" else variant, ["maintenance"])
    def profile(i: int) -> list[str]:
        return ["--cprofile", f"{cprofile}.{i}"] if cprofile else []

    return [subprocess.Popen([*command, *profile(i)], cwd=common.ROOT, env=env) for i in range(processes)], []


def run_variant(rt: Any, target: common.Target, variant: str, jobs: int, processes: int,
                log_level: str, cprofile: str | None) -> Run:
    """One timed run of a variant on a freshly loaded queue."""
    procs, ids = _start(rt, target, variant, jobs, processes, log_level, cprofile)
    started = time.perf_counter()
    meter = CpuMeter(rt, procs)
    try:
        common.wait_all(procs, timeout=600)
    finally:
        cpu = meter.stop()
    wall = time.perf_counter() - started
    if ids:
        done, span = common.rq_span(rt.redis, ids)
    else:
        done, span = common.count_status(rt, "succeeded"), common.ledger_span(rt)
    if done != jobs:
        raise SystemExit(f"{variant}: only {done} of {jobs} jobs finished")
    return Run(jobs / wall, jobs / span if span else 0.0, 1000 * cpu["worker"] / jobs, 1000 * cpu["postgres"] / jobs)


class CommandCounter:
    """Counts the Redis commands and round trips sent to our db while it runs (MONITOR; slows Redis)."""

    def __init__(self, redis_url: str) -> None:
        import threading

        from redis import Redis

        # Named like this process's other connections, so `reset` does not wait for it to leave.
        self._redis = Redis.from_url(redis_url, client_name=common.CLIENT_NAME, socket_timeout=None)
        self._db = self._redis.connection_pool.connection_kwargs.get("db", 0)
        self.commands = self.round_trips = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        in_multi = False
        with self._redis.monitor() as monitor:  # type: ignore[no-untyped-call]
            for event in monitor.listen():
                if self._stop.is_set():
                    return
                if event.get("db") != self._db:
                    continue
                name = event["command"].split(" ", 1)[0].upper()
                self.commands += 1
                if name == "MULTI":
                    in_multi = True
                elif name == "EXEC":
                    in_multi = False
                    self.round_trips += 1
                elif not in_multi:
                    self.round_trips += 1

    def __enter__(self) -> Self:
        self._thread.start()
        time.sleep(0.3)
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.3)
        self._stop.set()
        self._redis.ping()  # wakes the monitor loop
        self._thread.join(2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_target_args(parser)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--processes", default="1,2", help="comma-separated process counts")
    parser.add_argument("--variants", default=DEFAULT_VARIANTS, help="';'-separated variants")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--log-level", default="WARNING")
    parser.add_argument("--cprofile", default=None, help="dump each worker's cProfile stats to FILE.<n>")
    parser.add_argument("--count-commands", action="store_true",
                        help="count Redis commands per job with MONITOR (slow: use few jobs, 1 repeat)")
    args = parser.parse_args()

    target = common.target_from(args)
    rt = common.runtime(target)
    variants = [v.strip() for v in args.variants.split(";") if v.strip()]
    rows = []
    for processes in (int(p) for p in args.processes.split(",")):
        results: dict[str, list[Run]] = {v: [] for v in variants}
        for _ in range(args.repeat):
            for variant in variants:
                if not args.count_commands:
                    results[variant].append(run_variant(rt, target, variant, args.jobs, processes,
                                                        args.log_level, args.cprofile))
                    continue
                with CommandCounter(target.redis_url) as counter:
                    results[variant].append(run_variant(rt, target, variant, args.jobs, processes,
                                                        args.log_level, args.cprofile))
                print(f"{variant}: {counter.commands / args.jobs:.1f} Redis commands and "
                      f"{counter.round_trips / args.jobs:.1f} round trips per job (start-up included)")
        for variant in variants:
            runs = results[variant]
            walls = [r.wall_per_s for r in runs]
            rows.append((variant, processes, statistics.median(walls), min(walls), max(walls),
                         statistics.median(r.drain_per_s for r in runs),
                         f"{statistics.median(r.worker_cpu_ms for r in runs):.2f}",
                         f"{statistics.median(r.postgres_cpu_ms for r in runs):.2f}"))
    print(f"{args.jobs} no-op jobs, median of {args.repeat}, log level {args.log_level}, {common.load_note()}")
    print(common.table(rows, ["variant", "procs", "wall/s", "min", "max", "drain/s", "worker CPU ms/job",
                              "PG CPU ms/job"]))


if __name__ == "__main__":
    main()
