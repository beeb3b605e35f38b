"""Run every benchmark with modest defaults and print their figures one after another.

Usage (from the repository root; PostgreSQL and Redis running):

    createdb -h 127.0.0.1 -U postgres triage_bench
    DATABASE_URL=postgresql://postgres@127.0.0.1/triage_bench REDIS_URL=redis://127.0.0.1:6379/9 \\
        .venv/bin/triage db upgrade
    .venv/bin/python bench/run_all.py                 # about 5 minutes on 2 cores
    .venv/bin/python bench/run_all.py --quick         # about 2 minutes: fewer jobs
    BENCH_DATABASE_URL=... BENCH_REDIS_URL=... .venv/bin/python bench/run_all.py

Runs, in order: throughput.py (durable vs raw RQ), drain.py (SIGTERM and SIGKILL timings),
memory.py (RSS over many jobs), api_latency.py (a job-creating POST at 200 req/s),
administrations.py (decisions per second; latency under a low-priority flood), webhooks.py
(deliveries per second to a local receiver), hl7.py (HL7 v2 over MLLP to stored FHIR, messages
per second and ACK latency), reports.py (seconds and memory to render a 5,000-row MAR) and audit.py
(a PHI read's latency with and without its audit record; audit rows written per second).
profile_worker.py (A/B of worker tunings) is run by hand. Each benchmark runs as its own process with the same targets;
it empties the ledger and the Redis db first, waiting until no other client uses them.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import common


def plan(quick: bool) -> list[tuple[str, list[str]]]:
    """(title, arguments) of each benchmark run."""
    jobs = "1000" if quick else "3000"
    return [
        # The tunings of bench/tuning.py are applied in the code now: no --proposed row, no A/B step
        # (their patches target the code before them; see docs/benchmarks.md).
        ("throughput", ["bench/throughput.py", "--jobs", jobs]),
        ("drain and crash recovery", ["bench/drain.py"]),
        ("memory", ["bench/memory.py", "--jobs", "5000" if quick else "20000",
                    "--window", "500" if quick else "1000"]),
        ("API latency", ["bench/api_latency.py", "--seconds", "5" if quick else "15"]),
        ("administrations", ["bench/administrations.py", "--records", "500" if quick else "2000"]),
        ("webhooks", ["bench/webhooks.py", "--events", "500" if quick else "2000"]),
        ("HL7 v2 intake", ["bench/hl7.py", "--messages", "1000" if quick else "5000"]),
        ("PDF reports", ["bench/reports.py", "--rows", "1000" if quick else "5000"]),
        ("the cost of auditing", ["bench/audit.py", "--requests", "200" if quick else "500",
                                  "--seconds", "2" if quick else "5"]),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_target_args(parser)
    parser.add_argument("--quick", action="store_true", help="fewer jobs and repeats")
    args = parser.parse_args()
    targets = ["--database-url", args.database_url, "--redis-url", args.redis_url]
    failed = []
    for title, command in plan(args.quick):
        print(f"\n== {title}: {' '.join(command)}", flush=True)
        started = time.perf_counter()
        code = subprocess.call([sys.executable, *command, *targets], cwd=ROOT)
        print(f"({title}: {time.perf_counter() - started:.0f} s, exit {code})", flush=True)
        if code:
            failed.append(title)
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
