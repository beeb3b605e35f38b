"""Throughput of no-op jobs: the durable path (ledger + outbox + TriageWorker) against raw RQ.

Usage (from the repository root, PostgreSQL and Redis running; the database must exist and be
migrated, see docs/benchmarks.md):

    .venv/bin/python bench/throughput.py                  # 5000 jobs, 2 worker processes each
    .venv/bin/python bench/throughput.py --jobs 2000 --info --proposed
    BENCH_DATABASE_URL=... BENCH_REDIS_URL=redis://127.0.0.1:6379/9 .venv/bin/python bench/throughput.py

What it does, each time on an emptied ledger and Redis db:
1. durable: submits N `bench.noop` jobs with `app.services.jobs.submit`, --batch per transaction
   (each commit pushes its jobs to RQ through the outbox); prints the submit rate. Then starts
   --processes `triage worker --child --burst maintenance` processes (TRIAGE_LOG_LEVEL=WARNING)
   and times spawn → all N `succeeded` in the ledger.
2. raw RQ, forking `Worker`: enqueue_many N `bench.noop.noop` onto a plain queue (JSON serializer),
   --processes `rq worker --burst`, spawn → all N in the finished registry.
3. raw RQ, `SimpleWorker`: the same with `-w rq.worker.SimpleWorker`.
Optional rows: --info (durable with TRIAGE_LOG_LEVEL=INFO), --proposed (durable with the tunings
of bench/tuning.py; they are in the code since 0f3475b, so this row is now a control).
"wall" includes process start-up (~0.5 s); "drain" is first job start → last job end, which is
what a long-running worker sustains.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common, tuning

PROPOSED = "heartbeats,idle-in-cleanup,pause-cache,ledger-conn,claim-async,rss-every"


@dataclass(frozen=True)
class Row:
    """One measured configuration."""

    name: str
    enqueue_per_s: float
    wall_per_s: float
    drain_per_s: float


def durable(rt: object, target: common.Target, args: argparse.Namespace, *, log_level: str = "WARNING",
            patches: str | None = None, name: str = "durable (TriageWorker)") -> Row:
    """Submit through the ledger, drain with Triage worker processes."""
    from jobs.spec import spec_for

    org = common.reset(rt, target)
    seconds = common.submit_durable(rt, spec_for("bench.noop").func, args.jobs, organisation_id=org,
                                    batch=args.batch)
    queued = common.count_status(rt, "queued")
    if queued != args.jobs:
        raise SystemExit(f"only {queued} of {args.jobs} submitted jobs reached Redis")
    out = subprocess.DEVNULL if log_level == "INFO" else None  # keep the report readable
    if patches is None:
        procs = [common.triage_worker(target, ["maintenance"], burst=True, log_level=log_level, stdout=out)
                 for _ in range(args.processes)]
    else:
        command = tuning.worker_command(patches, ["maintenance"])
        procs = [subprocess.Popen(command, cwd=common.ROOT, env=target.env(log_level=log_level))
                 for _ in range(args.processes)]
    try:
        wall = common.wait_until(lambda: common.count_status(rt, "succeeded") == args.jobs,
                                 timeout=args.timeout, interval=0.1)
        common.wait_all(procs, timeout=30)
    finally:
        common.stop(procs)
    return Row(name, args.jobs / seconds, args.jobs / wall, args.jobs / common.ledger_span(rt))


def raw(rt: object, target: common.Target, args: argparse.Namespace, worker_class: str, name: str) -> Row:
    """enqueue_many onto a plain queue, drain with `rq worker --burst` processes."""
    from rq import Queue

    common.reset(rt, target)
    redis = rt.redis  # type: ignore[attr-defined]
    seconds, ids = common.enqueue_raw(redis, "bench", args.jobs)
    finished = Queue("bench", connection=redis).finished_job_registry
    procs = [common.rq_worker(target, "bench", worker_class=worker_class) for _ in range(args.processes)]
    try:
        wall = common.wait_until(lambda: finished.count == args.jobs, timeout=args.timeout, interval=0.1)
        common.wait_all(procs, timeout=30)
    finally:
        common.stop(procs)
    done, span = common.rq_span(redis, ids)
    if done != args.jobs:
        raise SystemExit(f"{name}: only {done} of {args.jobs} jobs finished")
    return Row(name, args.jobs / seconds, args.jobs / wall, args.jobs / span)


def measure(args: argparse.Namespace) -> list[Row]:
    """Run every configuration --repeat times, interleaved; the median of each figure."""
    target = common.target_from(args)
    rt = common.runtime(target)
    runs: list[Callable[[], Row]] = [lambda: durable(rt, target, args)]
    if args.info:
        runs.append(lambda: durable(rt, target, args, log_level="INFO", name="durable, INFO logging"))
    if args.proposed:
        runs.append(lambda: durable(rt, target, args, patches=PROPOSED, name="durable + proposed tunings"))
    runs.append(lambda: raw(rt, target, args, "rq.worker.Worker", "raw RQ Worker (fork)"))
    runs.append(lambda: raw(rt, target, args, "rq.worker.SimpleWorker", "raw RQ SimpleWorker"))
    results: list[list[Row]] = []
    for i in range(args.repeat):
        # Rotate the order each repeat: whatever runs first after a reset is not always the same.
        order = list(range(len(runs)))[i % len(runs):] + list(range(len(runs)))[:i % len(runs)]
        by_index = {j: runs[j]() for j in order}
        results.append([by_index[j] for j in range(len(runs))])
    common.reset(rt, target)
    rows = []
    for column in zip(*results):
        rows.append(Row(column[0].name, *(statistics.median(getattr(r, f) for r in column)
                                          for f in ("enqueue_per_s", "wall_per_s", "drain_per_s"))))
    return rows


def report(rows: list[Row], args: argparse.Namespace) -> str:
    """The table and the durable/SimpleWorker ratios."""
    simple = next(r for r in rows if r.name == "raw RQ SimpleWorker")
    lines = [(f"{args.jobs} no-op jobs, {args.processes} worker processes, submit batch {args.batch}, "
              f"median of {args.repeat}; {common.load_note()}"),
             common.table([(r.name, r.enqueue_per_s, r.wall_per_s, r.drain_per_s) for r in rows],
                          ["configuration", "enqueue/s", "wall jobs/s", "drain jobs/s"])]
    for row in rows:
        if row.name.startswith("durable"):
            lines.append(f"{row.name} / SimpleWorker: wall {row.wall_per_s / simple.wall_per_s:.2f}, "
                         f"drain {row.drain_per_s / simple.drain_per_s:.2f}")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_target_args(p)
    p.add_argument("--jobs", type=int, default=5000)
    p.add_argument("--batch", type=int, default=100, help="jobs per submit transaction")
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--info", action="store_true", help="also run the durable path with INFO logging")
    p.add_argument("--proposed", action="store_true",
                   help=f"also run the durable path patched: {PROPOSED} (in the code since 0f3475b)")
    p.add_argument("--repeat", type=int, default=1, help="runs of each configuration (median reported)")
    p.add_argument("--timeout", type=float, default=600.0)
    return p


def main() -> None:
    args = parser().parse_args()
    print(report(measure(args), args))


if __name__ == "__main__":
    main()
