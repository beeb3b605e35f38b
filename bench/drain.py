"""Shutdown and crash recovery: SIGTERM → exit of a Triage worker, and SIGKILL → job running again.

Usage (from the repository root; database and Redis as in bench/common.py):

    .venv/bin/python bench/drain.py                     # drain deadline 3 s, lease 6 s, reconcile 2 s
    .venv/bin/python bench/drain.py --drain-seconds 5 --lease-seconds 4 --repeat 3

Every process gets TRIAGE_JOB_MODULES=bench.kinds (the `bench.sleep` kind, queue "reports") and
TRIAGE_DRAIN_SECONDS / TRIAGE_LEASE_SECONDS / TRIAGE_RECONCILE_INTERVAL from the flags.
Cases, one fresh `triage worker --child reports` each:
- idle:  SIGTERM to a worker with nothing to do.
- short: SIGTERM --signal-after s into a job of --short-job s (it finishes within the deadline):
         expect exit ≈ the job's remaining time, job `succeeded`.
- long:  the same with a --long-job s job (longer than the deadline): expect exit ≈ drain
         deadline, the job put back (`queued`, attempt not spent, at the front of its queue).
- crash: two workers and `triage scheduler` (the reconciler) run; the worker holding a
         --short-job s job gets SIGKILL; time until the ledger shows it `running` on the other
         worker, then `succeeded`.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common


def _env(args: argparse.Namespace) -> dict[str, str]:
    return {
        "TRIAGE_DRAIN_SECONDS": str(args.drain_seconds),
        "TRIAGE_LEASE_SECONDS": str(args.lease_seconds),
        "TRIAGE_RECONCILE_INTERVAL": str(args.reconcile_interval),
    }


def _worker(target: common.Target, args: argparse.Namespace) -> subprocess.Popen[bytes]:
    return common.triage_worker(target, ["reports"], extra_env=_env(args))


def _wait_registered(rt: Any, count: int) -> None:
    """Wait until `count` workers hold a lease (they are past start-up and dequeueing)."""
    common.wait_until(lambda: len(rt.redis.keys("triage:alive:*")) >= count, timeout=30)
    time.sleep(0.3)


def _submit_sleep(rt: Any, org: int, seconds: float) -> int:
    from app.services.jobs import submit
    from jobs.spec import spec_for

    with rt.sessions.begin() as session:
        job = submit(session, spec_for("bench.sleep").func, seconds, organisation_id=org)
    return int(job.id)


def _sigterm_exit(proc: subprocess.Popen[bytes]) -> float:
    """Seconds from SIGTERM to the process's exit."""
    sent = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    proc.wait(120)
    return time.perf_counter() - sent


def idle_case(rt: Any, target: common.Target, args: argparse.Namespace) -> dict[str, Any]:
    """SIGTERM to an idle worker."""
    common.reset(rt, target)
    proc = _worker(target, args)
    try:
        _wait_registered(rt, 1)
        return {"exit_s": _sigterm_exit(proc), "code": proc.returncode}
    finally:
        common.stop([proc])


def job_case(rt: Any, target: common.Target, args: argparse.Namespace, job_seconds: float) -> dict[str, Any]:
    """SIGTERM while a job of `job_seconds` runs; how long until exit, and what the ledger says."""
    org = common.reset(rt, target)
    proc = _worker(target, args)
    try:
        _wait_registered(rt, 1)
        job_id = _submit_sleep(rt, org, job_seconds)
        common.wait_until(lambda: common.job_row(rt, job_id).status == "running", timeout=30, interval=0.01)
        time.sleep(args.signal_after)
        exit_s = _sigterm_exit(proc)
        row = common.job_row(rt, job_id)
        head = rt.redis.lindex("rq:queue:reports", 0)
        return {"exit_s": exit_s, "code": proc.returncode, "remaining_s": max(job_seconds - args.signal_after, 0),
                "status": row.status, "attempts": row.attempts,
                "queue_head": head.decode() == str(job_id) if head else False}
    finally:
        common.stop([proc])


def crash_case(rt: Any, target: common.Target, args: argparse.Namespace) -> dict[str, Any]:
    """SIGKILL the worker holding a job while another worker and the scheduler run."""
    org = common.reset(rt, target)
    procs = [_worker(target, args), _worker(target, args),
             common.triage_scheduler(target, extra_env=_env(args))]
    by_pid = {p.pid: p for p in procs}
    orphans: list[psutil.Process] = []
    try:
        _wait_registered(rt, 2)
        job_id = _submit_sleep(rt, org, args.short_job)
        common.wait_until(lambda: common.job_row(rt, job_id).status == "running", timeout=30, interval=0.01)
        holder = common.job_row(rt, job_id).worker
        pid = int(rt.redis.get(f"triage:alive:{holder}"))
        time.sleep(args.signal_after)
        # A non-burst worker may have forked RQ's scheduler process: check that none outlives it.
        orphans = psutil.Process(pid).children(recursive=True)
        by_pid[pid].send_signal(signal.SIGKILL)
        by_pid[pid].wait(10)

        def running_elsewhere() -> bool:
            row = common.job_row(rt, job_id)
            return row.status in ("running", "succeeded") and row.worker != holder

        rerun = common.wait_until(running_elsewhere, timeout=120, interval=0.05)
        done = common.wait_until(lambda: common.job_row(rt, job_id).status == "succeeded", timeout=120,
                                 interval=0.05)
        row = common.job_row(rt, job_id)
        left = [o for o in orphans if o.is_running() and o.status() != psutil.STATUS_ZOMBIE]
        return {"running_again_s": rerun, "succeeded_s": rerun + done, "attempts": row.attempts,
                "status": row.status, "orphans": len(left)}
    finally:
        common.stop(procs)
        for orphan in orphans:
            if orphan.is_running():
                orphan.kill()


def _median(results: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_target_args(parser)
    parser.add_argument("--drain-seconds", type=float, default=3.0)
    parser.add_argument("--lease-seconds", type=float, default=6.0)
    parser.add_argument("--reconcile-interval", type=float, default=2.0)
    parser.add_argument("--short-job", type=float, default=1.5, help="seconds; must be < drain deadline")
    parser.add_argument("--long-job", type=float, default=30.0, help="seconds; must be > drain deadline")
    parser.add_argument("--signal-after", type=float, default=0.5, help="seconds into the job")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    target = common.target_from(args)
    rt = common.runtime(target)

    idle = [idle_case(rt, target, args) for _ in range(args.repeat)]
    short = [job_case(rt, target, args, args.short_job) for _ in range(args.repeat)]
    long = [job_case(rt, target, args, args.long_job) for _ in range(args.repeat)]
    crash = [crash_case(rt, target, args) for _ in range(args.repeat)]
    common.reset(rt, target)

    print(f"drain deadline {args.drain_seconds:g} s, lease {args.lease_seconds:g} s, reconcile every "
          f"{args.reconcile_interval:g} s; median of {args.repeat}; {common.load_note()}")
    rows = [
        ("SIGTERM, idle worker", "exit", _median(idle, "exit_s"), f"exit code {idle[-1]['code']}"),
        (f"SIGTERM, {args.short_job:g} s job ({args.short_job - args.signal_after:g} s left)", "exit",
         _median(short, "exit_s"), f"job {short[-1]['status']}, attempts {short[-1]['attempts']}"),
        (f"SIGTERM, {args.long_job:g} s job", "exit", _median(long, "exit_s"),
         (f"job {long[-1]['status']}, attempts {long[-1]['attempts']}, "
          f"{'at' if long[-1]['queue_head'] else 'NOT at'} queue head")),
        ("SIGKILL holder, 2nd worker + scheduler", "running again", _median(crash, "running_again_s"), ""),
        ("", "succeeded", _median(crash, "succeeded_s"),
         (f"job {crash[-1]['status']}, attempts {crash[-1]['attempts']}, "
          f"{crash[-1]['orphans']} child process(es) of the killed worker left running")),
    ]
    print(common.table([(a, b, f"{c:.2f}", d) for a, b, c, d in rows], ["case", "until", "seconds", "outcome"]))


if __name__ == "__main__":
    main()
