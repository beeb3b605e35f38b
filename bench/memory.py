"""Worker memory while draining many no-op jobs: peak RSS and growth per worker process.

Usage (from the repository root; database and Redis as in bench/common.py):

    .venv/bin/python bench/memory.py                       # 20,000 jobs, 2 worker processes
    .venv/bin/python bench/memory.py --jobs 5000 --window 500 --patches heartbeats,ledger-engine

Submits N `bench.noop` jobs through the ledger, then starts --processes burst Triage workers
(`--patches` from bench/tuning.py, if given) and samples every worker's RSS (psutil) together
with the ledger's count of succeeded jobs every --interval s. Prints, per process: RSS at start
of work, mean RSS over the first --window jobs, mean RSS over the last --window jobs, growth
between the two, and peak RSS. TRIAGE_WORKER_MAX_MEMORY_MB is raised so no worker recycles.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common, tuning

MIB = 2**20


def sample(rt: object, procs: list[subprocess.Popen[bytes]], jobs: int, interval: float,
           timeout: float) -> list[tuple[int, list[float]]]:
    """(jobs succeeded, RSS MiB per process) every `interval` s until all jobs succeeded."""
    handles = [psutil.Process(p.pid) for p in procs]
    samples: list[tuple[int, list[float]]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rss = []
        for handle in handles:
            try:
                rss.append(handle.memory_info().rss / MIB)
            except psutil.NoSuchProcess:
                rss.append(float("nan"))
        done = common.count_status(rt, "succeeded")
        samples.append((done, rss))
        if done >= jobs:
            return samples
        time.sleep(interval)
    raise TimeoutError(f"only {samples[-1][0]} of {jobs} jobs succeeded within {timeout}s")


def window_mean(samples: list[tuple[int, list[float]]], index: int, low: int, high: int) -> float:
    """Mean RSS of process `index` over the samples taken while low <= done <= high."""
    values = [rss[index] for done, rss in samples if low <= done <= high and rss[index] == rss[index]]
    return statistics.mean(values) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_target_args(parser)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--window", type=int, default=1000, help="jobs at the start and at the end compared")
    parser.add_argument("--interval", type=float, default=0.2)
    parser.add_argument("--patches", default=None, help="bench/tuning.py patches for the workers")
    parser.add_argument("--timeout", type=float, default=1200.0)
    args = parser.parse_args()
    target = common.target_from(args)
    rt = common.runtime(target)
    from jobs.spec import spec_for

    org = common.reset(rt, target)
    submit_s = common.submit_durable(rt, spec_for("bench.noop").func, args.jobs, organisation_id=org, batch=500)
    env = target.env(TRIAGE_WORKER_MAX_MEMORY_MB="0")
    if args.patches is None:
        procs = [common.triage_worker(target, ["maintenance"], burst=True, extra_env={"TRIAGE_WORKER_MAX_MEMORY_MB": "0"})
                 for _ in range(args.processes)]
    else:
        procs = [subprocess.Popen(tuning.worker_command(args.patches, ["maintenance"]), cwd=common.ROOT, env=env)
                 for _ in range(args.processes)]
    started = time.perf_counter()
    try:
        samples = sample(rt, procs, args.jobs, args.interval, args.timeout)
        common.wait_all(procs, timeout=30)
    finally:
        common.stop(procs)
    seconds = time.perf_counter() - started
    common.reset(rt, target)

    first = (1, args.window)  # from the first finished job: start-up (imports) is not growth
    last = (args.jobs - args.window, args.jobs)
    rows = []
    for i, proc in enumerate(procs):
        start_rss = next((rss[i] for done, rss in samples if done > 0), float("nan"))
        early, late = window_mean(samples, i, *first), window_mean(samples, i, *last)
        peak = max(rss[i] for _, rss in samples if rss[i] == rss[i])
        figures = (start_rss, early, late, late - early, peak)
        rows.append((f"worker {i + 1} (pid {proc.pid})", *(f"{x:.1f}" for x in figures)))
    print(f"{args.jobs:,} no-op jobs, {args.processes} processes{' patched ' + args.patches if args.patches else ''}; "
          f"submitted at {args.jobs / submit_s:,.0f}/s, drained at {args.jobs / seconds:,.0f}/s; "
          f"{len(samples)} samples; {common.load_note()}")
    print(common.table(rows, ["process", "RSS at start MiB", f"first {args.window} MiB", f"last {args.window} MiB",
                              "growth MiB", "peak MiB"]))


if __name__ == "__main__":
    main()
